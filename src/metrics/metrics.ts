/**
 * Prometheus metrics for one gateway instance, in their own registry (never the global one, so
 * tests and several instances in one process stay apart). Label sets are closed: resource ids come
 * from policy and codes from the deny table; never a raw path or a subject id.
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client'
import { LeanHistogram } from './lean-histogram.js'

export interface GatewayMetrics {
  readonly registry: Registry
  readonly requests: Counter<'resource' | 'decision' | 'code'>
  /**
   * Counts one data-plane request. Per-request cost is one Map update: prom-client hashes a label
   * object on every `inc`, so counts are kept here and applied to `requests` at scrape time.
   */
  countRequest(resource: string, decision: 'allow' | 'deny', code: string): void
  /** Per request: resolve a child once (`child('allow')`), then observe seconds. */
  readonly decisionSeconds: LeanHistogram<'decision'>
  readonly upstreamSeconds: LeanHistogram<'resource'>
  readonly storeErrors: Counter<'operation'>
  readonly websockets: Gauge<'resource'>
  readonly grantsIssued: Counter
  readonly grantsRevoked: Counter
  /** Grants whose `grant.expired` this replica wrote (each expired grant is counted by one replica). */
  readonly grantsExpired: Counter
  /** Policy reloads by result: `loaded`, `unchanged`, `rejected`. */
  readonly policyReloads: Counter<'result'>
  /** Audit lines a sink dropped past its bound (also reported in `audit.dropped` events). */
  readonly auditDropped: Counter<'sink'>
}

export interface MetricsOptions {
  /** Counts active grants for the `jitgate_active_grants` gauge, read at scrape time. */
  readonly activeGrants: () => Promise<number>
  readonly defaultMetrics?: boolean
}

export function createMetrics(opts: MetricsOptions): GatewayMetrics {
  const registry = new Registry()
  if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: registry, prefix: 'jitgate_' })
  const registers = [registry]
  const pendingRequests = new Map<string, { readonly labels: { resource: string; decision: string; code: string }; n: number }>()
  const metrics: GatewayMetrics = {
    registry,
    requests: new Counter({
      name: 'jitgate_requests_total',
      help: 'Data-plane requests by resource, decision (allow/deny) and code (deny code, or "ok").',
      labelNames: ['resource', 'decision', 'code'] as const,
      registers,
      collect() {
        for (const entry of pendingRequests.values()) {
          if (entry.n === 0) continue
          this.inc(entry.labels, entry.n)
          entry.n = 0
        }
      },
    }),
    countRequest(resource, decision, code) {
      const key = `${resource}\u0000${decision}\u0000${code}`
      const entry = pendingRequests.get(key)
      if (entry) entry.n++
      else pendingRequests.set(key, { labels: { resource, decision, code }, n: 1 })
    },
    decisionSeconds: new LeanHistogram({
      name: 'jitgate_decision_duration_seconds',
      help: 'Time to decide a request (route, token, grant, scope), before forwarding.',
      labelName: 'decision',
      buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    upstreamSeconds: new LeanHistogram({
      name: 'jitgate_upstream_duration_seconds',
      help: 'Time until the upstream answered with response headers.',
      labelName: 'resource',
      buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }),
    storeErrors: new Counter({
      name: 'jitgate_grant_store_errors_total',
      help: 'Grant store operations that failed or timed out (each one failed closed).',
      labelNames: ['operation'] as const,
      registers,
    }),
    websockets: new Gauge({
      name: 'jitgate_websocket_connections',
      help: 'Open WebSocket connections through the gateway.',
      labelNames: ['resource'] as const,
      registers,
    }),
    grantsIssued: new Counter({ name: 'jitgate_grants_issued_total', help: 'Grants issued by this replica.', registers }),
    grantsRevoked: new Counter({ name: 'jitgate_grants_revoked_total', help: 'Grants revoked through this replica.', registers }),
    grantsExpired: new Counter({
      name: 'jitgate_grants_expired_total',
      help: 'Grants that ran out, counted by the replica that wrote their grant.expired event (summed over replicas: each grant once).',
      registers,
    }),
    policyReloads: new Counter({
      name: 'jitgate_policy_reloads_total',
      help: 'Policy reloads by result: loaded (a new version in force), unchanged, rejected (invalid; the previous version stays).',
      labelNames: ['result'] as const,
      registers,
    }),
    auditDropped: new Counter({
      name: 'jitgate_audit_dropped_total',
      help: 'Audit lines a sink dropped once its bound (memory, spool) was reached or its destination refused them, by sink name.',
      labelNames: ['sink'] as const,
      registers,
    }),
  }
  new Gauge({
    name: 'jitgate_active_grants',
    help: 'Active (unexpired, unrevoked) grants in the grant store; -1 while the store is unreachable.',
    registers,
    async collect() {
      try {
        this.set(await opts.activeGrants())
      } catch {
        this.set(-1)
      }
    },
  })
  return metrics
}

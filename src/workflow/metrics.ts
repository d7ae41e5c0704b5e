/**
 * Prometheus metrics of the access-request workflow, registered in the gateway's own registry
 * (metrics/metrics.ts). Labels are closed sets: outcomes and notification results, never an id.
 */
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import type { AccessRequest } from './request-store.js'

/** How a request ended (or, for `created`, began). */
export type RequestOutcome = 'created' | 'approved' | 'auto_approved' | 'break_glass' | 'denied' | 'expired' | 'cancelled'

export interface WorkflowMetrics {
  readonly outcomes: Counter<'outcome'>
  readonly approvalSeconds: Histogram
  readonly notifications: Counter<'outcome'>
}

export interface WorkflowMetricsOptions {
  /** The open requests (pending, or break-glass under review), read at scrape time. */
  readonly open: () => Promise<readonly AccessRequest[]>
}

export function createWorkflowMetrics(registry: Registry, opts: WorkflowMetricsOptions): WorkflowMetrics {
  const registers = [registry]
  const openNow = (): Promise<readonly AccessRequest[] | undefined> => opts.open().catch(() => undefined)
  new Gauge({
    name: 'jitgate_access_requests_pending',
    help: 'Access requests waiting for a decision; -1 while the request store is unreachable.',
    registers,
    async collect() {
      const list = await openNow()
      this.set(list === undefined ? -1 : list.filter((r) => r.status === 'pending').length)
    },
  })
  new Gauge({
    name: 'jitgate_breakglass_unreviewed',
    help: 'Break-glass uses whose after-the-fact review is still open; -1 while the request store is unreachable.',
    registers,
    async collect() {
      const list = await openNow()
      this.set(list === undefined ? -1 : list.filter((r) => r.review?.status === 'open').length)
    },
  })
  return {
    outcomes: new Counter({
      name: 'jitgate_access_requests_total',
      help: 'Access requests by outcome: created, approved, auto_approved, break_glass, denied, expired, cancelled (this replica).',
      labelNames: ['outcome'] as const,
      registers,
    }),
    approvalSeconds: new Histogram({
      name: 'jitgate_access_request_approval_seconds',
      help: 'Time from an access request to its final human approval.',
      buckets: [30, 60, 300, 900, 1800, 3600, 7200, 14_400, 28_800, 86_400],
      registers,
    }),
    notifications: new Counter({
      name: 'jitgate_notifications_total',
      help: 'Webhook notifications by outcome: sent, retried, failed (gave up after retries), dropped (queue full).',
      labelNames: ['outcome'] as const,
      registers,
    }),
  }
}

/**
 * Offline evaluation of a policy, for `jitgate policy test` and `explain`: what the gateway would
 * answer to an HTTP call under a grant, and to an access request, at a given time. Nothing is
 * re-implemented: a call goes through the real decision (decision/decide.ts) with a real signed
 * token and the grant in an in-memory store, and a request through the real workflow service
 * (workflow/service.ts), both on a clock set to the case's time. So a policy test fails exactly
 * when the gateway would behave otherwise.
 */
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import type { Policy } from '../policy.js'
import { generateSigningKey, loadKeyRing } from '../../authn/keys.js'
import { createTokenIssuer, createTokenVerifier } from '../../authn/token.js'
import { createMemoryGrantStore } from '../../grants/memory-store.js'
import type { Grant } from '../../grants/types.js'
import { createDecider } from '../../decision/decide.js'
import { createAuditLog } from '../../audit/audit-log.js'
import { createMetrics } from '../../metrics/metrics.js'
import { createGrantService, newGrantId } from '../../control/grant-service.js'
import { ApiError } from '../../control/errors.js'
import { createMemoryRequestStore } from '../../workflow/memory-request-store.js'
import { createWorkflowMetrics } from '../../workflow/metrics.js'
import { createNotifier } from '../../workflow/notify.js'
import { createWorkflowService } from '../../workflow/service.js'

/** An HTTP call through the data plane, by `subject`, under a grant for `grant.resource`. */
export interface CallCase {
  readonly subject: string
  readonly grant: { readonly resource: string; readonly scopes: readonly string[] }
  readonly method: string
  /** The request-target as sent (path and query; not normalised). */
  readonly path: string
  readonly host?: string
  readonly websocket?: boolean
  /** Epoch ms. */
  readonly at: number
}

/** An access request by `subject` (POST /v1/requests). */
export interface RequestCase {
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  readonly durationMs: number
  readonly ticket?: string
  readonly breakGlass?: boolean
  /** Epoch ms. */
  readonly at: number
}

export interface Outcome {
  readonly decision: 'allow' | 'deny'
  /** The deny code (data-plane code for a call, API error code for a request). */
  readonly code?: string
  readonly detail: string
}

export interface Evaluator {
  call(c: CallCase): Promise<Outcome>
  request(r: RequestCase): Promise<Outcome>
  close(): Promise<void>
}

/** How long the grant of a call case lasts around its time. */
const GRANT_SPAN_MS = 3_600_000

/** An evaluator for one policy, with a throwaway signing key and in-memory stores. */
export async function createEvaluator(policy: Policy): Promise<Evaluator> {
  let clock = Date.now()
  const now = () => clock
  const { privateJwk } = await generateSigningKey()
  const keys = await loadKeyRing({ signingKey: { inline: JSON.stringify(privateJwk) }, verificationKeyFiles: [], dataDir: '' })
  const issuer = createTokenIssuer(keys, 'jitgate')
  const verifier = createTokenVerifier({ keys, issuer: 'jitgate', clockToleranceS: 0, cacheSize: 0, now })
  const store = createMemoryGrantStore({ timeoutMs: 1000, minTombstoneMs: 0, now })
  const decider = createDecider({ policy: () => policy, verifier: () => verifier, store, now })

  // The audit events of the evaluation go nowhere.
  const audit = createAuditLog({ output: new Writable({ write: (_chunk, _enc, done) => done() }), gatewayId: 'policy-test', policyVersion: () => policy.version })
  const metrics = createMetrics({ activeGrants: () => store.count(), defaultMetrics: false })
  const grants = createGrantService({ store, policy: () => policy, tokens: () => issuer, audit, metrics, now })
  const requests = createMemoryRequestStore({ timeoutMs: 1000, retentionMs: 0, now })
  const workflow = createWorkflowService({
    requests,
    grantStore: store,
    grants,
    policy: () => policy,
    tokens: () => issuer,
    audit,
    metrics: createWorkflowMetrics(new Registry(), { open: () => requests.listOpen() }),
    notifier: createNotifier({ webhooks: [], gatewayId: 'policy-test', queueSize: 1, maxAttempts: 1, timeoutMs: 1000, backoffMs: 1000 }),
    log: pino({ level: 'silent' }),
    now,
  })

  return {
    async call(c) {
      clock = c.at
      const grant: Grant = {
        id: newGrantId(),
        subject: c.subject,
        resource: c.grant.resource,
        scopes: [...c.grant.scopes],
        startsAt: c.at,
        expiresAt: Math.floor((c.at + GRANT_SPAN_MS) / 1000) * 1000,
        createdAt: c.at,
        issuedBy: 'policy-test',
      }
      await store.create(grant)
      const token = await issuer.issue(grant)
      const d = await decider.decide({
        method: c.method,
        url: c.path,
        host: c.host,
        rawHeaders: ['authorization', `Bearer ${token}`],
        upgrade: c.websocket ?? false,
      })
      return d.allow
        ? { decision: 'allow', detail: `forwarded to resource "${d.resource.id}"` }
        : { decision: 'deny', code: d.code, detail: d.detail }
    },

    async request(r) {
      clock = r.at
      try {
        const created = await workflow.create(
          r.subject,
          {
            resource: r.resource,
            scopes: r.scopes,
            durationMs: r.durationMs,
            reason: 'policy test',
            ...(r.ticket !== undefined ? { ticket: r.ticket } : {}),
            ...(r.breakGlass ? { breakGlass: true } : {}),
          },
          { requestId: 'policy-test' },
        )
        const how = created.status === 'pending' ? `pending approval by policy "${created.approvalPolicy}"` : `${created.status} at once`
        return { decision: 'allow', detail: `request accepted: ${how}` }
      } catch (err) {
        if (!(err instanceof ApiError)) throw err
        return { decision: 'deny', code: err.code, detail: [err.message, ...(err.details ?? [])].join(' ') }
      }
    },

    async close() {
      await Promise.allSettled([requests.close(), store.close(), audit.close()])
    },
  }
}

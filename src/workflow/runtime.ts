/**
 * The access-request workflow of one gateway instance: its request store (Redis when the grants
 * are in Redis, so replicas share requests too), the notifier, the service, the caller
 * authentication, the `/v1/requests` API, and the sweeper that expires and escalates.
 */
import type { Logger } from 'pino'
import type { GatewayConfig } from '../config/config.js'
import type { GrantStore } from '../grants/types.js'
import type { Policy } from '../policy/policy.js'
import type { TokenIssuer } from '../authn/token.js'
import type { AuditLog } from '../audit/audit-log.js'
import type { GatewayMetrics } from '../metrics/metrics.js'
import type { GrantService } from '../control/grant-service.js'
import type { ApproverGrantActions, MountedApi } from '../control/server.js'
import { createRequestsApi } from '../control/requests-api.js'
import { createMemoryRequestStore } from './memory-request-store.js'
import { createRedisRequestStore } from './redis-request-store.js'
import { createNotifier } from './notify.js'
import { createWorkflowMetrics } from './metrics.js'
import { createWorkflowService } from './service.js'
import { createAssertionVerifier } from './auth/assertion.js'
import { createOidcVerifier } from './auth/oidc.js'
import { createCallerAuth } from './auth/caller.js'

export interface WorkflowRuntimeDeps {
  readonly config: GatewayConfig
  readonly grantStore: GrantStore
  readonly grants: GrantService
  readonly policy: () => Policy
  readonly tokens: () => TokenIssuer
  readonly audit: AuditLog
  readonly metrics: GatewayMetrics
  readonly log: Logger
}

export interface WorkflowRuntime {
  readonly api: MountedApi
  /** Approvers revoking through `DELETE /v1/grants/{id}`. */
  readonly grantActions: ApproverGrantActions
  /** Stops the sweeper, lets queued notifications go out (bounded), closes the request store. */
  stop(): Promise<void>
}

export function startWorkflow(deps: WorkflowRuntimeDeps): WorkflowRuntime {
  const { config, log } = deps
  const storeOptions = {
    timeoutMs: config.store.timeoutMs,
    retentionMs: config.workflow.retentionMs,
    onError: (err: Error) => log.warn({ err: err.message }, 'request store error'),
  }
  const requests =
    config.store.kind === 'redis'
      ? createRedisRequestStore({ ...storeOptions, url: config.store.url, keyPrefix: config.store.keyPrefix })
      : createMemoryRequestStore(storeOptions)
  const metrics = createWorkflowMetrics(deps.metrics.registry, { open: () => requests.listOpen() })
  const notifier = createNotifier({
    ...config.notifications,
    gatewayId: config.gatewayId,
    onOutcome: (outcome) => metrics.notifications.inc({ outcome }),
    onFailure: (f) => log.warn(f, 'webhook notification not delivered'),
  })
  const service = createWorkflowService({
    requests,
    grantStore: deps.grantStore,
    grants: deps.grants,
    policy: deps.policy,
    tokens: deps.tokens,
    audit: deps.audit,
    metrics,
    notifier,
    log,
  })
  const principals = () => deps.policy().principals
  const oidc = config.approvers.oidc
  const auth = createCallerAuth({
    principals,
    assertions: createAssertionVerifier({
      principals,
      audience: config.tokens.issuer,
      clockToleranceS: config.tokens.clockToleranceS,
      claimOnce: (key, ttlMs) => requests.claimOnce(key, ttlMs),
    }),
    oidc: oidc === undefined ? undefined : createOidcVerifier({ ...oidc, clockToleranceS: config.tokens.clockToleranceS }),
    claimOnce: (key, ttlMs) => requests.claimOnce(key, ttlMs),
    attempts: { count: (key, windowMs) => requests.countAttempt(key, windowMs), clear: (key) => requests.clearAttempts(key) },
  })

  // Every replica sweeps; the store's compare-and-set makes each expiry and escalation happen once.
  let sweeping: Promise<void> | undefined
  const sweeper = setInterval(() => {
    sweeping ??= service
      .sweep()
      .catch((err: unknown) => log.warn({ err: (err as Error).message }, 'request sweep failed'))
      .finally(() => (sweeping = undefined))
  }, config.workflow.sweepIntervalMs).unref()

  const api = createRequestsApi({ workflow: service, auth, audit: deps.audit })
  return {
    api,
    grantActions: api,
    async stop() {
      clearInterval(sweeper)
      await sweeping
      await service.stop()
      await Promise.race([notifier.idle(), new Promise((r) => setTimeout(r, config.notifications.timeoutMs).unref())])
      await notifier.close()
      await requests.close()
    },
  }
}

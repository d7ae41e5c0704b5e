/**
 * Composes one gateway instance from its stages and runs its two listeners:
 * config → policy → keys/tokens → grant store → decision → forwarding → audit/metrics,
 * with the control plane beside the data plane. `startGateway` is what `jitgate serve` runs and
 * what tests start in-process on port 0.
 */
import type { AddressInfo } from 'node:net'
import type { Server } from 'node:http'
import type { Writable } from 'node:stream'
import { pino, type Logger } from 'pino'
import type { GatewayConfig } from './config/config.js'
import { loadPolicy, loadPolicyOffThread, type Policy } from './policy/policy.js'
import { loadKeyRing, type KeyRing } from './authn/keys.js'
import { createTokenIssuer, createTokenVerifier } from './authn/token.js'
import type { GrantStore } from './grants/types.js'
import { createMemoryGrantStore } from './grants/memory-store.js'
import { createRedisGrantStore } from './grants/redis-store.js'
import { createDecider } from './decision/decide.js'
import { createForwarder } from './forward/forwarder.js'
import { createAuditLog, type AuditLog } from './audit/audit-log.js'
import { AUDIT_SCHEMA_VERSION } from './audit/catalogue.js'
import { createCheckpointSigner } from './audit/chain.js'
import { createMetrics } from './metrics/metrics.js'
import { createDataPlane } from './dataplane/server.js'
import { ConnectionRegistry } from './dataplane/connections.js'
import { createControlPlane } from './control/server.js'
import { createGrantService } from './control/grant-service.js'
import { startWorkflow } from './workflow/runtime.js'
import { formatListen, isLoopback } from './util/listen.js'
import { createLivePolicy, type LivePolicy } from './reload/live-policy.js'
import { createLocalNoticeBus, createRedisNoticeBus } from './reload/notices.js'
import type { ReloadResult } from './policy/reloader.js'

export interface GatewayOptions {
  readonly config: GatewayConfig
  /** Audit destination override (tests pass a stream to read the real JSON lines). */
  readonly auditStream?: Writable
  /** Operational log (not the audit trail); default pino to stderr. */
  readonly log?: Logger
  /** Environment for policy secrets; default process.env. */
  readonly env?: NodeJS.ProcessEnv
}

export interface RunningGateway {
  readonly dataUrl: string
  readonly controlUrl: string
  readonly store: GrantStore
  readonly audit: AuditLog
  readonly policy: () => Policy
  readonly keys: KeyRing
  /**
   * Re-reads the policy folder now (SIGHUP): a valid policy is swapped in atomically and announced
   * to the other replicas; an invalid one is rejected and the one in force stays.
   */
  reloadPolicy(): Promise<ReloadResult>
  /** Stops accepting, drains in-flight requests (bounded), closes WebSockets, flushes audit. */
  stop(): Promise<void>
}

/** The operational log (not the audit trail): JSON lines on stderr, ISO times. */
export function createOpsLogger(config: GatewayConfig): Logger {
  return pino(
    { level: config.logLevel, base: { gateway_id: config.gatewayId }, timestamp: pino.stdTimeFunctions.isoTime },
    pino.destination(2),
  )
}

export class StartupError extends Error {
  override readonly name = 'StartupError'
}

export async function startGateway(opts: GatewayOptions): Promise<RunningGateway> {
  const { config } = opts
  const log = opts.log ?? createOpsLogger(config)

  if (config.controlPlane.adminToken === undefined && !isLoopback(config.controlPlane.listen.host)) {
    throw new StartupError(
      `the control plane listens on ${formatListen(config.controlPlane.listen)} but no admin token is configured: ` +
        'set JITGATE_ADMIN_TOKEN (or control_plane.admin_token_file), or listen on a loopback address',
    )
  }

  const env = opts.env ?? process.env
  const policy = loadPolicy(config.policyDir, { env })
  // Assigned once the audit log and metrics it reports to exist; read only after that.
  let live: LivePolicy
  const getPolicy = (): Policy => live.current()

  const keys = await loadKeyRing(
    { signingKey: config.tokens.signingKey, verificationKeyFiles: config.tokens.verificationKeyFiles, dataDir: config.dataDir },
    (file) => log.warn({ file }, 'generated a development signing key (mode 0600); for production set JITGATE_SIGNING_KEY_FILE or tokens.signing_key_file'),
  )
  const verifier = createTokenVerifier({
    keys,
    issuer: config.tokens.issuer,
    clockToleranceS: config.tokens.clockToleranceS,
    cacheSize: config.tokens.cacheSize,
  })
  const issuer = createTokenIssuer(keys, config.tokens.issuer)

  const store: GrantStore =
    config.store.kind === 'redis'
      ? createRedisGrantStore({
          url: config.store.url,
          keyPrefix: config.store.keyPrefix,
          timeoutMs: config.store.timeoutMs,
          minTombstoneMs: config.store.tombstoneMs,
          onError: rateLimited((err: Error) => log.warn({ err: err.message }, 'grant store error'), 5000),
        })
      : createMemoryGrantStore({ timeoutMs: config.store.timeoutMs, minTombstoneMs: config.store.tombstoneMs })

  const metrics = createMetrics({ activeGrants: () => store.count() })
  const configuredSinks = config.audit.sinks
  const audit = createAuditLog({
    // A test's stream replaces the simple output, or joins the configured sinks.
    ...(configuredSinks
      ? { sinks: [...configuredSinks, ...(opts.auditStream ? [{ type: 'stream' as const, stream: opts.auditStream }] : [])] }
      : { output: opts.auditStream ?? config.audit.output }),
    gatewayId: config.gatewayId,
    policyVersion: () => getPolicy().version,
    // The token key signs checkpoints too (domain-separated, see audit/chain.ts): verifiers
    // already trust it through /.well-known/jwks.json, rotation included.
    checkpoints: { signer: createCheckpointSigner(keys.signing), ...config.audit.checkpoint },
    onError: rateLimited((err: Error, sink: string) => log.error({ err: err.message, sink }, 'audit sink error'), 5000),
    onDrop: (sink, count) => metrics.auditDropped.inc({ sink }, count),
  })
  live = createLivePolicy({
    initial: policy,
    load: () => loadPolicyOffThread(config.policyDir, { env }),
    watchDir: config.policyWatch ? config.policyDir : undefined,
    gatewayId: config.gatewayId,
    bus:
      config.store.kind === 'redis'
        ? createRedisNoticeBus({
            url: config.store.url,
            keyPrefix: config.store.keyPrefix,
            timeoutMs: Math.max(config.store.timeoutMs, 1000),
            onError: rateLimited((err: Error) => log.warn({ err: err.message }, 'policy notice channel error'), 5000),
          })
        : createLocalNoticeBus(),
    audit,
    metrics,
    log,
  })
  const connections = new ConnectionRegistry()
  const forwarder = createForwarder({ connectTimeoutMs: config.dataPlane.connectTimeoutMs, sendTimeoutMs: config.dataPlane.sendTimeoutMs })

  const decider = createDecider({
    policy: getPolicy,
    verifier: () => verifier,
    store,
    onStoreError: (operation) => metrics.storeErrors.inc({ operation }),
  })
  const grants = createGrantService({ store, policy: getPolicy, tokens: () => issuer, audit, metrics, log })
  const workflow = startWorkflow({ config, grantStore: store, grants, policy: getPolicy, tokens: () => issuer, audit, metrics, log })
  const expiries = startExpirySweep(grants, config.store.expirySweepMs, rateLimited((err: Error) => log.warn({ err: err.message }, 'grant expiry sweep failed'), 5000))

  let draining = false
  const dataPlane = createDataPlane({
    decider,
    forwarder,
    audit,
    metrics,
    connections,
    log,
    upstreamTimeoutMs: config.dataPlane.upstreamTimeoutMs,
    maxInflightPerGrant: config.dataPlane.maxInflightPerGrant,
    publicProto: config.dataPlane.publicProto,
  })
  // Revocations from any replica close this replica's open WebSockets of that grant and cut its
  // requests in flight; extensions move their cut-off.
  const unsubscribe = store.subscribe((event) => {
    if (event.type === 'revoked') {
      connections.closeGrant(event.revocation.id, 'grant_revoked', 'grant revoked')
      dataPlane.cutGrant(event.revocation.id, 'grant_revoked', 'grant revoked while the request was in flight')
    } else if (event.type === 'extended') {
      connections.extendGrant(event.grant.id, event.grant.expiresAt)
      dataPlane.extendGrant(event.grant.id, event.grant.expiresAt)
    }
  })
  const control = createControlPlane({
    store,
    policy: getPolicy,
    keys: () => keys,
    grants,
    audit,
    metrics,
    log,
    adminToken: config.controlPlane.adminToken,
    gatewayId: config.gatewayId,
    isDraining: () => draining,
    policyMismatch: () => live.mismatch(),
    requestsApi: workflow.api,
    approverGrants: workflow.grantActions,
  })

  try {
    // A sink that cannot open (its spool folder, say) stops the start rather than lose events.
    await audit.opened.catch((err: Error) => {
      throw new Error(`the audit trail cannot open: ${err.message}`)
    })
    await listen(dataPlane.server, config.dataPlane.listen.host, config.dataPlane.listen.port)
    await listen(control, config.controlPlane.listen.host, config.controlPlane.listen.port)
  } catch (err) {
    dataPlane.server.close()
    control.close()
    unsubscribe()
    await expiries.stop()
    await Promise.allSettled([workflow.stop(), store.close(), forwarder.close(), live.close(), audit.close()])
    throw new StartupError(`cannot start: ${(err as Error).message}`)
  }
  const dataUrl = urlOf(dataPlane.server)
  const controlUrl = urlOf(control)
  audit.emit('policy.loaded', { policy_files: policy.files.map((f) => f.split('/').pop() as string) })
  // The SIEM gets the addresses actually bound (0.0.0.0 included), not the loopback URLs of the log.
  audit.emit('gateway.started', { store: store.kind, listen: { data: boundAddress(dataPlane.server), control: boundAddress(control) }, schema_version: AUDIT_SCHEMA_VERSION })
  // The URL to reach each listener from this machine, and the address it is bound to (0.0.0.0: every interface).
  log.info(
    {
      data: dataUrl,
      data_bound: boundAddress(dataPlane.server),
      control: controlUrl,
      control_bound: boundAddress(control),
      pid: process.pid,
      store: store.kind,
      policy_version: policy.version,
      resources: [...policy.resources.keys()],
    },
    'jitgate listening',
  )

  let stopping: Promise<void> | undefined
  return {
    dataUrl,
    controlUrl,
    store,
    audit,
    policy: getPolicy,
    keys,
    reloadPolicy: () => live.reload('signal'),
    stop() {
      stopping ??= (async () => {
        draining = true
        const closed = Promise.all([closeServer(dataPlane.server), closeServer(control)])
        dataPlane.server.closeIdleConnections()
        control.closeIdleConnections()
        connections.closeAll('gateway_shutdown', 'gateway shutting down')
        const left = await dataPlane.settled(config.dataPlane.drainTimeoutMs)
        if (left > 0) log.warn({ inflight: left }, 'drain timeout: closing remaining connections')
        // A response whose handler just finished may still be on its way to the client: let
        // connections end by themselves for a moment (closing those that turn idle) rather than
        // cut a response whose decision is already in the audit trail.
        const grace = Date.now() + (left > 0 ? 0 : 1000)
        let ended = false
        void closed.then(() => (ended = true))
        while (!ended && Date.now() < grace) {
          dataPlane.server.closeIdleConnections()
          control.closeIdleConnections()
          await sleep(10)
        }
        dataPlane.server.closeAllConnections()
        control.closeAllConnections()
        // Handlers cut off just now still write their audit events (client_aborted) before the flush.
        await dataPlane.settled(1000)
        await closed
        unsubscribe()
        // The workflow first: its last notifications and sweeps still use the grant store.
        await workflow.stop().catch((err: unknown) => log.warn({ err }, 'workflow stop failed'))
        // Writes a hung store has not confirmed yet: audited if they landed, logged by id if still unknown.
        await grants.stop()
        // A last sweep, so grants that expired since the previous one are on record before the trail closes.
        await expiries.stop({ finalSweep: true })
        await Promise.allSettled([forwarder.close(), store.close(), live.close()])
        audit.emit('gateway.stopped', {})
        await audit.close()
      })()
      return stopping
    },
  }
}

/**
 * Every `intervalMs`, writes `grant.expired` for the grants that have expired since. Every replica
 * sweeps; the store hands each expired grant to one of them. A failed sweep (the store down) is
 * reported and simply retried at the next tick: nothing is lost meanwhile, since the store keeps
 * an expiry until it is claimed.
 */
function startExpirySweep(
  grants: { reportExpired(): Promise<number> },
  intervalMs: number,
  onError: (err: Error) => void,
): { stop(opts?: { finalSweep?: boolean }): Promise<void> } {
  let running: Promise<void> | undefined
  const sweep = (): Promise<void> =>
    (running ??= grants
      .reportExpired()
      .then(
        () => {},
        (err: unknown) => onError(err instanceof Error ? err : new Error(String(err))),
      )
      .finally(() => (running = undefined)))
  const timer = setInterval(() => void sweep(), intervalMs).unref()
  return {
    async stop(opts = {}) {
      clearInterval(timer)
      await running
      if (opts.finalSweep) await sweep()
    },
  }
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()))
}

/** `host:port` as bound, e.g. `0.0.0.0:8080` or `[::1]:8081`. */
function boundAddress(server: Server): string {
  const a = server.address() as AddressInfo
  return formatListen({ host: a.address, port: a.port })
}

/** A URL to reach the listener from this machine (a wildcard address becomes loopback). */
function urlOf(server: Server): string {
  const a = server.address() as AddressInfo
  const host = a.family === 'IPv6' ? `[${a.address}]` : a.address
  return `http://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${a.port}`
}

function rateLimited<A extends unknown[]>(fn: (...a: A) => void, everyMs: number): (...a: A) => void {
  let last = 0
  return (...a) => {
    const t = Date.now()
    if (t - last >= everyMs) {
      last = t
      fn(...a)
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

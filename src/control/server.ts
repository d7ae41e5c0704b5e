/**
 * The control-plane listener (default 127.0.0.1:8081): operator API (`/v1/grants`), health,
 * readiness, metrics and the JWKS. Never serves sub-processor traffic.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto'
import type { Logger } from 'pino'
import type { Grant, GrantClaim, GrantStore } from '../grants/types.js'
import type { Policy } from '../policy/policy.js'
import type { KeyRing } from '../authn/keys.js'
import type { AuditLog } from '../audit/audit-log.js'
import { bounded } from '../audit/audit-log.js'
import type { GatewayMetrics } from '../metrics/metrics.js'
import type { GrantService } from './grant-service.js'
import { API_ERRORS, ApiError, auditedRefusals, sendError, sendJson } from './errors.js'
import { isBareNumber, noUnitMessage, parseDuration } from '../util/duration.js'
import { ID_PATTERN } from '../policy/schema.js'
import { duplicateKey } from '../util/json-keys.js'
import { serveConsole } from '../console/site.js'
import { clientAddress, pathOfTarget } from '../util/request.js'
import { authorizationOf } from '../authn/token.js'

export interface ControlPlaneDeps {
  readonly store: GrantStore
  readonly policy: () => Policy
  readonly keys: () => KeyRing
  readonly grants: GrantService
  readonly audit: AuditLog
  readonly metrics: GatewayMetrics
  readonly log: Logger
  /** Operator bearer token; undefined = open API (only allowed on a loopback listener). */
  readonly adminToken: string | undefined
  readonly gatewayId: string
  readonly isDraining: () => boolean
  /** Set while this replica's policy version differs from the one another replica announced. */
  readonly policyMismatch?: () => { readonly announced: string; readonly origin: string; readonly local: string } | undefined
  /** The access-request API (requests-api.ts), mounted under `/v1/requests`. */
  readonly requestsApi?: MountedApi
  /** Approvers' actions on `/v1/grants` (requests-api.ts); without it, only operators are served there. */
  readonly approverGrants?: ApproverGrantActions
}

/**
 * Approvers acting on `/v1/grants/{id}`, authenticated as on `/v1/requests` (an OIDC ID token, or
 * a local approver with the operator credential, `X-Jitgate-Approver` and a TOTP code).
 */
export interface ApproverGrantActions {
  /** Authenticates the caller, then revokes the grant as that approver; refusals are ApiErrors. */
  revoke(req: IncomingMessage, ctx: MountContext, grantId: string, reason: () => Promise<string>): Promise<void>
  /** Authenticates the caller, then lists the active grants that approver may revoke. */
  list(req: IncomingMessage, ctx: MountContext): Promise<Grant[]>
}

/** What a mounted API gets from the control plane for each call. */
export interface MountContext {
  readonly requestId: string
  readonly url: URL
  /** The operator actor when the call carries the operator credential, else undefined. */
  readonly operator: (req: IncomingMessage) => string | undefined
}

/** An API mounted on the control plane: handles the calls whose path it owns (resolves true). */
export interface MountedApi {
  handle(req: IncomingMessage, res: ServerResponse, ctx: MountContext): Promise<boolean>
}

const MAX_BODY_BYTES = 64 * 1024
const ID_RE = new RegExp(ID_PATTERN)
const GRANT_ID_RE = /^g_[A-Za-z0-9_-]{10,64}$/
const MAX_SCOPES = 64
const COMPACT_JWT = /^Bearer +[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+ *$/i

export function createControlPlane(deps: ControlPlaneDeps): Server {
  const adminDigest = deps.adminToken === undefined ? undefined : sha256(deps.adminToken)

  /** Constant-time comparison of digests, so neither length nor prefix leaks through timing. */
  function authenticate(req: IncomingMessage): string {
    if (adminDigest === undefined) {
      // The open loopback API serves callers without credentials. One that presents a bearer is
      // another principal (a vendor's assertion, an approver's ID token), never the operator.
      if (!hasCredential(req)) return 'local-operator'
      throw new ApiError('unauthorized', ['no operator token is configured: operator calls carry no Authorization header, and this credential is not an operator’s'])
    }
    const m = /^Bearer +(\S+) *$/i.exec(authorizationOf(req.rawHeaders) ?? '')
    if (!m || !timingSafeEqual(sha256(m[1] as string), adminDigest)) throw new ApiError('unauthorized')
    const who = req.headers['x-jitgate-actor']
    // The token says "an operator"; the optional header names which one, for the audit trail.
    return typeof who === 'string' && /^[A-Za-z0-9@._-]{1,64}$/.test(who) ? `operator:${who}` : 'operator'
  }

  /**
   * The operator credential for APIs that also serve other callers: the admin token or, with none
   * configured, no Authorization header at all (a bearer there belongs to another kind of caller).
   */
  function operatorOf(req: IncomingMessage): string | undefined {
    if (adminDigest === undefined) return hasCredential(req) ? undefined : authenticate(req)
    try {
      return authenticate(req)
    } catch {
      return undefined
    }
  }

  /**
   * A call on `/v1/grants/{id}` from an approver rather than an operator: it names a local
   * approver (`X-Jitgate-Approver`), or its bearer is a JWT (an ID token; a sub-processor's
   * assertion is refused later as `approver_only`) and not the operator token. An operator's call
   * (admin token, or none on an open loopback control plane) is served exactly as before.
   */
  function isApproverCall(req: IncomingMessage): boolean {
    if (req.headers['x-jitgate-approver'] !== undefined) return true
    return operatorOf(req) === undefined && COMPACT_JWT.test(authorizationOf(req.rawHeaders) ?? '')
  }

  async function route(req: IncomingMessage, res: ServerResponse, requestId: string): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://control')
    const path = url.pathname
    const method = req.method ?? 'GET'

    // Without an operator token the API is open to whatever reaches the loopback listener, and a
    // web page can reach it too by DNS rebinding (its own name made to resolve to 127.0.0.1): its
    // calls then carry its own name as Host. Only loopback names are answered in that mode.
    if (adminDigest === undefined && !isLoopbackHost(req.headers.host)) throw new ApiError('host_not_allowed')

    // The approvers' web console: static files under /console/, which call the API below.
    if (serveConsole(req, res, path)) return
    if (path === '/healthz') return only(method, ['GET', 'HEAD'], () => sendJson(res, 200, { status: 'ok' }))
    if (path === '/readyz') return only(method, ['GET', 'HEAD'], () => readyz(res))
    if (path === '/metrics') {
      return only(method, ['GET'], async () => {
        const text = await deps.metrics.registry.metrics()
        res.writeHead(200, { 'content-type': deps.metrics.registry.contentType })
        res.end(text)
      })
    }
    if (path === '/.well-known/jwks.json') {
      return only(method, ['GET'], () =>
        sendJson(res, 200, deps.keys().jwks, { 'cache-control': 'public, max-age=300' }),
      )
    }
    if (deps.requestsApi && (await deps.requestsApi.handle(req, res, { requestId, url, operator: operatorOf }))) return
    if (path === '/v1/grants') {
      if (method === 'GET' && deps.approverGrants !== undefined && isApproverCall(req)) {
        const grants = await deps.approverGrants.list(req, { requestId, url, operator: operatorOf })
        return sendJson(res, 200, { grants: grants.map(grantView) }, { 'x-request-id': requestId })
      }
      const actor = guard(req, requestId, path)
      if (method === 'POST') return issueGrant(req, res, actor, requestId)
      if (method === 'GET') return listGrants(res)
      throw new ApiError('method_not_allowed')
    }
    const m = /^\/v1\/grants\/([^/]+)$/.exec(path)
    if (m) {
      let id: string
      try {
        id = decodeURIComponent(m[1] as string)
      } catch {
        // `%E0%A4%A`: no grant id decodes from it.
        throw new ApiError('grant_not_found')
      }
      /** The revocation reason: body `{"reason"}` or `?reason=`, required. */
      const reasonOf = async (): Promise<string> => {
        const body = (req.headers['content-length'] ?? '0') !== '0' || req.headers['transfer-encoding'] ? await readJson(req) : {}
        // A misspelt field (`{"reson": …}`) is refused, not ignored, as on every other call.
        const unknown = Object.keys(body).filter((k) => k !== 'reason')
        if (unknown.length > 0) throw new ApiError('invalid_request', unknown.map((k) => `${k}: unknown field`))
        const reason = stringField(body, 'reason', { optional: true, max: 512 }) ?? url.searchParams.get('reason') ?? ''
        if (reason.trim() === '') throw new ApiError('invalid_request', ['reason: a revocation needs a reason (body {"reason"} or ?reason=)'])
        return bounded(reason)
      }
      if (method === 'DELETE' && deps.approverGrants !== undefined && isApproverCall(req)) {
        await deps.approverGrants.revoke(req, { requestId, url, operator: operatorOf }, id, reasonOf)
        res.writeHead(204, { 'x-request-id': requestId }).end()
        return
      }
      const actor = guard(req, requestId, path)
      if (!GRANT_ID_RE.test(id)) throw new ApiError('grant_not_found')
      if (method === 'GET') return getGrant(res, id)
      if (method === 'DELETE') {
        await deps.grants.revoke(id, actor, await reasonOf(), requestId)
        res.writeHead(204, { 'x-request-id': requestId }).end()
        return
      }
      throw new ApiError('method_not_allowed')
    }
    throw new ApiError('not_found')

    async function only(m: string, allowed: string[], fn: () => void | Promise<void>): Promise<void> {
      if (!allowed.includes(m)) throw new ApiError('method_not_allowed')
      await fn()
    }
  }

  function guard(req: IncomingMessage, requestId: string, path: string): string {
    try {
      return authenticate(req)
    } catch (err) {
      deps.audit.emit('admin.denied', {
        request_id: requestId,
        method: bounded(req.method ?? ''),
        path: bounded(path),
        status: 401,
        code: 'unauthorized',
        client_ip: clientAddress(req),
      })
      if (err instanceof ApiError) auditedRefusals.add(err)
      throw err
    }
  }

  async function readyz(res: ServerResponse): Promise<void> {
    const policy = deps.policy()
    let storeOk = true
    try {
      await deps.store.ping()
    } catch {
      storeOk = false
    }
    const ready = storeOk && !deps.isDraining()
    sendJson(res, ready ? 200 : 503, {
      ready,
      store: { kind: deps.store.kind, reachable: storeOk },
      draining: deps.isDraining(),
      policy_version: policy.version,
      // Reported, not a readiness failure: replicas that disagree would all go unready at once.
      policy_version_mismatch: deps.policyMismatch?.() ?? null,
      gateway_id: deps.gatewayId,
    })
  }

  async function issueGrant(req: IncomingMessage, res: ServerResponse, actor: string, requestId: string): Promise<void> {
    const body = await readJson(req)
    const details: string[] = []
    const known = new Set(['subject', 'resource', 'scopes', 'ttl', 'reason'])
    for (const k of Object.keys(body)) if (!known.has(k)) details.push(`${k}: unknown field`)
    const subject = collect(details, () => stringField(body, 'subject', { max: 63 }))
    if (subject !== undefined && !ID_RE.test(subject)) details.push('subject: expected a sub-processor id (lowercase letters, digits, ".", "_", "-")')
    const resource = collect(details, () => stringField(body, 'resource', { max: 63 }))
    const scopes = body.scopes
    if (!Array.isArray(scopes) || scopes.length === 0 || scopes.length > MAX_SCOPES || !scopes.every((s) => typeof s === 'string' && s.length <= 512)) {
      details.push(`scopes: expected 1 to ${MAX_SCOPES} scope strings such as "GET /crm/customers/**"`)
    }
    const ttlMs = collect(details, () => durationField(body, 'ttl'))
    const reason = collect(details, () => stringField(body, 'reason', { optional: true, max: 512 }))
    if (details.length > 0) throw bodyError(details, isBareNumber(body.ttl))
    const issued = await deps.grants.issue({
      subject: subject as string,
      resource: resource as string,
      scopes: scopes as string[],
      ttlMs: ttlMs as number,
      ...(reason !== undefined ? { reason } : {}),
      actor,
      requestId,
    })
    sendJson(res, 201, { ...grantView(issued.grant), token: issued.token, ...(issued.warnings ? { warnings: issued.warnings } : {}) }, { 'x-request-id': requestId, location: `/v1/grants/${issued.grant.id}` })
  }

  async function listGrants(res: ServerResponse): Promise<void> {
    const grants = await storeCall(() => deps.store.list())
    sendJson(res, 200, { grants: grants.map(grantView) })
  }

  async function getGrant(res: ServerResponse, id: string): Promise<void> {
    const lookup = await storeCall(() => deps.store.get(id))
    if (lookup.status === 'active') return sendJson(res, 200, grantView(lookup.grant))
    if (lookup.status === 'revoked') {
      const r = lookup.revocation
      return sendJson(res, 200, {
        id: r.id,
        subject: r.subject,
        resource: r.resource,
        status: 'revoked',
        revoked_at: new Date(r.revokedAt).toISOString(),
        revoked_by: r.revokedBy,
        reason: r.reason,
      })
    }
    throw new ApiError('grant_not_found')
  }

  return createServer((req, res) => {
    const requestId = randomUUID()
    const clientIp = clientAddress(req)
    route(req, res, requestId).catch((err: unknown) => {
      if (err instanceof ApiError) {
        // Every refused call is on record for the SIEM, with its code (a self-approval, a missing
        // MFA proof, a request outside the entitlement...), unless it was recorded where it arose.
        const status = API_ERRORS[err.code].status
        if (status >= 400 && !auditedRefusals.has(err)) {
          deps.audit.emit('admin.denied', {
            request_id: requestId,
            method: bounded(req.method ?? ''),
            path: bounded(pathOfTarget(req.url ?? '')),
            status,
            code: err.code,
            client_ip: clientIp,
            ...(err.details?.[0] !== undefined ? { detail: bounded(err.details[0]) } : {}),
          })
        }
        return sendError(res, err, requestId)
      }
      if (req.destroyed && (err as NodeJS.ErrnoException | null)?.code === 'ECONNRESET') {
        // The caller went away while sending its body: nobody to answer, and no gateway fault.
        deps.log.debug({ request_id: requestId }, 'control-plane caller left before its body was read')
        return
      }
      deps.log.error({ err, request_id: requestId }, 'control-plane request failed')
      sendError(res, new ApiError('internal_error'), requestId)
    })
  })
}

/** The API view of a grant: never its token. */
export function grantView(g: Grant): Record<string, unknown> {
  return {
    id: g.id,
    subject: g.subject,
    resource: g.resource,
    scopes: g.scopes,
    status: 'active',
    starts_at: new Date(g.startsAt).toISOString(),
    expires_at: new Date(g.expiresAt).toISOString(),
    issued_by: g.issuedBy,
    ...(g.reason !== undefined ? { reason: g.reason } : {}),
    ...(g.policyVersion !== undefined ? { policy_version: g.policyVersion } : {}),
    ...(g.accessRequestId !== undefined ? { access_request_id: g.accessRequestId } : {}),
    ...(g.claim !== undefined ? { claim: claimView(g.claim) } : {}),
  }
}

/**
 * The claim-by window of a grant (entitlement `claim_within`): `unclaimed` until its first use, by
 * `claim_by` at the latest (until then the grant's `expires_at` is `claim_by`), then `claimed`, with
 * `claimed_at` and an `expires_at` of first use + `duration_s`, never past `not_after`.
 */
export function claimView(c: GrantClaim): Record<string, unknown> {
  return {
    status: c.claimedAt === undefined ? 'unclaimed' : 'claimed',
    claim_by: new Date(c.by).toISOString(),
    duration_s: Math.round(c.durationMs / 1000),
    not_after: new Date(c.notAfter).toISOString(),
    ...(c.claimedAt !== undefined ? { claimed_at: new Date(c.claimedAt).toISOString() } : {}),
  }
}

async function storeCall<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (err) {
    if ((err as { code?: string }).code === 'store_unavailable') throw new ApiError('store_unavailable')
    throw err
  }
}

/** The JSON object body of a call (application/json, at most 64 KiB), or an ApiError. */
export async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim().toLowerCase()
  if (type !== 'application/json') throw new ApiError('unsupported_media_type')
  const declared = Number(req.headers['content-length'] ?? 0)
  if (declared > MAX_BODY_BYTES) throw new ApiError('payload_too_large')
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY_BYTES) throw new ApiError('payload_too_large')
    chunks.push(chunk as Buffer)
  }
  let value: unknown
  const text = Buffer.concat(chunks).toString('utf8')
  try {
    value = JSON.parse(text)
  } catch {
    throw new ApiError('invalid_request', ['body: not valid JSON'])
  }
  const dup = duplicateKey(text)
  if (dup !== undefined) throw new ApiError('invalid_request', [`body: the key ${JSON.stringify(dup.slice(0, 64))} occurs twice in one object`])
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new ApiError('invalid_request', ['body: expected a JSON object'])
  }
  return value as Record<string, unknown>
}

/** A string field of 1 to `max` characters, or an `invalid_request` ApiError naming it. */
export function stringField(
  body: Record<string, unknown>,
  name: string,
  opts: { optional?: boolean; max: number },
): string | undefined {
  const v = body[name]
  if (v === undefined && opts.optional) return undefined
  if (typeof v !== 'string' || v.length === 0 || v.length > opts.max) {
    throw new ApiError('invalid_request', [`${name}: expected a string of 1 to ${opts.max} characters`])
  }
  return v
}

/**
 * The refusal of a body with these problems, all listed: `duration_unit_required` when a duration
 * was a bare number (the one thing the caller must change in any case), else `invalid_request`.
 */
export function bodyError(details: readonly string[], bareDuration: boolean): ApiError {
  return new ApiError(bareDuration ? 'duration_unit_required' : 'invalid_request', details)
}

/** Runs a field check, adding its problems to `details` instead of throwing: every problem is reported at once. */
export function collect<T>(details: string[], fn: () => T): T | undefined {
  try {
    return fn()
  } catch (err) {
    if (err instanceof ApiError && err.details) details.push(...err.details)
    else throw err
    return undefined
  }
}

/**
 * A duration field (`ttl`, `duration`): a string with units, `"15m"`, `"2h"`, `"1h30m"`, at least
 * 1 s; otherwise an `invalid_request` ApiError naming it. A bare number (`60` or `"60"`) is never
 * read as seconds: it is refused with `duration_unit_required` (which a body with several problems
 * keeps as its code, see `bodyError`).
 */
export function durationField(body: Record<string, unknown>, name: string): number {
  const v = body[name]
  if (isBareNumber(v)) throw new ApiError('duration_unit_required', [noUnitMessage(name, v)])
  const ms = typeof v === 'string' ? parseDuration(v) : undefined
  if (ms === undefined || ms < 1000) throw new ApiError('invalid_request', [`${name}: expected a duration with a unit, such as "15m", "2h" or "1h30m" (at least 1s)`])
  return ms
}

/** An Authorization header with something in it (an empty one is no credential). */
/** A credential, or several Authorization lines (an empty first one must not hide the next). */
function hasCredential(req: IncomingMessage): boolean {
  const value = authorizationOf(req.rawHeaders)
  return value === null || (value !== undefined && value.trim() !== '')
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest()
}

/**
 * A Host header naming this machine's loopback: `localhost` (and `*.localhost`, RFC 6761),
 * 127.0.0.0/8 or `[::1]`, with any port. No Host at all (HTTP/1.0) is no browser's request.
 */
export function isLoopbackHost(host: string | undefined): boolean {
  if (host === undefined || host === '') return true
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d{1,5})?$/.exec(host.toLowerCase())
  const name = m?.[1]
  if (name === undefined) return false
  if (name === '[::1]' || name === 'localhost' || name.endsWith('.localhost')) return true
  return /^127\.(?:\d{1,3})\.(?:\d{1,3})\.(?:\d{1,3})$/.test(name) && name.split('.').every((o) => Number(o) <= 255)
}

/**
 * The access-request API (`/v1/requests*`, DESIGN.md), mounted on the control plane:
 *
 * | method and path | who | what |
 * |---|---|---|
 * | `POST /v1/requests` | sub-processor | `{resource, scopes, duration, reason, ticket?, break_glass?}` → `201` |
 * | `GET /v1/requests[?status=]` | requester (own), approver, operator | newest first |
 * | `GET /v1/requests/{id}` | requester (own, with its token once approved), approver, operator | |
 * | `POST /v1/requests/{id}/approve`, `/deny` | approver with MFA | `{comment?}` |
 * | `POST /v1/requests/{id}/cancel` | requester | withdraw a pending request |
 * | `POST /v1/requests/{id}/relinquish` | requester | end its own grant now |
 * | `POST /v1/requests/{id}/extend` | requester | `{duration, reason, ticket?}` → `201` a new request |
 * | `POST /v1/requests/{id}/revoke` | approver with MFA, operator | `{reason}` |
 * | `POST /v1/requests/{id}/review` | approver with MFA | `{comment?}`: close a break-glass review |
 *
 * Who is calling is decided by workflow/auth/caller.ts. Only the requester ever receives a token.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AuditLog } from '../audit/audit-log.js'
import { bounded } from '../audit/audit-log.js'
import { StoreUnavailableError } from '../grants/types.js'
import type { CallerAuth, Caller } from '../workflow/auth/caller.js'
import type { Approver } from '../workflow/auth/approvers.js'
import type { GrantState, WorkflowService } from '../workflow/service.js'
import { REQUEST_STATUSES, type AccessRequest, type RequestStatus } from '../workflow/request-store.js'
import { API_ERRORS, ApiError, auditedRefusals, sendJson } from './errors.js'
import { bodyError, claimView, collect, durationField, readJson, stringField, type ApproverGrantActions, type MountContext, type MountedApi } from './server.js'
import { isBareNumber } from '../util/duration.js'
import { clientAddress } from '../util/request.js'

export interface RequestsApiDeps {
  readonly workflow: WorkflowService
  readonly auth: CallerAuth
  readonly audit: AuditLog
  readonly now?: () => number
}

const REQUEST_ID = /^r_[A-Za-z0-9_-]{22}$/
/** Authentication refusals, audited where they arise (with the approver a TOTP code was tried for). */
const AUTH_REFUSALS: ReadonlySet<string> = new Set(['credentials_invalid', 'assertion_replayed', 'reauthentication_required', 'mfa_invalid', 'mfa_locked'])
const MAX_SCOPES = 64
const MAX_TEXT = 512
/** The actions on one request, and the body fields each accepts. */
const ACTION_FIELDS: Readonly<Record<string, readonly string[]>> = {
  approve: ['comment'],
  deny: ['comment'],
  review: ['comment'],
  cancel: [],
  relinquish: [],
  revoke: ['reason'],
  extend: ['duration', 'reason', 'ticket'],
}

export function createRequestsApi(deps: RequestsApiDeps): MountedApi & ApproverGrantActions {
  const now = deps.now ?? Date.now

  async function caller(req: IncomingMessage, ctx: MountContext, path: string): Promise<Caller> {
    try {
      return await deps.auth.authenticate(req, ctx.operator)
    } catch (err) {
      // Burning an assertion's jti or a TOTP code needs the store: without it, fail closed.
      if (err instanceof StoreUnavailableError) throw new ApiError('store_unavailable')
      if (err instanceof ApiError && AUTH_REFUSALS.has(err.code)) {
        const claimed = req.headers['x-jitgate-approver']
        deps.audit.emit('admin.denied', {
          request_id: ctx.requestId,
          method: bounded(req.method ?? ''),
          path: bounded(path),
          status: API_ERRORS[err.code].status,
          code: err.code,
          client_ip: clientAddress(req),
          // Whose second factor is being tried: the SIEM alerts on repeated failures per approver.
          ...(typeof claimed === 'string' ? { actor: `approver:${bounded(claimed.trim().slice(0, 64))}` } : {}),
        })
        auditedRefusals.add(err)
      }
      throw err
    }
  }

  const approverOf = (c: Caller): Approver => {
    if (c.kind !== 'approver') throw new ApiError('approver_only')
    return c.approver
  }
  /**
   * Who may read requests: their requester (its own), operators, and approvers, meaning members
   * of some approver group; anyone else the identity provider vouches for reads nothing.
   */
  const checkReader = (c: Caller): void => {
    if (c.kind === 'approver' && !deps.workflow.isApprover(c.approver)) throw new ApiError('not_an_approver', ['not a member of any approver group'])
  }
  const requesterOf = (c: Caller): string => {
    if (c.kind !== 'subprocessor') throw new ApiError('requester_only')
    return c.id
  }

  /** The request as the caller may see it; the token only for its requester, only while the grant is active. */
  async function view(r: AccessRequest, c: Caller, ctx: MountContext, withGrant: boolean): Promise<Record<string, unknown>> {
    const body = requestView(r, now())
    if (!withGrant || r.status !== 'approved') return body
    const state = await deps.workflow.grantState(r, ctx)
    body.grant = grantView(r, state)
    if (state.status === 'active' && c.kind === 'subprocessor' && c.id === r.subject) body.token = await deps.workflow.token(state.grant)
    return body
  }

  async function create(req: IncomingMessage, res: ServerResponse, c: Caller, ctx: MountContext): Promise<void> {
    const subject = requesterOf(c)
    const body = await readJson(req)
    const details: string[] = []
    const known = new Set(['resource', 'scopes', 'duration', 'reason', 'ticket', 'break_glass'])
    for (const k of Object.keys(body)) if (!known.has(k)) details.push(`${k}: unknown field`)
    const resource = collect(details, () => stringField(body, 'resource', { max: 63 }))
    const scopes = body.scopes
    if (!Array.isArray(scopes) || scopes.length === 0 || scopes.length > MAX_SCOPES || !scopes.every((s) => typeof s === 'string' && s.length <= 512)) {
      details.push(`scopes: expected 1 to ${MAX_SCOPES} scope strings such as "GET /crm/customers/**"`)
    }
    const durationMs = collect(details, () => durationField(body, 'duration'))
    const reason = collect(details, () => stringField(body, 'reason', { max: MAX_TEXT }))
    const ticket = collect(details, () => stringField(body, 'ticket', { optional: true, max: 128 }))
    const breakGlass = body.break_glass
    if (breakGlass !== undefined && typeof breakGlass !== 'boolean') details.push('break_glass: expected true or false')
    if (details.length > 0) throw bodyError(details, isBareNumber(body.duration))
    const r = await deps.workflow.create(
      subject,
      {
        resource: resource as string,
        scopes: scopes as string[],
        durationMs: durationMs as number,
        reason: reason as string,
        ...(ticket !== undefined ? { ticket } : {}),
        breakGlass: breakGlass === true,
      },
      ctx,
    )
    sendJson(res, 201, await view(r, c, ctx, true), { 'x-request-id': ctx.requestId, location: `/v1/requests/${r.id}` })
  }

  async function list(res: ServerResponse, c: Caller, url: URL): Promise<void> {
    const status = url.searchParams.get('status') ?? undefined
    if (status !== undefined && !REQUEST_STATUSES.includes(status as RequestStatus)) {
      throw new ApiError('invalid_request', [`status: expected one of ${REQUEST_STATUSES.join(', ')}`])
    }
    const subject = c.kind === 'subprocessor' ? c.id : (url.searchParams.get('subject') ?? undefined)
    const t = now()
    // The store's status, and then the effective one: a pending request past its deadline is
    // listed as expired even before the sweeper has recorded it.
    const found = await deps.workflow.list({ ...(subject !== undefined ? { subject } : {}), ...(status !== undefined && status !== 'expired' ? { status: status as RequestStatus } : {}) })
    const views = found.map((r) => requestView(r, t)).filter((v) => status === undefined || v.status === status)
    sendJson(res, 200, { requests: views })
  }

  /** The optional text field of an action's body; an empty body is an empty object. */
  async function actionBody(req: IncomingMessage): Promise<Record<string, unknown>> {
    const hasBody = (req.headers['content-length'] ?? '0') !== '0' || req.headers['transfer-encoding'] !== undefined
    return hasBody ? readJson(req) : {}
  }

  async function act(action: string, id: string, req: IncomingMessage, res: ServerResponse, c: Caller, ctx: MountContext): Promise<void> {
    const body = await actionBody(req)
    const allowed = ACTION_FIELDS[action] as readonly string[]
    const unknown = Object.keys(body).filter((k) => !allowed.includes(k))
    if (unknown.length > 0) throw new ApiError('invalid_request', unknown.map((k) => `${k}: unknown field`))
    const text = (name: string, required: boolean): string | undefined => stringField(body, name, { optional: !required, max: MAX_TEXT })
    let r: AccessRequest | undefined
    switch (action) {
      case 'approve':
        r = await deps.workflow.approve(id, approverOf(c), text('comment', false), ctx)
        break
      case 'deny':
        r = await deps.workflow.deny(id, approverOf(c), text('comment', false), ctx)
        break
      case 'review':
        r = await deps.workflow.review(id, approverOf(c), text('comment', false), ctx)
        break
      case 'cancel':
        r = await deps.workflow.cancel(id, requesterOf(c), ctx)
        break
      case 'relinquish':
        await deps.workflow.relinquish(id, requesterOf(c), ctx)
        break
      case 'revoke': {
        if (c.kind === 'subprocessor') throw new ApiError('approver_only', ['a requester ends its own grant with /relinquish'])
        const reason = text('reason', true) as string
        await deps.workflow.revoke(id, c.kind === 'approver' ? c.approver : c.actor, reason, ctx)
        break
      }
      case 'extend': {
        const subject = requesterOf(c)
        const reason = text('reason', true) as string
        const durationMs = durationField(body, 'duration')
        const ticket = stringField(body, 'ticket', { optional: true, max: 128 })
        const ext = await deps.workflow.extend(id, subject, { durationMs, reason, ...(ticket !== undefined ? { ticket } : {}) }, ctx)
        return sendJson(res, 201, await view(ext, c, ctx, true), { 'x-request-id': ctx.requestId, location: `/v1/requests/${ext.id}` })
      }
    }
    if (r === undefined) return void res.writeHead(204, { 'x-request-id': ctx.requestId }).end()
    sendJson(res, 200, await view(r, c, ctx, true), { 'x-request-id': ctx.requestId })
  }

  return {
    async revoke(req, ctx, grantId, reasonOf) {
      const c = await caller(req, ctx, ctx.url.pathname)
      if (c.kind === 'subprocessor') throw new ApiError('approver_only', ['a requester ends its own grant with POST /v1/requests/{id}/relinquish'])
      const reason = await reasonOf()
      if (!/^g_[A-Za-z0-9_-]{10,64}$/.test(grantId)) throw new ApiError('grant_not_found')
      await deps.workflow.revokeGrant(grantId, c.kind === 'approver' ? c.approver : c.actor, reason, ctx)
    },

    async list(req, ctx) {
      const c = await caller(req, ctx, ctx.url.pathname)
      if (c.kind === 'subprocessor') throw new ApiError('approver_only', ['a sub-processor sees its grants through its requests'])
      checkReader(c)
      if (c.kind !== 'approver') throw new ApiError('approver_only')
      return deps.workflow.grantsFor(c.approver)
    },

    async handle(req, res, ctx) {
      const path = ctx.url.pathname
      if (path !== '/v1/requests' && !path.startsWith('/v1/requests/')) return false
      const method = req.method ?? 'GET'
      if (path === '/v1/requests') {
        if (method !== 'POST' && method !== 'GET') throw new ApiError('method_not_allowed')
        const c = await caller(req, ctx, path)
        if (method === 'POST') await create(req, res, c, ctx)
        else {
          checkReader(c)
          await list(res, c, ctx.url)
        }
        return true
      }
      const m = /^\/v1\/requests\/([^/]+)(?:\/([a-z]+))?$/.exec(path)
      if (!m) throw new ApiError('not_found')
      const action = m[2]
      if (action !== undefined && !Object.hasOwn(ACTION_FIELDS, action)) throw new ApiError('not_found')
      if (method !== (action === undefined ? 'GET' : 'POST')) throw new ApiError('method_not_allowed')
      const c = await caller(req, ctx, path)
      const id = m[1] as string
      if (!REQUEST_ID.test(id)) throw new ApiError('request_not_found')
      if (action !== undefined) await act(action, id, req, res, c, ctx)
      else {
        checkReader(c)
        const r = await deps.workflow.get(id)
        // Another sub-processor's request does not exist for a sub-processor.
        if (c.kind === 'subprocessor' && c.id !== r.subject) throw new ApiError('request_not_found')
        sendJson(res, 200, await view(r, c, ctx, true))
      }
      return true
    },
  }
}

const iso = (ms: number | undefined): string | undefined => (ms === undefined ? undefined : new Date(ms).toISOString())

/** The API view of a request (snake_case, ISO times, 1-based stages); never a token. */
export function requestView(r: AccessRequest, now: number): Record<string, unknown> {
  const overdue = r.status === 'pending' && now >= r.expiresAt
  return dropUndefined({
    id: r.id,
    kind: r.kind,
    status: overdue ? 'expired' : r.status,
    subject: r.subject,
    resource: r.resource,
    scopes: r.scopes,
    duration_s: Math.round(r.durationMs / 1000),
    claim_within_s: r.claimWithinMs === undefined ? undefined : Math.round(r.claimWithinMs / 1000),
    reason: r.reason,
    ticket: r.ticket,
    policy_version: r.policyVersion,
    approval_policy: r.approvalPolicy,
    stages: r.stages.map((s, i) => ({
      group: s.group,
      approvals_required: s.approvals,
      approvals: r.approvals.filter((a) => a.stage === i).map((a) => dropUndefined({ approver: a.approver, at: iso(a.at), comment: a.comment })),
    })),
    created_at: iso(r.createdAt),
    expires_at: iso(r.expiresAt),
    escalated_at: iso(r.escalatedAt),
    decided_at: iso(r.decidedAt),
    decided_by: r.decidedBy,
    comment: r.comment,
    extends: r.extends,
    grant_id: r.grantId,
    review: r.review && dropUndefined({ status: r.review.status, reviewed_by: r.review.reviewedBy, reviewed_at: iso(r.review.reviewedAt), comment: r.review.comment }),
  })
}

function grantView(r: AccessRequest, state: GrantState): Record<string, unknown> {
  if (state.status !== 'active') return { id: r.grantId, status: state.status }
  const g = state.grant
  return { id: g.id, status: 'active', starts_at: iso(g.startsAt), expires_at: iso(g.expiresAt), ...(g.claim !== undefined ? { claim: claimView(g.claim) } : {}) }
}

function dropUndefined(o: Record<string, unknown>): Record<string, unknown> {
  for (const k of Object.keys(o)) if (o[k] === undefined) delete o[k]
  return o
}

/**
 * Control-plane API errors: one table, code → status. Body shape as on the data plane:
 * `{"error": {"code", "message", "request_id", "details"?}}`.
 */
import type { ServerResponse } from 'node:http'

export const API_ERRORS = Object.freeze({
  unauthorized: { status: 401, message: 'A valid operator bearer token is required.' },
  host_not_allowed: { status: 403, message: 'Without an operator token the control plane answers only to loopback host names (localhost, 127.0.0.1, [::1]).' },
  not_found: { status: 404, message: 'No such endpoint.' },
  method_not_allowed: { status: 405, message: 'Method not allowed on this endpoint.' },
  invalid_request: { status: 400, message: 'The request body is invalid.' },
  duration_unit_required: { status: 400, message: 'A duration needs a unit, e.g. "60s", "15m" or "1h": a bare number is ambiguous.' },
  unsupported_media_type: { status: 415, message: 'Send application/json.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  unknown_resource: { status: 422, message: 'No resource with this id exists in the policy.' },
  invalid_scope: { status: 422, message: 'A scope is not a valid `METHODS PATH` pattern.' },
  ttl_exceeds_max: { status: 422, message: "The ttl exceeds the resource's max_ttl." },
  grant_not_found: { status: 404, message: 'No active grant with this id (it may have expired).' },
  grant_already_revoked: { status: 409, message: 'The grant was revoked already: the details say by whom and when.' },
  credentials_invalid: { status: 401, message: 'The bearer credential (a sub-processor assertion or an approver ID token) is not valid.' },
  reauthentication_required: { status: 401, message: 'The ID token proves a sign-in older than the configured max_age: sign in again.' },
  assertion_replayed: { status: 401, message: 'This assertion was already used: sign a new one, with a fresh jti, for every call.' },
  request_not_found: { status: 404, message: 'No access request with this id (or not yours).' },
  requester_only: { status: 403, message: 'Only the requesting sub-processor may do this.' },
  approver_only: { status: 403, message: 'Only an approver may do this.' },
  not_an_approver: { status: 403, message: "You are not an approver of this request's current stage." },
  self_approval: { status: 403, message: 'The requester can never approve, deny or review its own request.' },
  mfa_required: { status: 403, message: "Proof of a second factor is required: an ID token whose amr/acr meets the policy's mfa rule, or a local approver's TOTP code." },
  mfa_invalid: { status: 403, message: 'The TOTP code is wrong, out of its time window, or already used.' },
  mfa_locked: { status: 429, message: 'Too many wrong TOTP codes for this approver: try again later.' },
  already_approved: { status: 409, message: 'You have already approved this request: one person counts once.' },
  wrong_state: { status: 409, message: 'The request is not in a state that allows this.' },
  request_expired: { status: 409, message: 'The request expired before a decision.' },
  not_entitled: { status: 403, message: 'The sub-processor has no entitlement for this resource.' },
  scope_not_entitled: { status: 403, message: 'A requested scope is wider than the entitlement allows.' },
  duration_exceeds_max: { status: 403, message: "The duration exceeds the entitlement's maximum." },
  after_contract_end: { status: 403, message: "The sub-processor's contract has ended (or ends before the grant could start)." },
  outside_window: { status: 403, message: "The entitlement's time window does not include now." },
  ticket_required: { status: 422, message: 'The entitlement requires a ticket reference.' },
  break_glass_not_allowed: { status: 403, message: 'No break-glass entitlement covers this request.' },
  store_unavailable: { status: 503, message: 'The store did not answer in time; retry. A change it answered too late for may still land: it is audited if it does.' },
  internal_error: { status: 500, message: 'Internal error.' },
} as const)

export type ApiErrorCode = keyof typeof API_ERRORS

/** Refusals whose `admin.denied` audit event has been written where they arose (no second one). */
export const auditedRefusals = new WeakSet<ApiError>()

export class ApiError extends Error {
  override readonly name = 'ApiError'
  constructor(
    readonly code: ApiErrorCode,
    readonly details?: readonly string[],
    message?: string,
  ) {
    super(message ?? API_ERRORS[code].message)
  }
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  })
  res.end(text)
}

export function sendError(res: ServerResponse, err: ApiError, requestId: string): void {
  const info = API_ERRORS[err.code]
  const headers: Record<string, string> = { 'x-request-id': requestId }
  if (err.code === 'unauthorized') headers['www-authenticate'] = 'Bearer realm="jitgate-admin"'
  sendJson(
    res,
    info.status,
    { error: { code: err.code, message: err.message, request_id: requestId, ...(err.details ? { details: err.details } : {}) } },
    headers,
  )
}

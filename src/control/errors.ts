/**
 * Control-plane API errors: one table, code → status. Body shape as on the data plane:
 * `{"error": {"code", "message", "request_id", "details"?}}`.
 */
import type { ServerResponse } from 'node:http'

export const API_ERRORS = Object.freeze({
  unauthorized: { status: 401, message: 'A valid operator bearer token is required.' },
  not_found: { status: 404, message: 'No such endpoint.' },
  method_not_allowed: { status: 405, message: 'Method not allowed on this endpoint.' },
  invalid_request: { status: 400, message: 'The request body is invalid.' },
  unsupported_media_type: { status: 415, message: 'Send application/json.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  unknown_resource: { status: 422, message: 'No resource with this id exists in the policy.' },
  invalid_scope: { status: 422, message: 'A scope is not a valid `METHODS PATH` pattern.' },
  ttl_exceeds_max: { status: 422, message: "The ttl exceeds the resource's max_ttl." },
  grant_not_found: { status: 404, message: 'No active grant with this id (it may have expired or been revoked already).' },
  store_unavailable: { status: 503, message: 'The grant store is unreachable; nothing was changed.' },
  internal_error: { status: 500, message: 'Internal error.' },
} as const)

export type ApiErrorCode = keyof typeof API_ERRORS

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

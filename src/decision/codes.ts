/**
 * The data plane's deny codes: one table, shared by the response body, the audit event
 * (`code`) and the metric label. Codes are a public contract (DESIGN.md): never rename one.
 */

/**
 * The `WWW-Authenticate: Bearer` challenge of a 401 (RFC 6750 §3): its `error` attribute, or
 * `none` for a request that carried no credentials at all, which §3.1 says gets no error code.
 */
export type BearerError = 'invalid_request' | 'invalid_token' | 'none'

export interface DenyCodeInfo {
  readonly status: number
  readonly message: string
  /** Set for 401s: the challenge's `error` attribute (`none`: a bare challenge). */
  readonly bearerError?: BearerError
}

export const DENY_CODES = Object.freeze({
  route_not_found: { status: 404, message: 'No resource is served at this host and path.' },
  path_rejected: { status: 400, message: 'The request path cannot be normalised safely.' },
  token_missing: {
    status: 401,
    message: 'A JIT token is required in the Authorization header (Bearer scheme).',
    bearerError: 'none',
  },
  token_malformed: {
    status: 401,
    message: 'The Authorization header does not carry exactly one well-formed JIT token.',
    bearerError: 'invalid_request',
  },
  token_invalid: {
    status: 401,
    message: 'The JIT token failed verification (signature, algorithm, key, issuer, audience or type).',
    bearerError: 'invalid_token',
  },
  token_expired: { status: 401, message: 'The JIT token has expired.', bearerError: 'invalid_token' },
  token_not_yet_valid: {
    status: 401,
    message: 'The JIT token is not valid yet (nbf).',
    bearerError: 'invalid_token',
  },
  grant_not_found: { status: 403, message: 'No live grant exists for this token.' },
  grant_revoked: { status: 403, message: 'The grant for this token was revoked.' },
  grant_mismatch: { status: 403, message: "The grant's subject or resource differs from the token's." },
  scope_denied: { status: 403, message: "The method or path is outside the grant's scopes." },
  grant_not_entitled: {
    status: 403,
    message: 'The policy in force no longer entitles this grant (sub-processor, entitlement or scope removed, or contract ended).',
  },
  outside_window: { status: 403, message: "The request is outside the entitlement's time window." },
  websocket_not_allowed: { status: 403, message: 'This resource does not accept WebSocket connections.' },
  upgrade_not_supported: { status: 400, message: 'Only WebSocket upgrades (GET with Upgrade: websocket) are supported.' },
  connect_not_supported: { status: 405, message: 'CONNECT is not supported: jitgate is a reverse proxy, not a forward proxy.' },
  request_header_too_large: {
    status: 431,
    message: 'The request line and headers exceed the size the gateway accepts.',
  },
  malformed_request: { status: 400, message: 'The request is not well-formed HTTP/1.1.' },
  expectation_failed: { status: 417, message: 'The only expectation the gateway meets is Expect: 100-continue.' },
  too_many_requests: { status: 429, message: 'This grant has too many requests in flight; retry once some have finished.' },
  store_unavailable: {
    status: 503,
    message: 'The grant store did not answer in time; access is denied until it does.',
  },
  upstream_unavailable: { status: 502, message: 'The upstream service could not be reached.' },
  upstream_timeout: { status: 504, message: 'The upstream service did not answer in time.' },
  request_timeout: { status: 408, message: 'The client sent none of its request body for too long; the request was dropped.' },
  // nginx's convention: the client went away before the response was complete (audit/metrics only).
  client_aborted: { status: 499, message: 'The client closed the connection before the response was complete.' },
  internal_error: { status: 500, message: 'The gateway failed to decide; the request was not forwarded.' },
} satisfies Record<string, DenyCodeInfo>)

export type DenyCode = keyof typeof DENY_CODES

export const DENY_CODE_LIST = Object.freeze(Object.keys(DENY_CODES) as DenyCode[])

export function denyInfo(code: DenyCode): DenyCodeInfo {
  return DENY_CODES[code]
}

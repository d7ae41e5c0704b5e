/**
 * The approvers' console's client for the control-plane JSON API. Plain ESM without the DOM, so
 * the browser (app.js) and the tests under Node make the very same calls: give it a `fetch`.
 *
 * Credentials are the ones approvers already use (README, "Who is calling"):
 * - `{ kind: 'oidc', idToken }`: the approver's OIDC ID token as the bearer; MFA comes from its
 *   `amr`/`acr`, so no TOTP code is sent;
 * - `{ kind: 'local', approver, operatorToken? }`: the operator credential (the admin token, or
 *   none on a loopback control plane without one), `X-Jitgate-Approver`, and on each action the
 *   approver's current TOTP code in `X-Jitgate-Totp`. Reads send no code: a code works once.
 *
 * The credential lives in this closure only: never in storage, a cookie, the URL or a log line.
 */

/** A local approver id as the gateway accepts it (src/workflow/auth/caller.ts). */
const LOCAL_APPROVER_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/
const TOTP_CODE = /^[0-9]{6}$/
/** RFC 6750 §2.1 b64token: nothing that could end its header line or add a second credential. */
const B64TOKEN = /^[A-Za-z0-9._~+/-]+=*$/
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
/** The gateway refuses longer ID tokens (src/workflow/auth/oidc.ts). */
const MAX_ID_TOKEN_LENGTH = 16_384

/**
 * An API refusal as the gateway sent it (`code`, `message`, `request_id`, `details`), or a
 * client-side one: `network_error` (no answer), `bad_response` (an answer that is not the API's
 * JSON), `invalid_input` (refused here before anything was sent).
 */
export class ConsoleApiError extends Error {
  /**
   * @param {{ status: number, code: string, message: string, requestId?: string, details?: string[] }} e
   */
  constructor(e) {
    super(e.message)
    this.name = 'ConsoleApiError'
    this.status = e.status
    this.code = e.code
    this.requestId = e.requestId
    this.details = e.details ?? []
  }
}

const invalidInput = (message) => new ConsoleApiError({ status: 0, code: 'invalid_input', message })

/** Checks a credential and returns a frozen copy; throws `invalid_input` naming the problem. */
function checkCredential(c) {
  if (c === null || typeof c !== 'object') throw invalidInput('Sign in with an ID token or as a local approver.')
  if (c.kind === 'oidc') {
    const idToken = String(c.idToken ?? '').trim()
    if (idToken.length > MAX_ID_TOKEN_LENGTH || !COMPACT_JWS.test(idToken)) throw invalidInput('The ID token is not a compact JWT (header.payload.signature).')
    return Object.freeze({ kind: 'oidc', idToken })
  }
  if (c.kind === 'local') {
    const approver = String(c.approver ?? '').trim()
    if (!LOCAL_APPROVER_ID.test(approver)) throw invalidInput('The approver id is a local_approvers id: lowercase letters, digits, ".", "_", "-".')
    const operatorToken = String(c.operatorToken ?? '').trim()
    if (operatorToken !== '' && !B64TOKEN.test(operatorToken)) throw invalidInput('The operator token contains characters a bearer token cannot have.')
    return Object.freeze({ kind: 'local', approver, operatorToken })
  }
  throw invalidInput('Sign in with an ID token or as a local approver.')
}

/**
 * What the console shows about who is signed in. For an ID token, its `sub` and `exp` are read
 * without verification, for display only: the gateway verifies the token on every call.
 * @returns {{ kind: 'oidc' | 'local', name: string, expiresAt?: number }}
 */
function describe(cred) {
  if (cred.kind === 'local') return { kind: 'local', name: cred.approver }
  try {
    const part = cred.idToken.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')
    const bytes = Uint8Array.from(atob(part.padEnd(Math.ceil(part.length / 4) * 4, '=')), (ch) => ch.charCodeAt(0))
    const claims = JSON.parse(new TextDecoder().decode(bytes))
    return {
      kind: 'oidc',
      name: typeof claims.sub === 'string' ? claims.sub : '(no sub)',
      ...(typeof claims.exp === 'number' ? { expiresAt: claims.exp * 1000 } : {}),
    }
  } catch {
    return { kind: 'oidc', name: '(unreadable ID token)' }
  }
}

/**
 * @param {{ credential: object, fetch?: typeof fetch, baseUrl?: string }} options
 *   `baseUrl`: '' in the browser (same origin), the control plane's URL under Node.
 */
export function createApiClient(options) {
  const cred = checkCredential(options.credential)
  const fetchImpl = options.fetch ?? globalThis.fetch.bind(globalThis)
  const baseUrl = options.baseUrl ?? ''
  /** Server clock minus ours, from the last answer's `Date` header: ages and expiries use it. */
  let clockOffsetMs = 0

  function headers(totp) {
    const h = {}
    if (cred.kind === 'oidc') h.authorization = `Bearer ${cred.idToken}`
    else {
      if (cred.operatorToken !== '') h.authorization = `Bearer ${cred.operatorToken}`
      h['x-jitgate-approver'] = cred.approver
      if (totp !== undefined) h['x-jitgate-totp'] = totp
    }
    return h
  }

  /** The TOTP code an action needs (local approvers only), checked so no guess is wasted on a typo. */
  function actionCode(totp) {
    if (cred.kind !== 'local') return undefined
    const code = String(totp ?? '').trim()
    if (!TOTP_CODE.test(code)) throw invalidInput('Enter the 6-digit code your authenticator shows now.')
    return code
  }

  /**
   * One API call: JSON in and out. Resolves with the parsed body (undefined for 204); rejects with
   * ConsoleApiError carrying the API's own code and message.
   */
  async function call(method, path, opts = {}) {
    const init = {
      method,
      headers: headers(opts.totp),
      // Nothing cached, no cookies, no Referer, and no redirect followed with the credential.
      cache: 'no-store',
      credentials: 'omit',
      redirect: 'error',
      referrerPolicy: 'no-referrer',
    }
    if (opts.body !== undefined) {
      init.headers['content-type'] = 'application/json'
      init.body = JSON.stringify(opts.body)
    }
    let res
    try {
      res = await fetchImpl(`${baseUrl}${path}`, init)
    } catch {
      throw new ConsoleApiError({ status: 0, code: 'network_error', message: 'The control plane could not be reached.' })
    }
    const date = Date.parse(res.headers.get('date') ?? '')
    if (!Number.isNaN(date)) clockOffsetMs = date - Date.now()
    const text = await res.text()
    let json
    try {
      json = text === '' ? undefined : JSON.parse(text)
    } catch {
      json = undefined
    }
    if (!res.ok) {
      const e = json !== null && typeof json === 'object' ? json.error : undefined
      if (e !== null && typeof e === 'object' && typeof e.code === 'string') {
        throw new ConsoleApiError({
          status: res.status,
          code: e.code,
          message: typeof e.message === 'string' ? e.message : '',
          ...(typeof e.request_id === 'string' ? { requestId: e.request_id } : {}),
          details: Array.isArray(e.details) ? e.details.map(String) : [],
        })
      }
      throw new ConsoleApiError({ status: res.status, code: 'bad_response', message: `HTTP ${res.status} without an API error body.` })
    }
    if (res.status === 204) return undefined
    if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new ConsoleApiError({ status: res.status, code: 'bad_response', message: 'The answer is not a JSON object.' })
    return json
  }

  const requestPath = (id, action) => `/v1/requests/${encodeURIComponent(id)}${action === undefined ? '' : `/${action}`}`

  async function listRequests(status) {
    const body = await call('GET', `/v1/requests?status=${encodeURIComponent(status)}`)
    return Array.isArray(body.requests) ? body.requests : []
  }

  async function decide(action, id, { comment, totp } = {}) {
    const code = actionCode(totp)
    const text = String(comment ?? '').trim()
    return call('POST', requestPath(id, action), { body: text === '' ? {} : { comment: text }, totp: code })
  }

  return Object.freeze({
    /** True when actions need a TOTP code (local approvers). */
    needsTotp: cred.kind === 'local',
    /** Who is signed in, for display. */
    identity: describe(cred),
    /** Now on the server's clock (ms), as of the last answer. */
    serverNow: () => Date.now() + clockOffsetMs,

    /** Requests by status (`pending`, `approved`, ...), newest first. */
    listRequests,
    /** Requests waiting for a decision, newest first. */
    listPending: () => listRequests('pending'),
    /** One request, with its stages, approvals and (once approved) its grant's state. */
    getRequest(id) {
      return call('GET', requestPath(id))
    },
    /** Approves the request's current stage: `{comment?, totp?}`. Resolves with the request. */
    approve(id, input) {
      return decide('approve', id, input)
    },
    /** Denies the request: `{comment?, totp?}`. Resolves with the request. */
    deny(id, input) {
      return decide('deny', id, input)
    },

    /**
     * The active grants this approver may revoke, soonest expiry first, in one call:
     * `GET /v1/grants` with the approver's credential (no TOTP code: it is a read). They include
     * the grants issued directly by an operator (`POST /v1/grants`) as well as those that came
     * out of access requests, each as the API shows a grant: `id`, `subject`, `resource`,
     * `scopes`, `starts_at`, `expires_at`, `issued_by`, and `reason`, `claim` and
     * `access_request_id` (the request it came out of) when it has them.
     * Never a token.
     */
    async listActiveGrants() {
      const body = await call('GET', '/v1/grants')
      const grants = body.grants
      if (!Array.isArray(grants) || !grants.every((g) => g !== null && typeof g === 'object' && typeof g.id === 'string')) {
        throw new ConsoleApiError({ status: 200, code: 'bad_response', message: 'The answer is not a list of grants.' })
      }
      return [...grants].sort((a, b) => Date.parse(a.expires_at) - Date.parse(b.expires_at))
    },

    /**
     * Revokes a grant now, with a reason (and a TOTP code for local approvers), through
     * `DELETE /v1/grants/{id}`: approvers of the grant's entitlement may revoke it there.
     */
    async revokeGrant(grant, { reason, totp } = {}) {
      const text = String(reason ?? '').trim()
      if (text === '') throw invalidInput('A revocation needs a reason.')
      const code = actionCode(totp)
      await call('DELETE', `/v1/grants/${encodeURIComponent(grant.id)}`, { body: { reason: text }, totp: code })
    },
  })
}

/**
 * Who is calling `/v1/requests*`. Three kinds of caller, told apart by their credential:
 *
 * - **Operator**: the control plane's operator credential (the admin token; with none configured,
 *   a call without `Authorization` on the loopback-only listener), exactly as for `/v1/grants`.
 * - **Local approver**: an operator call that also names a `local_approvers` id in
 *   `X-Jitgate-Approver` and, to act (approve, deny, revoke, review), proves it with that
 *   approver's current TOTP code in `X-Jitgate-Totp`. The operator credential is the first factor
 *   (who may reach the operator API at all), the TOTP code the second one and the proof of which
 *   approver this is: without alice's authenticator nobody can approve as alice. A code is accepted
 *   once (per approver and time step), on every replica.
 * - **Sub-processor** or **OIDC approver**: `Authorization: Bearer <JWT>`. A JWT whose `iss` is the
 *   configured OIDC issuer is an approver's ID token (oidc.ts); any other is a sub-processor
 *   assertion (assertion.ts). Both are verified in full before anything is believed.
 */
import type { IncomingMessage } from 'node:http'
import { decodeJwt } from 'jose'
import type { Principals } from '../../policy/principals.js'
import { extractBearer } from '../../authn/token.js'
import { ApiError } from '../../control/errors.js'
import type { AssertionVerifier } from './assertion.js'
import type { OidcVerifier } from './oidc.js'
import { localApprover, oidcApprover, type Approver } from './approvers.js'
import { matchTotp, TOTP_REUSE_MS } from './totp.js'

export type Caller =
  | { readonly kind: 'subprocessor'; readonly id: string }
  | { readonly kind: 'approver'; readonly approver: Approver }
  | { readonly kind: 'operator'; readonly actor: string }

export interface CallerAuthOptions {
  readonly principals: () => Principals
  readonly assertions: AssertionVerifier
  readonly oidc: OidcVerifier | undefined
  readonly claimOnce: (key: string, ttlMs: number) => Promise<boolean>
  /** The shared attempt counter (RequestStore.countAttempt / clearAttempts): TOTP lockout. */
  readonly attempts: {
    count(key: string, windowMs: number): Promise<number>
    clear(key: string): Promise<void>
  }
  readonly now?: () => number
}

/** The operator actor when the call carries the operator credential (see above), else undefined. */
export type OperatorCheck = (req: IncomingMessage) => string | undefined

export interface CallerAuth {
  /** The verified caller; rejects with ApiError (`credentials_invalid`, `assertion_replayed`, `reauthentication_required`, `mfa_invalid`, `mfa_locked`). */
  authenticate(req: IncomingMessage, operator: OperatorCheck): Promise<Caller>
}

const LOCAL_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/

/**
 * Guessing bound: a 6-digit code matches by chance about 3 times in a million (±1 step), so
 * unlimited tries would let anyone holding the operator credential approve as any approver in
 * minutes. After this many wrong codes in the window the approver is locked until it ends.
 *
 * Counted in the shared store (Redis when configured), so the bound holds for the whole
 * deployment, not per replica: spreading guesses over N replicas gains nothing. Each attempt is
 * counted *before* its code is checked and the count is cleared on a right code, so concurrent
 * guesses cannot slip past the bound between a check and its count. Without the store there is no
 * count, and so no attempt: the call fails closed (`store_unavailable`).
 */
export const MAX_TOTP_FAILURES = 5
export const TOTP_LOCK_WINDOW_MS = 5 * 60_000

export function createCallerAuth(opts: CallerAuthOptions): CallerAuth {
  const now = opts.now ?? Date.now
  const invalid = (detail: string): ApiError => new ApiError('credentials_invalid', [detail])

  async function asLocalApprover(req: IncomingMessage, name: string): Promise<Caller> {
    const id = name.trim()
    const local = LOCAL_ID.test(id) ? opts.principals().localApprovers.get(id) : undefined
    if (local === undefined) throw invalid(`X-Jitgate-Approver: "${id.slice(0, 64)}" is not a local approver`)
    const code = header(req, 'x-jitgate-totp')
    if (code === undefined) return { kind: 'approver', approver: localApprover(id, false) }
    const attemptKey = `totp:${id}`
    if ((await opts.attempts.count(attemptKey, TOTP_LOCK_WINDOW_MS)) > MAX_TOTP_FAILURES) throw new ApiError('mfa_locked')
    const step = matchTotp(local.totpSecret, code.trim(), now())
    if (step === undefined) throw new ApiError('mfa_invalid')
    await opts.attempts.clear(attemptKey)
    // Burned on every replica for as long as the step could still be accepted.
    if (!(await opts.claimOnce(`totp:${id}:${step}`, TOTP_REUSE_MS))) throw new ApiError('mfa_invalid', ['this code was already used: wait for the next one'])
    return { kind: 'approver', approver: localApprover(id, true) }
  }

  return {
    async authenticate(req, operatorOf) {
      const operator = operatorOf(req)
      if (operator !== undefined) {
        const name = header(req, 'x-jitgate-approver')
        return name === undefined ? { kind: 'operator', actor: operator } : asLocalApprover(req, name)
      }
      const bearer = extractBearer(req.rawHeaders)
      if (!bearer.ok) throw invalid('send a sub-processor assertion, an approver ID token, or the operator token')
      let iss: unknown
      try {
        iss = decodeJwt(bearer.token).iss
      } catch {
        throw invalid('the bearer token is neither the operator token nor a JWT')
      }
      if (opts.oidc !== undefined && iss === opts.oidc.issuer) {
        const result = await opts.oidc.verify(bearer.token)
        if (!result.ok) throw result.stale === true ? new ApiError('reauthentication_required', [result.detail]) : invalid(`ID token: ${result.detail}`)
        return { kind: 'approver', approver: oidcApprover(result.identity, opts.principals().mfa) }
      }
      const result = await opts.assertions.verify(bearer.token)
      if (!result.ok) throw new ApiError(result.code, [result.detail])
      return { kind: 'subprocessor', id: result.subject }
    },
  }
}

/** A header's value. Node joins a repeated one with ", ", which no approver id or code matches. */
function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return typeof v === 'string' ? v : undefined
}

/**
 * Sub-processor authentication on the control plane: a short-lived JWT the sub-processor signs
 * with a key registered for it in policy, sent as `Authorization: Bearer <assertion>` (the shape
 * of RFC 7523 client assertions):
 *
 * - `iss` = `sub` = the sub-processor's id; the key is looked up by `iss`;
 * - `aud` = the gateway's issuer name (`tokens.issuer`, default `jitgate`), so an assertion made
 *   for another service is useless here;
 * - `exp` at most 5 minutes ahead (plus the clock tolerance): a leaked assertion is short-lived;
 * - `jti`: single use. It is remembered in the request store until `exp`, on every replica, so a
 *   replay is refused with `assertion_replayed` while the assertion would otherwise still be valid.
 *
 * Allowed algorithms: EdDSA/Ed25519, ES256, ES384, PS256, RS256 (never `none` or a shared secret).
 * When the assertion's header carries a `kid`, the registered key must carry the same `kid`.
 */
import { decodeJwt, errors as joseErrors, type JWTVerifyGetKey } from 'jose'
import type { Principals, Subprocessor } from '../../policy/principals.js'
import { describeJoseError, keyResolver, verifyJwt } from './keys.js'

export const ASSERTION_ALGORITHMS = ['EdDSA', 'Ed25519', 'ES256', 'ES384', 'PS256', 'RS256']
/** The longest an assertion may live from now (`exp` bound). */
export const ASSERTION_MAX_LIFETIME_S = 300
const MAX_ASSERTION_LENGTH = 8192
const MAX_JTI_LENGTH = 256
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/

export type AssertionResult =
  | { readonly ok: true; readonly subject: string }
  | { readonly ok: false; readonly code: 'credentials_invalid' | 'assertion_replayed'; readonly detail: string }

export interface AssertionVerifierOptions {
  readonly principals: () => Principals
  /** The required `aud`. */
  readonly audience: string
  readonly clockToleranceS: number
  /** Single-use claim in the shared store (RequestStore.claimOnce). */
  readonly claimOnce: (key: string, ttlMs: number) => Promise<boolean>
  readonly now?: () => number
}

export interface AssertionVerifier {
  /** Verifies an assertion and burns its `jti`. Never throws for a bad assertion; store faults reject. */
  verify(token: string): Promise<AssertionResult>
}

export function createAssertionVerifier(opts: AssertionVerifierOptions): AssertionVerifier {
  const now = opts.now ?? Date.now
  // Per compiled sub-processor, so a policy reload with new keys takes effect at once.
  const resolvers = new WeakMap<Subprocessor, JWTVerifyGetKey>()
  const resolverOf = (sp: Subprocessor): JWTVerifyGetKey => {
    let r = resolvers.get(sp)
    if (r === undefined) resolvers.set(sp, (r = keyResolver(sp.keys)))
    return r
  }
  const invalid = (detail: string): AssertionResult => ({ ok: false, code: 'credentials_invalid', detail })

  return {
    async verify(token) {
      if (token.length > MAX_ASSERTION_LENGTH || !COMPACT_JWS.test(token)) return invalid('not a compact JWS')
      let iss: unknown
      try {
        iss = decodeJwt(token).iss
      } catch {
        return invalid('not a well-formed JWT')
      }
      // `iss` only picks the keys to try; nothing is trusted before the signature is checked.
      const sp = typeof iss === 'string' ? opts.principals().subprocessors.get(iss) : undefined
      if (sp === undefined) return invalid('iss is not a registered sub-processor')
      const t = now()
      let payload
      try {
        payload = await verifyJwt(token, resolverOf(sp), {
          algorithms: ASSERTION_ALGORITHMS,
          issuer: sp.id,
          subject: sp.id,
          audience: opts.audience,
          clockTolerance: opts.clockToleranceS,
          currentDate: new Date(t),
          requiredClaims: ['exp', 'jti'],
        })
      } catch (err) {
        if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud') {
          return invalid(`aud must be "${opts.audience}"`)
        }
        return invalid(describeJoseError(err))
      }
      const exp = payload.exp as number
      if (exp * 1000 > t + (ASSERTION_MAX_LIFETIME_S + opts.clockToleranceS) * 1000) {
        return invalid(`exp is more than ${ASSERTION_MAX_LIFETIME_S} seconds ahead`)
      }
      const jti = payload.jti
      if (typeof jti !== 'string' || jti.length === 0 || jti.length > MAX_JTI_LENGTH) return invalid('jti must be a string of 1 to 256 characters')
      // Remembered for as long as the assertion could pass the checks above.
      const ttlMs = exp * 1000 + opts.clockToleranceS * 1000 - t
      if (!(await opts.claimOnce(`jti:${sp.id}:${jti}`, ttlMs))) {
        return { ok: false, code: 'assertion_replayed', detail: 'this assertion (jti) was already used' }
      }
      return { ok: true, subject: sp.id }
    },
  }
}

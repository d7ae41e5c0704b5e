/**
 * Approvers authenticated by the organisation's OpenID Connect provider: the approver sends its ID
 * token as `Authorization: Bearer <id token>`. The token is checked as OIDC Core §3.1.3.7 says for
 * a relying party: signature by a key from the configured JWKS URL, `iss` exactly the configured
 * issuer, `aud` containing the configured client id (and `azp` equal to it when there are several
 * audiences), `exp`/`iat` present and `exp` not passed. On top, the sign-in the token proves must be
 * recent (§3.1.2.1 `max_age`, checked by the relying party as §3.1.3.7 item 11 allows): its
 * `auth_time`, or its `iat` when the provider sends no `auth_time`, at most `maxAgeMs` ago. A
 * provider renews ID tokens silently from a long-lived session; an approval should come from
 * someone who signed in recently, so an older sign-in is refused with `reauthentication_required`.
 *
 * What the token yields is an identity, not a permission: the groups claim and the `amr`/`acr`
 * claims are read here, and policy decides (approvers.ts) what they allow.
 */
import type { JWTPayload } from 'jose'
import { formatDuration } from '../../util/duration.js'
import { describeJoseError, remoteKeySet, verifyJwt } from './keys.js'

/** Asymmetric algorithms only: an ID token signed with the client secret (HS256) is not accepted. */
export const OIDC_ALGORITHMS = ['RS256', 'PS256', 'ES256', 'ES384', 'EdDSA', 'Ed25519']
const MAX_ID_TOKEN_LENGTH = 16_384

export interface OidcSettings {
  readonly issuer: string
  readonly jwksUrl: string
  /** The gateway's client id at the provider: the required `aud`. */
  readonly audience: string
  /** The claim holding the user's groups (an array of strings, or one string). */
  readonly groupsClaim: string
  readonly clockToleranceS: number
  /** The oldest sign-in (`auth_time`, else `iat`) accepted, in ms. */
  readonly maxAgeMs: number
}

export interface OidcIdentity {
  readonly sub: string
  /** Only when the provider says it is verified (`email_verified: true`). */
  readonly email: string | undefined
  readonly groups: readonly string[]
  readonly amr: readonly string[]
  readonly acr: string | undefined
}

export type OidcResult =
  | { readonly ok: true; readonly identity: OidcIdentity }
  /** `stale`: valid, but the sign-in behind it is older than `maxAgeMs`: sign in again. */
  | { readonly ok: false; readonly detail: string; readonly stale?: true }

export interface OidcVerifier {
  readonly issuer: string
  verify(token: string): Promise<OidcResult>
}

export function createOidcVerifier(settings: OidcSettings, now: () => number = Date.now): OidcVerifier {
  const keys = remoteKeySet(settings.jwksUrl)
  return {
    issuer: settings.issuer,
    async verify(token) {
      if (token.length > MAX_ID_TOKEN_LENGTH) return { ok: false, detail: 'the ID token is too long' }
      let payload: JWTPayload
      try {
        payload = await verifyJwt(token, keys, {
          algorithms: OIDC_ALGORITHMS,
          issuer: settings.issuer,
          audience: settings.audience,
          clockTolerance: settings.clockToleranceS,
          currentDate: new Date(now()),
          requiredClaims: ['exp', 'iat', 'sub'],
        })
      } catch (err) {
        return { ok: false, detail: describeJoseError(err) }
      }
      if (Array.isArray(payload.aud) && payload.aud.length > 1 && payload.azp !== settings.audience) {
        return { ok: false, detail: 'azp must be the gateway client id when the token has several audiences' }
      }
      const authTime = payload.auth_time ?? payload.iat
      if (typeof authTime !== 'number' || !Number.isFinite(authTime)) return { ok: false, detail: 'auth_time must be a number (seconds)' }
      const ageMs = now() - authTime * 1000
      if (ageMs > settings.maxAgeMs + settings.clockToleranceS * 1000) {
        const claim = payload.auth_time === undefined ? 'iat' : 'auth_time'
        return { ok: false, stale: true, detail: `the sign-in (${claim}) is ${formatDuration(Math.floor(ageMs / 1000) * 1000)} old, more than max_age ${formatDuration(settings.maxAgeMs)}: sign in again` }
      }
      const sub = payload.sub as string
      const email = payload.email_verified === true && typeof payload.email === 'string' ? payload.email : undefined
      return {
        ok: true,
        identity: {
          sub,
          email,
          groups: strings(payload[settings.groupsClaim]),
          amr: strings(payload.amr),
          acr: typeof payload.acr === 'string' ? payload.acr : undefined,
        },
      }
    },
  }
}

/** A claim as a list of strings: an array's string members, or a lone string; anything else is none. */
function strings(value: unknown): string[] {
  if (typeof value === 'string') return [value]
  return Array.isArray(value) ? value.filter((v): v is string => typeof v === 'string') : []
}

/**
 * JIT tokens: compact JWS (EdDSA), header `typ: jit+jwt` and `kid`; claims iss, sub (sub-processor),
 * aud (resource), jti (grant id), iat, nbf, exp (= grant expiry; for a grant still waiting for
 * its first use, the latest it could end: see Grant.claim). A token alone never suffices:
 * the data plane also loads the live grant named by `jti` on every request.
 */
import { SignJWT, jwtVerify, createLocalJWKSet, errors as joseErrors, type JWTPayload } from 'jose'
import { TOKEN_ALG, type KeyRing } from './keys.js'
import { isUnclaimed, type Grant, type GrantClaim } from '../grants/types.js'

export const TOKEN_TYP = 'jit+jwt'

/** The claims the data plane relies on, after verification. */
export interface TokenClaims {
  readonly sub: string
  readonly jti: string
  readonly aud: string
  /** Epoch seconds. */
  readonly exp: number
  readonly nbf: number | undefined
}

export type TokenFailureCode = 'token_malformed' | 'token_invalid' | 'token_expired' | 'token_not_yet_valid'

export type VerifyResult =
  | { readonly ok: true; readonly claims: TokenClaims }
  | {
      readonly ok: false
      readonly code: TokenFailureCode
      readonly detail: string
      /**
       * Whose token it is, when its signature did verify and only a claim failed (expired, not yet
       * valid, another audience): the audit names the vendor and the grant of a refused call.
       */
      readonly who?: { readonly sub: string; readonly jti: string }
    }

export interface TokenIssuer {
  issue(grant: Grant): Promise<string>
}

export function createTokenIssuer(keys: KeyRing, issuer: string): TokenIssuer {
  const header = Object.freeze({ alg: TOKEN_ALG, typ: TOKEN_TYP, kid: keys.signing.kid })
  return {
    issue(grant) {
      return new SignJWT({})
        .setProtectedHeader(header)
        .setIssuer(issuer)
        .setSubject(grant.subject)
        .setAudience(grant.resource)
        .setJti(grant.id)
        .setIssuedAt(Math.floor(grant.createdAt / 1000))
        .setNotBefore(Math.floor(grant.startsAt / 1000))
        // An unclaimed grant's token must outlast a first use late in its claim-by window by the
        // full duration: its exp is the latest the grant could end. The live grant still decides.
        .setExpirationTime(Math.floor((isUnclaimed(grant) ? (grant.claim as GrantClaim).notAfter : grant.expiresAt) / 1000))
        .sign(keys.signing.key)
    },
  }
}

export interface TokenVerifierOptions {
  readonly keys: KeyRing
  readonly issuer: string
  readonly clockToleranceS: number
  /** Verified-token cache entries; 0 disables the cache. */
  readonly cacheSize: number
  readonly now?: () => number
}

export interface TokenVerifier {
  /** Verifies a token for the resource it is presented to (its `aud`). Never throws. */
  verify(token: string, audience: string): Promise<VerifyResult>
  /**
   * The verdict on a token already verified, from the cache, without waiting: what `verify`
   * would answer for it. Undefined when the token is not cached (then call `verify`).
   */
  verifyCached(token: string, audience: string): VerifyResult | undefined
}

/** base64url segments of a compact JWS: header.payload.signature, nothing else. */
const COMPACT_JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const MAX_TOKEN_LENGTH = 4096

/**
 * Verification pins the algorithm, `typ`, issuer and the required claims. Signature checks cost
 * several hundred µs, so verified tokens are cached by their exact text (bounded, evicting the
 * oldest); a cache hit re-checks time bounds and audience, which are cheap.
 */
export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const jwks = createLocalJWKSet({ keys: opts.keys.jwks.keys.map((k) => ({ ...k })) })
  const now = opts.now ?? Date.now
  const toleranceMs = opts.clockToleranceS * 1000
  const cache = new Map<string, CachedClaims>()
  const verifyOptions = {
    algorithms: [TOKEN_ALG],
    typ: TOKEN_TYP,
    issuer: opts.issuer,
    clockTolerance: opts.clockToleranceS,
    requiredClaims: ['exp', 'jti', 'sub', 'aud'],
  }

  /** The verdict on verified claims for a request now: one allocation-free comparison on success. */
  function checkTimesAndAudience(claims: CachedClaims, audience: string, t: number): VerifyResult {
    if (claims.exp * 1000 + toleranceMs <= t) return { ok: false, code: 'token_expired', detail: 'exp has passed', who: whoOfClaims(claims) }
    if (claims.nbf !== undefined && claims.nbf * 1000 - toleranceMs > t) {
      return { ok: false, code: 'token_not_yet_valid', detail: 'nbf not reached', who: whoOfClaims(claims) }
    }
    if (claims.aud !== audience) return { ok: false, code: 'token_invalid', detail: 'audience does not match the resource', who: whoOfClaims(claims) }
    return claims.verdict
  }

  function verifyCached(token: string, audience: string): VerifyResult | undefined {
    const cached = cache.get(token)
    if (cached === undefined) return undefined
    const r = checkTimesAndAudience(cached, audience, now())
    if (!r.ok && r.code === 'token_expired') cache.delete(token)
    return r
  }

  return {
    verifyCached,
    async verify(token, audience) {
      const hit = verifyCached(token, audience)
      if (hit !== undefined) return hit
      const t = now()
      if (token.length > MAX_TOKEN_LENGTH || !COMPACT_JWS.test(token)) {
        return { ok: false, code: 'token_malformed', detail: 'not a compact JWS' }
      }
      if (!isCanonical(token)) {
        // base64url leaves the last character's low bits unused and decoders ignore them: without
        // this check one token had 16 spellings, each its own cache entry and each missed by a
        // filter looking for the one issued.
        return { ok: false, code: 'token_malformed', detail: 'not canonical base64url' }
      }
      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(token, jwks, { ...verifyOptions, currentDate: new Date(t) }))
      } catch (err) {
        return mapJoseError(err)
      }
      const aud = payload.aud
      if (typeof aud !== 'string' || typeof payload.sub !== 'string' || typeof payload.jti !== 'string') {
        // A JIT token names exactly one resource; an audience array is not ours.
        return { ok: false, code: 'token_invalid', detail: 'sub, jti and a single aud are required' }
      }
      const claims: TokenClaims = Object.freeze({
        sub: payload.sub,
        jti: payload.jti,
        aud,
        exp: payload.exp as number,
        nbf: payload.nbf,
      })
      const entry: CachedClaims = { ...claims, verdict: Object.freeze({ ok: true as const, claims }) }
      if (opts.cacheSize > 0) {
        if (cache.size >= opts.cacheSize) cache.delete(cache.keys().next().value as string)
        cache.set(token, entry)
      }
      return checkTimesAndAudience(entry, audience, t)
    },
  }
}

/** Verified claims as cached, with the success verdict every request presenting them shares. */
interface CachedClaims extends TokenClaims {
  readonly verdict: VerifyResult & { ok: true }
}

function whoOfClaims(claims: TokenClaims): { sub: string; jti: string } {
  return { sub: claims.sub, jti: claims.jti }
}

function whoOf(payload: JWTPayload): { who?: { sub: string; jti: string } } {
  return typeof payload.sub === 'string' && typeof payload.jti === 'string' ? { who: { sub: payload.sub, jti: payload.jti } } : {}
}

/**
 * True when each of the three segments ends in a character whose unused low bits are zero
 * (RFC 4648 §3.5: canonical encoding), as every encoder writes it.
 */
function isCanonical(token: string): boolean {
  let start = 0
  for (let i = 0; i < 3; i++) {
    const dot = token.indexOf('.', start)
    const end = dot === -1 ? token.length : dot
    const length = end - start
    if (length > 0) {
      const rest = length % 4
      if (rest === 1) return false
      if (rest !== 0) {
        const value = B64URL.indexOf(token.charAt(end - 1))
        if ((value & (rest === 2 ? 0x0f : 0x03)) !== 0) return false
      }
    }
    start = end + 1
  }
  return true
}

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

function mapJoseError(err: unknown): VerifyResult {
  // jose checks claims only once the signature verified: their payload is the issuer's own.
  if (err instanceof joseErrors.JWTExpired) return { ok: false, code: 'token_expired', detail: 'exp has passed', ...whoOf(err.payload) }
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === 'nbf') return { ok: false, code: 'token_not_yet_valid', detail: 'nbf not reached', ...whoOf(err.payload) }
    return { ok: false, code: 'token_invalid', detail: `${err.claim} check failed`, ...whoOf(err.payload) }
  }
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) {
    return { ok: false, code: 'token_malformed', detail: 'not a well-formed JWT' }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return { ok: false, code: 'token_invalid', detail: 'algorithm not allowed' }
  if (err instanceof joseErrors.JWKSNoMatchingKey) return { ok: false, code: 'token_invalid', detail: 'unknown signing key' }
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return { ok: false, code: 'token_invalid', detail: 'ambiguous signing key' }
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) {
    return { ok: false, code: 'token_invalid', detail: 'signature verification failed' }
  }
  return { ok: false, code: 'token_invalid', detail: 'verification failed' }
}

/**
 * The request's one `Authorization` value, `undefined` without one, or `null` when it carries
 * several: read from the raw lines, since Node keeps only the first (an empty first line would hide
 * a credential behind it). Several are ambiguous, and every caller refuses them.
 */
export function authorizationOf(rawHeaders: readonly string[]): string | undefined | null {
  let value: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    if (name.length === 13 && name.toLowerCase() === 'authorization') {
      if (value !== undefined) return null
      value = rawHeaders[i + 1] as string
    }
  }
  return value
}

/** RFC 6750 §2.1 `Bearer b64token`, the scheme name case-insensitive (RFC 9110 §11.1). */
const BEARER = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i

/**
 * Extracts the bearer token from the request's raw headers (RFC 6750 §2.1). Only the
 * Authorization header is accepted: query-string and form tokens leak into logs and caches.
 * Node keeps only the first of duplicate Authorization headers, so the raw list is read to
 * refuse two credentials outright.
 */
export function extractBearer(
  rawHeaders: readonly string[],
): { ok: true; token: string } | { ok: false; code: 'token_missing' | 'token_malformed' } {
  const value = authorizationOf(rawHeaders)
  if (value === null) return { ok: false, code: 'token_malformed' }
  if (value === undefined || value.trim() === '') return { ok: false, code: 'token_missing' }
  const m = BEARER.exec(value)
  if (!m) return { ok: false, code: 'token_malformed' }
  return { ok: true, token: m[1] as string }
}

/**
 * The query string (`?…`, or `''`) without any parameter that carries a token's secret part
 * (`secretOf`: its signature), as
 * is or percent-encoded (once or more). The gateway never reads a token from the query, but a
 * client that also put its JIT token there must not leak it to the upstream (and its access logs).
 * The signature is the part that makes a token usable, so a parameter holding it alone is dropped
 * too. Parameters are split on `&` and, inside one that carries it, on `;` (which some servers
 * read as a separator), so `a=1;access_token=T;b=2` keeps `a=1;b=2`. The common case (no token in
 * the query) costs one substring search, and a decoding pass when the query holds a `%`.
 */
export function queryWithoutToken(query: string, secret: string): string {
  if (query === '') return query
  const needle = secret
  if (!carries(query, needle)) return query
  const kept: string[] = []
  for (const param of query.slice(1).split('&')) {
    if (!carries(param, needle)) {
      kept.push(param)
      continue
    }
    const parts = param.split(';').filter((part) => !carries(part, needle))
    if (parts.length > 0) kept.push(parts.join(';'))
  }
  return kept.length === 0 ? '' : `?${kept.join('&')}`
}

/**
 * What makes a token usable, to look for in other places: its signature without the last character
 * (whose low bits base64url leaves unused, so a copy with another last letter reveals it all the same).
 * An unsigned or odd token: the whole of it rather than nothing.
 */
export function secretOf(token: string): string {
  const signature = token.slice(token.lastIndexOf('.') + 1)
  return signature.length >= 17 ? signature.slice(0, -1) : token
}

/**
 * `text` (a request path, for the audit) with every copy of a token's secret part (`secretOf`),
 * and the base64url segments right before it (the rest of a pasted token), replaced by `marker`; the text itself when it holds none, which costs one substring search.
 */
export function withoutSecret(text: string, secret: string, marker: string): string {
  const needle = secret
  let at = text.indexOf(needle)
  if (at === -1) return text
  let out = ''
  let from = 0
  while (at !== -1) {
    let end = at + needle.length
    if (end < text.length && BASE64URL_CHAR.test(text.charAt(end))) end++
    // The whole token, when the copy is one: its header and payload segments go with it.
    let start = at
    while (start > from && TOKEN_CHAR.test(text.charAt(start - 1))) start--
    out += text.slice(from, start) + marker
    from = end
    at = text.indexOf(needle, from)
  }
  return out + text.slice(from)
}

const BASE64URL_CHAR = /[A-Za-z0-9_-]/
const TOKEN_CHAR = /[A-Za-z0-9_.-]/

/** Decoding rounds tried: `%252E` is `.` encoded twice; a third layer is no client's accident. */
const MAX_DECODINGS = 3

function carries(text: string, needle: string): boolean {
  if (text.includes(needle)) return true
  let current = text
  for (let round = 0; round < MAX_DECODINGS && current.includes('%'); round++) {
    const decoded = current.replace(PERCENT_ESCAPE, decodeEscape)
    if (decoded === current) return false
    if (decoded.includes(needle)) return true
    current = decoded
  }
  return false
}

// Byte by byte, never throwing on a malformed or partial UTF-8 sequence: the needle is ASCII.
const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g
function decodeEscape(_: string, hex: string): string {
  return String.fromCharCode(parseInt(hex, 16))
}

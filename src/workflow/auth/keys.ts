/**
 * Key resolution for JWTs signed by someone else (sub-processor assertions, OIDC ID tokens): a
 * resolver per key source, tried in order, and verification that also handles a set holding
 * several keys the token's header could mean (a rotation without `kid`s).
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  jwtVerify,
  type CryptoKey,
  type JWK,
  type JWTPayload,
  type JWTVerifyGetKey,
  type JWTVerifyOptions,
} from 'jose'
import type { KeySourceSpec } from '../../policy/principals.js'

/** Remote JWKS caching: keys are refetched after 10 minutes, or on an unknown `kid` at most every 30 s. */
const REMOTE_JWKS = { cacheMaxAge: 600_000, cooldownDuration: 30_000, timeoutDuration: 5_000 } as const

/**
 * Remote key sets by URL, shared across policy reloads so a reload never refetches every JWKS.
 * Bounded by the number of distinct URLs in policy and config.
 */
const remoteSets = new Map<string, JWTVerifyGetKey>()

/** The (cached) resolver of a JWKS URL. */
export function remoteKeySet(url: string): JWTVerifyGetKey {
  let set = remoteSets.get(url)
  if (set === undefined) {
    set = createRemoteJWKSet(new URL(url), REMOTE_JWKS)
    remoteSets.set(url, set)
  }
  return set
}

/**
 * One resolver over every source of a sub-processor: the inline and file keys as one local set,
 * then each JWKS URL. A source that holds no matching key passes to the next.
 */
export function keyResolver(sources: readonly KeySourceSpec[]): JWTVerifyGetKey {
  const local: JWK[] = []
  const remote: JWTVerifyGetKey[] = []
  for (const s of sources) {
    if (s.kind === 'jwk') local.push({ ...s.jwk })
    else if (s.kind === 'jwks_file') local.push(...s.keys.map((k) => ({ ...k })))
    else remote.push(remoteKeySet(s.url))
  }
  const resolvers = local.length > 0 ? [createLocalJWKSet({ keys: local }), ...remote] : remote
  return async (header, token) => {
    for (const resolve of resolvers) {
      try {
        return await resolve(header, token)
      } catch (err) {
        if (!(err instanceof joseErrors.JWKSNoMatchingKey)) throw err
      }
    }
    throw new joseErrors.JWKSNoMatchingKey()
  }
}

/**
 * jwtVerify with a key resolver; when several keys match the header (no `kid`), each is tried
 * (jose leaves that iteration to the caller).
 */
export async function verifyJwt(token: string, keys: JWTVerifyGetKey, options: JWTVerifyOptions): Promise<JWTPayload> {
  try {
    return (await jwtVerify(token, keys, options)).payload
  } catch (err) {
    if (!(err instanceof joseErrors.JWKSMultipleMatchingKeys)) throw err
    const candidates = err as unknown as AsyncIterable<CryptoKey>
    for await (const key of candidates) {
      try {
        return (await jwtVerify(token, key, options)).payload
      } catch (inner) {
        if (!(inner instanceof joseErrors.JWSSignatureVerificationFailed)) throw inner
      }
    }
    throw new joseErrors.JWSSignatureVerificationFailed()
  }
}

/** A short, safe description of a verification failure (never the token). */
export function describeJoseError(err: unknown): string {
  if (err instanceof joseErrors.JWTExpired) return 'the token has expired'
  if (err instanceof joseErrors.JWTClaimValidationFailed) return `claim "${err.claim}" check failed (${err.reason})`
  if (err instanceof joseErrors.JOSEAlgNotAllowed) return 'signing algorithm not allowed'
  if (err instanceof joseErrors.JWKSNoMatchingKey) return 'no registered key matches the token'
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return 'signature verification failed'
  if (err instanceof joseErrors.JWKSTimeout) return 'the key set could not be fetched in time'
  if (err instanceof joseErrors.JWSInvalid || err instanceof joseErrors.JWTInvalid) return 'not a well-formed JWT'
  if (err instanceof joseErrors.JOSEError) return `verification failed (${err.code})`
  return 'verification failed'
}

/**
 * The per-request decision, as a value: route → token → grant → scope → entitlement (the policy in
 * force still entitles the grant: policy/entitlements.ts) → claim (the first use of a grant with a
 * claim-by window starts its clock). Default deny: every path
 * through this function that is not the final `allow` returns a deny code. Infrastructure faults
 * (the grant store failing or timing out) map to `store_unavailable`, never to allow.
 */
import { normalizePath } from '../policy/path.js'
import { compileScopes, type ScopeSet } from '../policy/scope.js'
import type { Policy, Resource } from '../policy/policy.js'
import { assessGrant, checkGrantUse, type GrantStanding } from '../policy/entitlements.js'
import { extractBearer, queryWithoutToken, secretOf, withoutSecret, type TokenClaims, type TokenVerifier } from '../authn/token.js'
import { REDACTED_TOKEN } from '../audit/line.js'
import { isUnclaimed, type Grant, type GrantLookup, type GrantStore } from '../grants/types.js'
import type { DenyCode } from './codes.js'

export interface DecisionInput {
  readonly method: string
  /** The raw request-target (`req.url`). */
  readonly url: string
  readonly host: string | undefined
  readonly rawHeaders: readonly string[]
  readonly upgrade: boolean
}

export interface Allow {
  readonly allow: true
  readonly resource: Resource
  readonly grant: Grant
  readonly claims: TokenClaims
  /** The normalised path the scope check saw; forwarded as is. */
  readonly path: string
  /** The path for the audit trail when it differs: a copy of the presented token's signature cut out. */
  readonly auditPath?: string
  /** The query string including `?`, or `''`; it never takes part in a decision. */
  readonly query: string
  /** This request was the first use of a grant with a claim-by window: it started the grant's clock. */
  readonly claimed?: true
}

export interface Deny {
  readonly allow: false
  readonly code: DenyCode
  readonly detail: string
  readonly resource?: Resource
  readonly subject?: string
  readonly grantId?: string
  readonly path?: string
  /** As {@link Allow.auditPath}. */
  readonly auditPath?: string
}

export type Decision = Allow | Deny

export interface DeciderDeps {
  /** The live policy (swapped atomically on reload). */
  readonly policy: () => Policy
  readonly verifier: () => TokenVerifier
  readonly store: GrantStore
  readonly now?: () => number
  /** Told about each store failure (metrics, log), with the operation name. */
  readonly onStoreError?: (operation: string, err: unknown) => void
}

export interface Decider {
  decide(input: DecisionInput): Promise<Decision>
  /**
   * Whether the policy in force still lets `grant` make a request it already made (an open
   * WebSocket): the entitlement may have been tightened, the contract or a window enforced at use
   * may have ended since. Undefined while it does. No store call; the grant's own expiry and
   * revocation are tracked apart.
   */
  stillEntitled(grant: Grant, method: string, path: string): Deny | undefined
  /** The grant as the store has it now (rejects with StoreUnavailableError when it cannot say). */
  lookup(grantId: string): Promise<GrantLookup>
}

/** Compiled scope sets are cached by their text: grants share scopes, compiling per request is waste. */
const SCOPE_CACHE_MAX = 10_000
/** Grants assessed against the policy, by grant id; an entry is stale once the policy version changes. */
const STANDING_CACHE_MAX = 10_000

export function createDecider(deps: DeciderDeps): Decider {
  const now = deps.now ?? Date.now
  const scopeCache = new Map<string, ScopeSet>()

  // The same grant object comes back while the store keeps it (memory) or its record is unchanged
  // (Redis): its compiled scopes are then found without joining its scope list into a key.
  const scopesByGrant = new WeakMap<Grant, ScopeSet>()
  function scopesOf(grant: Grant): ScopeSet {
    const known = scopesByGrant.get(grant)
    if (known !== undefined) return known
    const key = grant.scopes.join('\n')
    let set = scopeCache.get(key)
    if (!set) {
      // Scopes were validated when the grant was issued; an invalid one here compiles to nothing.
      set = compileScopes(grant.scopes)
      if (scopeCache.size >= SCOPE_CACHE_MAX) scopeCache.delete(scopeCache.keys().next().value as string)
      scopeCache.set(key, set)
    }
    scopesByGrant.set(grant, set)
    return set
  }

  const standingCache = new Map<string, { readonly version: string; readonly standing: GrantStanding }>()
  function standingOf(policy: Policy, grant: Grant): GrantStanding {
    const cached = standingCache.get(grant.id)
    if (cached !== undefined && cached.version === policy.version) return cached.standing
    const standing = assessGrant(policy, grant)
    if (cached === undefined && standingCache.size >= STANDING_CACHE_MAX) standingCache.delete(standingCache.keys().next().value as string)
    standingCache.set(grant.id, { version: policy.version, standing })
    return standing
  }

  return {
    lookup(grantId) {
      return deps.store.get(grantId)
    },
    stillEntitled(grant, method, path) {
      const use = checkGrantUse(standingOf(deps.policy(), grant), method, path, now())
      return use.ok ? undefined : { allow: false, code: use.code, detail: use.detail, path, subject: grant.subject, grantId: grant.id }
    },
    async decide(input) {
      const q = input.url.indexOf('?')
      const rawPath = q === -1 ? input.url : input.url.slice(0, q)
      const rawQuery = q === -1 ? '' : input.url.slice(q)
      const normalized = normalizePath(rawPath)
      if (!normalized.ok) return { allow: false, code: 'path_rejected', detail: normalized.reason }
      const path = normalized.path

      // RFC 9112 §3.2: a request with more than one Host is refused. Node keeps the first for
      // routing; an upstream or cache in front of it could take another.
      if (hostHeaderCount(input.rawHeaders) > 1) return { allow: false, code: 'malformed_request', detail: 'more than one Host header', path }

      // One policy for the whole decision, even if a reload swaps it meanwhile.
      const policy = deps.policy()
      const resource = policy.matchRoute(input.host, path)
      if (!resource) return { allow: false, code: 'route_not_found', detail: 'no resource matches', path }

      const bearer = extractBearer(input.rawHeaders)
      if (!bearer.ok) return { allow: false, code: bearer.code, detail: 'no usable bearer token', resource, path }
      // A copy of the token's signature in the path (pasted there by mistake) stays out of the audit.
      const secret = secretOf(bearer.token)
      const auditPath = withoutSecret(path, secret, REDACTED_TOKEN)
      const where = auditPath === path ? { resource, path } : { resource, path, auditPath }

      // A token seen before is answered from the verifier's cache without a turn of the event loop.
      const verifier = deps.verifier()
      const verified = verifier.verifyCached(bearer.token, resource.id) ?? (await verifier.verify(bearer.token, resource.id))
      if (!verified.ok) {
        const who = verified.who === undefined ? {} : { subject: verified.who.sub, grantId: verified.who.jti }
        return { allow: false, code: verified.code, detail: verified.detail, ...where, ...who }
      }
      const claims = verified.claims
      // A copy of the token in the query string is never forwarded (the header's is dropped too).
      const query = queryWithoutToken(rawQuery, secret)
      // Denials from here on name the token's subject and grant (built only for a denial).
      const deny = (code: DenyCode, detail: string): Deny => ({ allow: false, code, detail, ...where, subject: claims.sub, grantId: claims.jti })

      let lookup
      try {
        lookup = await deps.store.get(claims.jti)
      } catch (err) {
        deps.onStoreError?.('get', err)
        return deny('store_unavailable', 'grant store unavailable')
      }
      if (lookup.status === 'revoked') return deny('grant_revoked', 'grant revoked')
      if (lookup.status !== 'active') return deny('grant_not_found', 'no live grant')
      const grant = lookup.grant
      const t = now()
      if (grant.expiresAt <= t) return deny('grant_not_found', 'grant expired')
      if (grant.subject !== claims.sub || grant.resource !== resource.id) {
        return deny('grant_mismatch', 'grant subject or resource differs from the token')
      }
      if (!scopesOf(grant).allows(input.method, path)) {
        return deny('scope_denied', `${input.method} outside the grant's scopes`)
      }
      const use = checkGrantUse(standingOf(policy, grant), input.method, path, t)
      if (!use.ok) return deny(use.code, use.detail)
      if (input.upgrade && !resource.websocket) {
        return deny('websocket_not_allowed', 'resource does not accept WebSockets')
      }
      // A grant waiting for its first use: this request, having passed every other check, starts
      // its clock. One more store call, on the first use only; afterwards the grant read above is
      // already claimed and costs nothing extra.
      if (isUnclaimed(grant)) {
        let result
        try {
          result = await deps.store.claim(grant, t)
        } catch (err) {
          deps.onStoreError?.('claim', err)
          return deny('store_unavailable', 'grant store unavailable')
        }
        if (result === null) return deny('grant_not_found', 'the grant ended before its first use')
        return { allow: true, ...where, grant: result.grant, claims, query, ...(result.claimed ? { claimed: true as const } : {}) }
      }
      return auditPath === path ? { allow: true, resource, path, grant, claims, query } : { allow: true, resource, path, auditPath, grant, claims, query }
    },
  }
}

function hostHeaderCount(rawHeaders: readonly string[]): number {
  let n = 0
  for (let i = 0; i < rawHeaders.length; i += 2) {
    const name = rawHeaders[i] as string
    if (name.length === 4 && name.toLowerCase() === 'host') n++
  }
  return n
}

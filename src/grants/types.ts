/**
 * The grant store contract. Two implementations (memory, Redis) pass one shared contract suite
 * (test/grants/contract.ts). Times are epoch milliseconds.
 */

export interface Grant {
  /** Grant id; also the JIT token's `jti`. */
  readonly id: string
  /** Sub-processor id; the token's `sub`. */
  readonly subject: string
  /** Resource id; the token's `aud`. */
  readonly resource: string
  /** Scope patterns, `METHODS PATH` (see policy/scope.ts). */
  readonly scopes: readonly string[]
  readonly startsAt: number
  readonly expiresAt: number
  readonly createdAt: number
  /** Who issued it (operator name, approver id). */
  readonly issuedBy: string
  readonly reason?: string
  readonly policyVersion?: string
  /** The access request (workflow) this grant came out of; absent for one an operator issued directly. */
  readonly accessRequestId?: string
  /**
   * Claim-by window (entitlement `claim_within`): the grant's clock starts at its first use. While
   * `claim.claimedAt` is unset the grant is *unclaimed* and `expiresAt` is `claim.by`: used by
   * then, it is claimed (see GrantStore.claim); unused, it ends.
   */
  readonly claim?: GrantClaim
  /**
   * Which calls wrote this record (see GrantNonces). Set by the store only, from the nonces its
   * callers pass to `create` and `extend`; internal to jitgate: never in an API response, an audit
   * event or a token.
   */
  readonly nonces?: GrantNonces
}

/**
 * The nonces of the writes behind a grant's record, each chosen by the call that wrote it: a caller
 * whose answer was lost (a hung store runs a write after the caller's deadline) reads the grant
 * back and tells its own write from a concurrent call's that wrote the same thing (two replicas
 * issuing one approved request's grant, a retried extension) by its nonce alone.
 */
export interface GrantNonces {
  /** The create that stored the grant (GrantStore.create); kept by every later write. */
  readonly issue?: string
  /** The extend that last moved the expiry (GrantStore.extend), written with that expiry. */
  readonly extend?: string
}

/** `grant` with `nonces` as given (none at all when `nonces` has none), whatever it carried before. */
export function withNonces(grant: Grant, nonces: GrantNonces): Grant {
  const { nonces: _previous, ...rest } = grant
  return nonces.issue === undefined && nonces.extend === undefined ? rest : { ...rest, nonces: Object.freeze({ ...nonces }) }
}

/**
 * The record an extension writes: the new expiry and, in the same record, the extend's nonce (none
 * when it chose none); the create's nonce stays.
 */
export function extendedGrant(grant: Grant, expiresAt: number, nonce: string | undefined): Grant {
  const issue = grant.nonces?.issue
  return withNonces({ ...grant, expiresAt }, { ...(issue !== undefined ? { issue } : {}), ...(nonce !== undefined ? { extend: nonce } : {}) })
}

export interface GrantClaim {
  /** The unclaimed grant ends at this instant unless it is used first. */
  readonly by: number
  /** How long the grant lasts from its first use (the request's duration). */
  readonly durationMs: number
  /**
   * The latest the grant can ever end: `by` + the duration, capped by the contract end (a whole
   * second). The token of an unclaimed grant carries it as `exp`, so a first use late in the window
   * still gets the full duration.
   */
  readonly notAfter: number
  /** The first use, once claimed; from then on `expiresAt` is the claimed expiry. */
  readonly claimedAt?: number
}

/** True for a grant whose claim-by window is still open (no first use yet). */
export function isUnclaimed(grant: Grant): boolean {
  return grant.claim !== undefined && grant.claim.claimedAt === undefined
}

/**
 * The grant as claimed by a first use at `at`: it expires `at` + its duration (judged against the
 * entitlement's max_duration and the resource's max_ttl when it was requested, like any grant's),
 * never past `claim.notAfter` (the contract end), on a whole second like the token's `exp`.
 */
export function claimedGrant(grant: Grant & { readonly claim: GrantClaim }, at: number): Grant {
  const end = Math.min(at + grant.claim.durationMs, grant.claim.notAfter)
  return { ...grant, expiresAt: Math.floor(end / 1000) * 1000, claim: { ...grant.claim, claimedAt: at } }
}

/** What GrantStore.claim resolves with: the grant as it now is, and whether this call claimed it. */
export interface ClaimResult {
  readonly grant: Grant
  readonly claimed: boolean
}

export interface Revocation {
  readonly id: string
  readonly revokedAt: number
  readonly revokedBy: string
  readonly reason: string
  /**
   * Chosen by the revoke call that wrote this tombstone (GrantStore.revoke), absent when it chose
   * none: a caller whose answer was lost reads the tombstone back and tells its own revocation from
   * a concurrent call's (same actor, same reason) by this alone.
   */
  readonly nonce?: string
  /**
   * The revoked grant's `nonces`, as its record last had them (absent when it had none): a create
   * or an extend whose answer was lost still finds its own write when a revoke came after it.
   */
  readonly grantNonces?: GrantNonces
  /** The revoked grant's subject and resource, kept for the denial's audit event. */
  readonly subject: string
  readonly resource: string
}

export type GrantLookup =
  | { readonly status: 'active'; readonly grant: Grant }
  | { readonly status: 'revoked'; readonly revocation: Revocation }
  | { readonly status: 'not_found' }

/** Broadcast to every replica sharing the store. */
export type GrantEvent =
  | { readonly type: 'revoked'; readonly revocation: Revocation }
  | { readonly type: 'issued'; readonly grant: Grant }
  /** The grant's expiry moved (`grant` carries the new `expiresAt`): open connections move their cut-off. */
  | { readonly type: 'extended'; readonly grant: Grant }

/** Thrown (rejected) when the store cannot answer: unreachable, timed out, or failing. */
export class StoreUnavailableError extends Error {
  override readonly name = 'StoreUnavailableError'
  readonly code = 'store_unavailable'
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options)
  }
}

export class GrantExistsError extends Error {
  override readonly name = 'GrantExistsError'
  readonly code = 'grant_exists'
}

export interface GrantStore {
  readonly kind: 'memory' | 'redis'
  /**
   * Stores a new grant; its record disappears by itself at `expiresAt`.
   * Rejects with GrantExistsError when the id is taken (by an active grant or a revocation
   * tombstone, so a revoked id can never come back), RangeError when `expiresAt` has already
   * passed, StoreUnavailableError when the store is down. `nonce` is written into the record as
   * `nonces.issue` (the `nonces` of the given grant are not stored): of concurrent creates of one
   * id, the record names the one that stored it.
   */
  create(grant: Grant, nonce?: string): Promise<void>
  /** Active grant, revocation tombstone, or not found. An expired grant is `not_found`. */
  get(id: string): Promise<GrantLookup>
  /** Active (unexpired, unrevoked) grants, soonest expiry first. */
  list(): Promise<Grant[]>
  /** Number of active grants. */
  count(): Promise<number>
  /**
   * Revokes at once: the grant is deleted and a tombstone is kept until the grant would have
   * expired (at least `minTombstoneMs`), and every replica is told. Returns the revocation, or
   * null when no active grant has this id: a tombstone, once written, is never overwritten, so of
   * concurrent revokes exactly one returns it. `nonce` is written into the tombstone as
   * `Revocation.nonce`, so a caller whose answer was lost can read back whether its own call won.
   */
  revoke(id: string, by: string, reason: string, nonce?: string): Promise<Revocation | null>
  /**
   * Moves an active grant's expiry to `expiresAt` and tells every replica (an `extended` event).
   * Never shortens a grant: an `expiresAt` at or before the current one changes nothing (so a
   * retried extension is harmless). Returns the grant as it now is, or null when no active grant
   * has this id (never issued, expired or revoked). The new expiry and `nonce` (as
   * `nonces.extend`, or none when no nonce is given) are written in one step; an extend that
   * changes nothing leaves the record, and its nonces, as they are. So of concurrent extends to
   * one expiry, the record names the one that moved it.
   */
  extend(id: string, expiresAt: number, nonce?: string): Promise<Grant | null>
  /**
   * Hands over the grants that have reached their expiry without being revoked, each to exactly one
   * caller across every replica sharing the store, so that each expiry is reported once (the
   * `grant.expired` audit event). A revoked grant is never handed over; an extended one only once
   * its new expiry has passed. A claimed grant is over: `get` finds it `not_found`, and `revoke`
   * and `extend` no longer find it. Soonest expiry first, at most a bounded batch per call (the
   * rest on the next call).
   *
   * Every replica may call this periodically. A claim the store could not confirm (its answer lost
   * in an outage) is retried by the next call of the same instance, which then gets that grant;
   * other instances never get it. Rejects with StoreUnavailableError when the store cannot be read.
   */
  claimExpired(): Promise<Grant[]>
  /**
   * Starts the clock of an unclaimed grant at its first use `at` (see claimedGrant): its expiry, and
   * its record's TTL, become the claimed expiry. Exactly one call claims a grant, however many
   * replicas race: every other caller gets the grant as that call claimed it. `grant` is the record
   * as the caller read it (an unclaimed grant changes only by being claimed or revoked, so nothing
   * is read again). Resolves the grant as it now is, `claimed: true` only for the call that claimed
   * it (a grant without a claim window, or claimed already, comes back unchanged), or null when no
   * active grant has this id (never issued, ended unclaimed, revoked).
   */
  claim(grant: Grant, at: number): Promise<ClaimResult | null>
  /**
   * Subscribes to grant events from every replica (including this one). Returns unsubscribe.
   * Delivery is asynchronous and best effort: the Redis subscription goes live a moment after the
   * first call, and events published while a replica is disconnected from Redis are not replayed.
   * A listener that throws is reported to `onError` and does not affect the others.
   */
  subscribe(listener: (event: GrantEvent) => void): () => void
  /** Resolves when the store answers; rejects with StoreUnavailableError otherwise. */
  ping(): Promise<void>
  close(): Promise<void>
}

export interface GrantStoreOptions {
  /** Deadline for each store operation, after which it fails with StoreUnavailableError. */
  readonly timeoutMs: number
  /** Minimum tombstone lifetime after a revocation. */
  readonly minTombstoneMs: number
  /** Clock (epoch ms); injectable for tests. */
  readonly now?: () => number
  /**
   * Errors no caller can receive: a throwing event listener, a malformed event, a dropped Redis
   * connection (reported once per run of identical errors, not once per reconnect attempt).
   * Default: ignored.
   */
  readonly onError?: (err: Error) => void
}

export interface RedisGrantStoreOptions extends GrantStoreOptions {
  /** `redis://[user:pass@]host:port[/db]`, `rediss://...` (TLS), or `unix:///path/to/redis.sock`. */
  readonly url: string
  /** Key prefix, default `jitgate:`. */
  readonly keyPrefix: string
}

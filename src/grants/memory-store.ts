/**
 * In-process grant store: the embedded default when no Redis is configured (one gateway process).
 * Same observable behaviour as the Redis store (test/grants/contract.ts), with `now()` as the only
 * clock: expiry is checked lazily on every read, and a background sweep only reclaims memory. An
 * expired grant moves to `expired` until `claimExpired` hands it over (once).
 */
import {
  claimedGrant,
  extendedGrant,
  GrantExistsError,
  StoreUnavailableError,
  type Grant,
  type GrantEvent,
  type GrantLookup,
  type GrantStore,
  type GrantStoreOptions,
  type Revocation,
  withNonces,
} from './types.js'

/** How often expired grants and tombstones are moved out; reads never depend on it. */
const SWEEP_INTERVAL_MS = 1000

const NOT_FOUND: GrantLookup = Object.freeze({ status: 'not_found' })

interface Tombstone {
  readonly revocation: Revocation
  /** Epoch ms after which the tombstone is gone: max(grant expiry, revokedAt + minTombstoneMs). */
  readonly until: number
}

export function createMemoryGrantStore(opts: GrantStoreOptions): GrantStore {
  const now = opts.now ?? Date.now
  const onError = opts.onError ?? (() => {})
  const grants = new Map<string, Grant>()
  const tombstones = new Map<string, Tombstone>()
  /** Grants past their expiry, not revoked, not yet handed over by claimExpired. */
  const expired = new Map<string, Grant>()
  const listeners = new Set<(event: GrantEvent) => void>()
  let closed = false

  /** The grant has expired: out of the live map, kept until claimExpired reports it. */
  const retire = (id: string, grant: Grant): void => {
    grants.delete(id)
    expired.set(id, grant)
  }

  const sweep = (): void => {
    const t = now()
    for (const [id, grant] of grants) if (grant.expiresAt <= t) retire(id, grant)
    for (const [id, tomb] of tombstones) if (tomb.until <= t) tombstones.delete(id)
  }
  // unref: an idle store must never keep the process alive.
  const sweeper = setInterval(sweep, SWEEP_INTERVAL_MS).unref()

  /** The live grant, retiring it on the spot if it has expired. */
  const liveGrant = (id: string, t: number): Grant | undefined => {
    const grant = grants.get(id)
    if (grant === undefined || grant.expiresAt > t) return grant
    retire(id, grant)
    return undefined
  }

  const liveTombstone = (id: string, t: number): Tombstone | undefined => {
    const tomb = tombstones.get(id)
    if (tomb === undefined || tomb.until > t) return tomb
    tombstones.delete(id)
    return undefined
  }

  /**
   * Delivers after the current operation has returned (as Redis pub/sub would), to the listeners
   * subscribed at emit time that are still subscribed at delivery time.
   */
  const emit = (event: GrantEvent): void => {
    const targets = [...listeners]
    queueMicrotask(() => {
      for (const listener of targets) {
        if (!listeners.has(listener)) continue
        try {
          listener(event)
        } catch (err) {
          onError(err instanceof Error ? err : new Error(String(err)))
        }
      }
    })
  }

  /** Operations after close() fail like an unreachable store would, rather than silently work. */
  const assertOpen = (): void => {
    if (closed) throw new StoreUnavailableError('grant store is closed')
  }

  return {
    kind: 'memory',

    async create(grant, nonce) {
      assertOpen()
      const t = now()
      if (grant.expiresAt <= t) throw new RangeError(`grant ${grant.id} has already expired`)
      if (liveGrant(grant.id, t) !== undefined || liveTombstone(grant.id, t) !== undefined || expired.has(grant.id)) {
        throw new GrantExistsError(`grant ${grant.id} already exists`)
      }
      // A frozen copy: the caller may reuse its object, and readers share ours safely.
      const stored: Grant = Object.freeze({ ...withNonces(grant, nonce !== undefined ? { issue: nonce } : {}), scopes: Object.freeze([...grant.scopes]) })
      grants.set(grant.id, stored)
      emit({ type: 'issued', grant: stored })
    },

    async get(id) {
      assertOpen()
      const t = now()
      const tomb = liveTombstone(id, t)
      if (tomb !== undefined) return { status: 'revoked', revocation: tomb.revocation }
      const grant = liveGrant(id, t)
      return grant === undefined ? NOT_FOUND : { status: 'active', grant }
    },

    async list() {
      assertOpen()
      const t = now()
      const active = [...grants.values()].filter((g) => g.expiresAt > t)
      return active.sort(byExpiry)
    },

    async count() {
      assertOpen()
      const t = now()
      let n = 0
      for (const grant of grants.values()) if (grant.expiresAt > t) n++
      return n
    },

    async revoke(id, by, reason, nonce) {
      assertOpen()
      const t = now()
      const grant = liveGrant(id, t)
      if (grant === undefined) return null
      const revocation: Revocation = Object.freeze({
        id,
        revokedAt: t,
        revokedBy: by,
        reason,
        ...(nonce !== undefined ? { nonce } : {}),
        ...(grant.nonces !== undefined ? { grantNonces: grant.nonces } : {}),
        subject: grant.subject,
        resource: grant.resource,
      })
      grants.delete(id)
      tombstones.set(id, { revocation, until: Math.max(grant.expiresAt, t + opts.minTombstoneMs) })
      emit({ type: 'revoked', revocation })
      return revocation
    },

    async extend(id, expiresAt, nonce) {
      assertOpen()
      const grant = liveGrant(id, now())
      if (grant === undefined || expiresAt <= grant.expiresAt) return grant ?? null
      const extended: Grant = Object.freeze(extendedGrant(grant, expiresAt, nonce))
      grants.set(id, extended)
      emit({ type: 'extended', grant: extended })
      return extended
    },

    async claimExpired() {
      assertOpen()
      // Synchronous from here on: two calls can never both take the same grant.
      sweep()
      const claimed = [...expired.values()].sort(byExpiry)
      expired.clear()
      return claimed
    },

    async claim(given, at) {
      assertOpen()
      const t = now()
      const grant = liveGrant(given.id, t)
      if (grant === undefined) return null
      if (grant.claim === undefined || grant.claim.claimedAt !== undefined) return { grant, claimed: false }
      const claimed = claimedGrant({ ...grant, claim: grant.claim }, at)
      if (claimed.expiresAt <= t) return null
      const stored: Grant = Object.freeze({ ...claimed, claim: Object.freeze({ ...grant.claim, claimedAt: at }) })
      grants.set(grant.id, stored)
      return { grant: stored, claimed: true }
    },

    subscribe(listener) {
      assertOpen()
      // A wrapper per call, so subscribing the same function twice gives two independent subscriptions.
      const subscription = (event: GrantEvent): void => listener(event)
      listeners.add(subscription)
      return () => {
        listeners.delete(subscription)
      }
    },

    async ping() {
      assertOpen()
    },

    async close() {
      closed = true
      clearInterval(sweeper)
      listeners.clear()
      grants.clear()
      tombstones.clear()
      expired.clear()
    },
  }
}

/** Same order as the Redis sorted set: by expiry, ties by id. */
function byExpiry(a: Grant, b: Grant): number {
  return a.expiresAt - b.expiresAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}

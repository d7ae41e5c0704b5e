/**
 * Redis grant store, shared by every gateway replica.
 *
 * Keys (P = keyPrefix, default `jitgate:`):
 *   P{id}:grant    the grant's JSON, with PX so the key dies exactly when the grant does (an
 *                  unclaimed grant's at the end of its claim-by window; claiming it moves the PX)
 *   P{id}:revoked  the revocation tombstone's JSON, PX = max(remaining grant time, minTombstoneMs)
 *   Pgrants        sorted set of grant ids scored by expiresAt, only for list()/count()
 *   Pevents        pub/sub channel carrying GrantEvent JSON
 * The `{id}` hash tag puts both keys of one grant in the same Redis Cluster slot, so the Lua
 * scripts and the MGET below only ever touch one slot. (The hash tag is the text between the
 * first `{` and the next `}`; both keys share the prefix `P{id}`, so they always hash alike.)
 *
 * Failure policy: fail closed and fast. No offline queue and no command replay, so a request is
 * either sent on a live connection or rejected at once; every operation also has a deadline of
 * `timeoutMs` (covering a hung server, which keeps the socket open but never answers). Failures
 * surface as StoreUnavailableError, the data plane answers 503, and the connection keeps
 * reconnecting in the background so the store recovers by itself when Redis is back.
 */
import { Redis } from 'ioredis'
import { connectionTarget, openFailClosedRedis, quit, reconnectOptions, reportErrors, toError } from './redis-connection.js'
import {
  claimedGrant,
  GrantExistsError,
  StoreUnavailableError,
  type Grant,
  type GrantEvent,
  type GrantLookup,
  type GrantStore,
  type RedisGrantStoreOptions,
  type Revocation,
} from './types.js'

/**
 * KEYS: grant, tombstone. ARGV: grant JSON, TTL ms, events channel.
 * A live tombstone also blocks the id, so a revoked grant can never be re-created.
 */
const CREATE_LUA = `
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 0 end
redis.call('PUBLISH', ARGV[3], '{"type":"issued","grant":' .. ARGV[1] .. '}')
return 1
`

/**
 * KEYS: grant, tombstone. ARGV: revocation JSON without subject/resource and without its closing
 * brace (built by JSON.stringify, so no number or string formatting happens in Lua), minimum
 * tombstone ms, events channel. Returns the full revocation JSON, or nil when there is no grant.
 * Atomic, so of two concurrent revokes exactly one finds the grant; the event is published in the
 * same step, so no replica can observe the deletion without the event being on its way.
 */
const REVOKE_LUA = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local remaining = redis.call('PTTL', KEYS[1])
local grant = cjson.decode(raw)
local revocation = ARGV[1] .. ',"subject":' .. cjson.encode(grant.subject)
  .. ',"resource":' .. cjson.encode(grant.resource) .. '}'
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], revocation, 'PX', math.max(remaining, tonumber(ARGV[2])))
redis.call('PUBLISH', ARGV[3], '{"type":"revoked","revocation":' .. revocation .. '}')
return revocation
`

/**
 * KEYS: grant. ARGV: the grant JSON as the caller read it, the extended JSON, its TTL ms, events
 * channel. Writes only if the grant is still exactly what the caller read (not revoked, not
 * extended by someone else meanwhile); the caller reads again otherwise. Returns 1 when written.
 */
const EXTEND_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('PUBLISH', ARGV[4], '{"type":"extended","grant":' .. ARGV[2] .. '}')
return 1
`

/**
 * KEYS: grant. ARGV: the claimed grant JSON, its TTL ms. Claims the grant if it is still unclaimed
 * (it has a claim window and no `claimedAt`): of racing replicas exactly one writes. Returns
 * {1, written JSON} to the caller that claimed it, {0, stored JSON} when there was nothing to claim
 * (no window, or claimed already: every caller ends up with the one claimed record), nil when the
 * grant is gone (ended unclaimed, revoked).
 */
const CLAIM_LUA = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local claim = cjson.decode(raw).claim
if type(claim) ~= 'table' or claim.claimedAt ~= nil then return {0, raw} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, ARGV[1]}
`

/** Read-and-write attempts of one extend before it gives up on a grant that keeps changing. */
const EXTEND_ATTEMPTS = 5

/** The commands registered with defineCommand (EVALSHA, falling back to EVAL after a restart). */
interface ScriptedRedis extends Redis {
  jitgateCreate(grantKey: string, tombKey: string, json: string, ttlMs: number, channel: string): Promise<number>
  jitgateRevoke(grantKey: string, tombKey: string, partial: string, minTombMs: number, channel: string): Promise<string | null>
  jitgateExtend(grantKey: string, current: string, next: string, ttlMs: number, channel: string): Promise<number>
  jitgateClaim(grantKey: string, claimed: string, ttlMs: number): Promise<[number, string] | null>
}

const NOT_FOUND: GrantLookup = Object.freeze({ status: 'not_found' })

export function createRedisGrantStore(opts: RedisGrantStoreOptions): GrantStore {
  const now = opts.now ?? Date.now
  const onError = opts.onError ?? (() => {})
  const { timeoutMs, keyPrefix: prefix } = opts
  const grantKey = (id: string): string => `${prefix}{${id}}:grant`
  const tombKey = (id: string): string => `${prefix}{${id}}:revoked`
  const indexKey = `${prefix}grants`
  const channel = `${prefix}events`

  const connection = openFailClosedRedis({
    url: opts.url,
    timeoutMs,
    onError,
    name: 'grant store',
    passThrough: (err) => err instanceof GrantExistsError,
    // Concurrent requests' grant lookups leave in one write per event-loop tick instead of one
    // syscall each: measured by `npm run bench`, this is most of the Redis path's CPU cost.
    autoPipelining: true,
    setup(c) {
      c.defineCommand('jitgateCreate', { numberOfKeys: 2, lua: CREATE_LUA })
      c.defineCommand('jitgateRevoke', { numberOfKeys: 2, lua: REVOKE_LUA })
      c.defineCommand('jitgateExtend', { numberOfKeys: 1, lua: EXTEND_LUA })
      c.defineCommand('jitgateClaim', { numberOfKeys: 1, lua: CLAIM_LUA })
    },
  })
  const client = connection.client as ScriptedRedis
  const op = connection.op

  const listeners = new Set<(event: GrantEvent) => void>()
  let subscriber: Redis | undefined

  const dispatch = (message: string): void => {
    let event: GrantEvent
    try {
      event = JSON.parse(message) as GrantEvent
    } catch (err) {
      onError(toError(err))
      return
    }
    for (const listener of listeners) {
      try {
        listener(event)
      } catch (err) {
        onError(toError(err))
      }
    }
  }

  /**
   * The second connection, in subscriber mode, opened on first subscribe(). Unlike the command
   * connection it keeps an offline queue with no retry limit and no command timeout: its only
   * command is SUBSCRIBE, which should simply wait until Redis is reachable. ioredis re-sends
   * SUBSCRIBE by itself after every reconnect (autoResubscribe, on by default).
   */
  const openSubscriber = (): Redis => {
    const sub = new Redis(connectionTarget(opts.url), { ...reconnectOptions(timeoutMs), enableOfflineQueue: true, maxRetriesPerRequest: null })
    reportErrors(sub, onError)
    sub.on('message', (ch: string, message: string) => {
      if (ch === channel) dispatch(message)
    })
    sub.connect().catch(() => {})
    sub.subscribe(channel).catch((err: unknown) => onError(toError(err)))
    return sub
  }

  /** QUIT (letting replies in flight arrive) for at most timeoutMs, then drop the socket for sure. */
  /** Active grants, soonest expiry first; also prunes expired entries from the index. */
  const activeGrants = async (): Promise<Grant[]> => {
    const t = now()
    const [, ids] = await Promise.all([
      client.zremrangebyscore(indexKey, '-inf', t),
      client.zrangebyscore(indexKey, `(${t}`, '+inf'),
    ])
    // One GET per grant: the keys live in different slots, so no MGET across them.
    const values = await Promise.all(ids.map((id) => client.get(grantKey(id))))
    const grants: Grant[] = []
    for (const json of values) {
      // null: revoked, expired since the ZRANGE, or an index entry whose create was refused.
      if (json == null) continue
      const grant = JSON.parse(json) as Grant
      if (grant.expiresAt > t) grants.push(grant)
    }
    return grants
  }

  return {
    kind: 'redis',

    async create(grant) {
      const ttlMs = grant.expiresAt - now()
      if (ttlMs <= 0) throw new RangeError(`grant ${grant.id} has already expired`)
      const json = JSON.stringify(grant)
      return op('create', async () => {
        // Index first (NX: never move an existing entry), in the same write burst as the script.
        // An entry left behind by a failed create is harmless: list() skips ids without a grant
        // key, and the entry is pruned once its score (the expiry) has passed.
        const [, created] = await Promise.all([
          client.zadd(indexKey, 'NX', grant.expiresAt, grant.id),
          client.jitgateCreate(grantKey(grant.id), tombKey(grant.id), json, ttlMs, channel),
        ])
        if (created !== 1) throw new GrantExistsError(`grant ${grant.id} already exists`)
      })
    },

    // The per-request hot path: one round trip (both keys share a slot), at most one JSON.parse.
    get(id) {
      return op('get', async () => {
        const [grantJson, tombJson] = await client.mget(grantKey(id), tombKey(id))
        if (tombJson != null) return { status: 'revoked', revocation: JSON.parse(tombJson) as Revocation }
        if (grantJson == null) return NOT_FOUND
        const grant = JSON.parse(grantJson) as Grant
        // Redis expires the key by its own clock; this keeps `now()` authoritative to the ms.
        return grant.expiresAt > now() ? { status: 'active', grant } : NOT_FOUND
      })
    },

    list() {
      return op('list', activeGrants)
    },

    // Not ZCOUNT: the index may hold ids that have no grant (a create refused after its ZADD), and
    // grants are few (each is a human-approved, time-boxed access), so checking each is cheap.
    count() {
      return op('count', async () => (await activeGrants()).length)
    },

    revoke(id, by, reason) {
      const partial = JSON.stringify({ id, revokedAt: now(), revokedBy: by, reason }).slice(0, -1)
      return op('revoke', async () => {
        const json = await client.jitgateRevoke(grantKey(id), tombKey(id), partial, opts.minTombstoneMs, channel)
        if (json == null) return null
        // The revocation has happened; a stale index entry only costs list() one GET, so a
        // failure here is reported rather than turned into a failed revoke.
        await client.zrem(indexKey, id).catch((err: unknown) => onError(toError(err)))
        return JSON.parse(json) as Revocation
      })
    },

    extend(id, expiresAt) {
      return op('extend', async () => {
        for (let attempt = 0; attempt < EXTEND_ATTEMPTS; attempt++) {
          const current = await client.get(grantKey(id))
          if (current == null) return null
          const grant = JSON.parse(current) as Grant
          const t = now()
          if (grant.expiresAt <= t) return null
          if (expiresAt <= grant.expiresAt) return grant
          const extended: Grant = { ...grant, expiresAt }
          const json = JSON.stringify(extended)
          if ((await client.jitgateExtend(grantKey(id), current, json, expiresAt - t, channel)) === 1) {
            // Only list() order depends on the score; a failure here is reported, not a failed extend.
            await client.zadd(indexKey, 'XX', expiresAt, id).catch((err: unknown) => onError(toError(err)))
            return extended
          }
        }
        throw new Error(`grant ${id} kept changing during ${EXTEND_ATTEMPTS} extend attempts`)
      })
    },

    claim(given, at) {
      return op('claim', async () => {
        if (given.claim === undefined || given.claim.claimedAt !== undefined) {
          // Nothing to claim: answer from the store, as for a claimed grant.
          const json = await client.get(grantKey(given.id))
          const grant = json == null ? undefined : (JSON.parse(json) as Grant)
          return grant === undefined || grant.expiresAt <= now() ? null : { grant, claimed: false }
        }
        const next = claimedGrant({ ...given, claim: given.claim }, at)
        const ttlMs = next.expiresAt - now()
        if (ttlMs <= 0) return null
        const reply = await client.jitgateClaim(grantKey(given.id), JSON.stringify(next), ttlMs)
        if (reply == null) return null
        const grant = JSON.parse(reply[1]) as Grant
        if (reply[0] !== 1) return grant.expiresAt > now() ? { grant, claimed: false } : null
        // Only list() order depends on the score; a failure here is reported, not a failed claim.
        await client.zadd(indexKey, 'XX', grant.expiresAt, grant.id).catch((err: unknown) => onError(toError(err)))
        return { grant, claimed: true }
      })
    },

    subscribe(listener) {
      if (connection.closed) throw new StoreUnavailableError('grant store is closed')
      subscriber ??= openSubscriber()
      // A wrapper per call, so subscribing the same function twice gives two independent subscriptions.
      const subscription = (event: GrantEvent): void => listener(event)
      listeners.add(subscription)
      return () => {
        listeners.delete(subscription)
      }
    },

    ping() {
      return op('ping', async () => {
        await client.ping()
      })
    },

    async close() {
      if (connection.closed) return
      listeners.clear()
      await Promise.all([connection.close(), subscriber && quit(subscriber, timeoutMs)])
    },
  }
}

/**
 * Redis grant store, shared by every gateway replica.
 *
 * Keys (P = keyPrefix, default `jitgate:`):
 *   P{id}:grant    the grant's JSON, with PX so the key dies exactly when the grant does (an
 *                  unclaimed grant's at the end of its claim-by window; claiming it moves the PX);
 *                  `nonces` in it names the create that stored it and the extend that last moved
 *                  its expiry, each written in the same SET as what that call changed
 *   P{id}:revoked  the revocation tombstone's JSON, PX = max(remaining grant time, minTombstoneMs);
 *                  it keeps the revoke's nonce and the grant's `nonces` (as `grantNonces`)
 *   P{id}:expiry   the expiry record: the grant's JSON again, kept EXPIRY_RETENTION_MS past the
 *                  expiry, until one replica claims it (claimExpired); revoking deletes it
 *   P{id}:expired  the claim marker, `nonce|grant JSON`: lets a claim whose answer was lost be
 *                  asked again by the same claimer; deleted once the answer arrived
 *   Pgrants        sorted set of grant ids scored by expiresAt: list()/count(), and the due
 *                  entries claimExpired walks
 *   Pevents        pub/sub channel carrying GrantEvent JSON
 * The `{id}` hash tag puts every key of one grant in the same Redis Cluster slot, so the Lua
 * scripts and the MGET below only ever touch one slot. (The hash tag is the text between the
 * first `{` and the next `}`; the keys share the prefix `P{id}`, so they always hash alike.)
 *
 * Expiry, once: the grant key dies by itself, but its expiry record stays until a replica's claim
 * script, atomically, finds it due, deletes it (and the grant key) and answers with the grant. Of
 * all the replicas sweeping the index, only the one whose script ran first gets the grant; the
 * revoke script deletes the record in the same step as the grant, so a revoked grant is never
 * claimed; the extend script rewrites the record with the grant, so an extended grant is claimed
 * at its new expiry only. The index is only the way to find due records: a stale entry costs one
 * script call and is removed or re-scored.
 *
 * Failure policy: fail closed and fast. No offline queue and no command replay, so a request is
 * either sent on a live connection or rejected at once; every operation also has a deadline of
 * `timeoutMs` (covering a hung server, which keeps the socket open but never answers). Failures
 * surface as StoreUnavailableError, the data plane answers 503, and the connection keeps
 * reconnecting in the background so the store recovers by itself when Redis is back.
 */
import { randomBytes } from 'node:crypto'
import { Redis } from 'ioredis'
import { connectionTarget, openFailClosedRedis, quit, reconnectOptions, reportErrors, toError } from './redis-connection.js'
import {
  claimedGrant,
  extendedGrant,
  GrantExistsError,
  StoreUnavailableError,
  type Grant,
  type GrantEvent,
  type GrantLookup,
  type GrantStore,
  type RedisGrantStoreOptions,
  type Revocation,
  withNonces,
} from './types.js'

/**
 * KEYS: grant, tombstone, expiry record. ARGV: grant JSON, TTL ms, events channel, record TTL ms.
 * A live tombstone also blocks the id, so a revoked grant can never be re-created; so does an
 * expiry record not yet claimed.
 */
const CREATE_LUA = `
if redis.call('EXISTS', KEYS[2], KEYS[3]) > 0 then return 0 end
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2], 'NX') then return 0 end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
redis.call('PUBLISH', ARGV[3], '{"type":"issued","grant":' .. ARGV[1] .. '}')
return 1
`

/**
 * KEYS: grant, tombstone, expiry record. ARGV: revocation JSON without subject/resource and
 * without its closing brace (built by JSON.stringify, so no number or string formatting happens
 * in Lua), minimum tombstone ms, events channel. Returns the full revocation JSON, or nil when
 * there is no grant (so a later revoke never overwrites the tombstone, nor its nonce, that the
 * first one wrote). Atomic, so of two concurrent revokes exactly one finds the grant, and a
 * revoke and an expiry claim never both succeed; the event is published in the same step, so no
 * replica can observe the deletion without the event being on its way. The grant's `nonces`
 * (strings only) are carried into the tombstone as `grantNonces`.
 */
const REVOKE_LUA = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local remaining = redis.call('PTTL', KEYS[1])
local grant = cjson.decode(raw)
local nonces = ''
if type(grant.nonces) == 'table' then nonces = ',"grantNonces":' .. cjson.encode(grant.nonces) end
local revocation = ARGV[1] .. nonces .. ',"subject":' .. cjson.encode(grant.subject)
  .. ',"resource":' .. cjson.encode(grant.resource) .. '}'
redis.call('DEL', KEYS[1], KEYS[3])
redis.call('SET', KEYS[2], revocation, 'PX', math.max(remaining, tonumber(ARGV[2])))
redis.call('PUBLISH', ARGV[3], '{"type":"revoked","revocation":' .. revocation .. '}')
return revocation
`

/**
 * KEYS: grant, expiry record. ARGV: the grant JSON as the caller read it, the extended JSON (the
 * new expiry and the extend's nonce, in one record), its TTL ms, events channel, the record's TTL
 * ms. Writes only if the grant is still exactly what the caller read (not revoked, not claimed as
 * expired, not extended by someone else meanwhile); the caller reads again otherwise. Returns 1
 * when written. The record is written unconditionally: a grant stored before expiry records
 * existed gets one here.
 */
const EXTEND_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[4], '{"type":"extended","grant":' .. ARGV[2] .. '}')
return 1
`

/**
 * KEYS: grant, expiry record, claim marker. ARGV: now (epoch ms), this attempt's nonce, marker
 * TTL ms. Answers the grant JSON when this attempt owns the expiry: the record was due and is now
 * deleted (the grant key too, in case Redis has not expired it yet), or the marker shows that this
 * very nonce claimed it before (an earlier answer lost on its way). Answers the record's expiry
 * (a number) when it is not due yet (an extended grant), nil when there is nothing to claim: no
 * record (revoked, claimed by someone else, never stored) or a marker of another attempt.
 */
const CLAIM_LUA = `
local mark = redis.call('GET', KEYS[3])
if mark then
  local sep = string.find(mark, '|', 1, true)
  if sep and string.sub(mark, 1, sep - 1) == ARGV[2] then return string.sub(mark, sep + 1) end
  return false
end
local raw = redis.call('GET', KEYS[2])
if not raw then return false end
local expiresAt = cjson.decode(raw).expiresAt
if expiresAt > tonumber(ARGV[1]) then return expiresAt end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('SET', KEYS[3], ARGV[2] .. '|' .. raw, 'PX', ARGV[3])
return raw
`

/**
 * How long an expiry record outlives its grant when no replica claims it (every gateway stopped,
 * or cut off from Redis): the `grant.expired` of an outage up to this long is still written.
 */
export const EXPIRY_RETENTION_MS = 7 * 86_400_000

/** Due index entries one claimExpired call handles at most; the next call takes the rest. */
const CLAIM_BATCH = 500

/**
 * KEYS: grant, expiry record. ARGV: the claimed grant JSON, its TTL ms, the record's TTL ms.
 * Starts the clock of a grant with a claim-by window at its first use, if it is still unclaimed
 * (a claim window and no `claimedAt`): of racing replicas exactly one writes, and the expiry
 * record follows (so `grant.expired` comes at the claimed expiry). Returns {1, written JSON} to
 * the caller that claimed it, {0, stored JSON} when there was nothing to claim (no window, or
 * claimed already: every caller ends up with the one claimed record), nil when the grant is gone
 * (ended unclaimed, revoked).
 */
const FIRST_USE_LUA = `
local raw = redis.call('GET', KEYS[1])
if not raw then return false end
local claim = cjson.decode(raw).claim
if type(claim) ~= 'table' or claim.claimedAt ~= nil then return {0, raw} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[3])
return {1, ARGV[1]}
`

/** Read-and-write attempts of one extend before it gives up on a grant that keeps changing. */
const EXTEND_ATTEMPTS = 5

/** The commands registered with defineCommand (EVALSHA, falling back to EVAL after a restart). */
interface ScriptedRedis extends Redis {
  jitgateCreate(grantKey: string, tombKey: string, expiryKey: string, json: string, ttlMs: number, channel: string, recordTtlMs: number): Promise<number>
  jitgateRevoke(grantKey: string, tombKey: string, expiryKey: string, partial: string, minTombMs: number, channel: string): Promise<string | null>
  jitgateExtend(grantKey: string, expiryKey: string, current: string, next: string, ttlMs: number, channel: string, recordTtlMs: number): Promise<number>
  jitgateClaim(grantKey: string, expiryKey: string, claimedKey: string, now: number, nonce: string, markerTtlMs: number): Promise<string | number | null>
  jitgateFirstUse(grantKey: string, expiryKey: string, claimed: string, ttlMs: number, recordTtlMs: number): Promise<[number, string] | null>
}

const NOT_FOUND: GrantLookup = Object.freeze({ status: 'not_found' })
/** Parsed grant records kept by their text: a gateway's grants in use at once, with room to spare. */
const PARSED_GRANTS_MAX = 4096

interface Pending {
  readonly promise: Promise<GrantLookup>
  resolve(lookup: GrantLookup): void
  reject(err: unknown): void
}

function deferred(): Pending {
  let resolve!: (lookup: GrantLookup) => void
  let reject!: (err: unknown) => void
  const promise = new Promise<GrantLookup>((res, rej) => {
    resolve = res
    reject = rej
  })
  return { promise, resolve, reject }
}

export function createRedisGrantStore(opts: RedisGrantStoreOptions): GrantStore {
  const now = opts.now ?? Date.now
  const onError = opts.onError ?? (() => {})
  const { timeoutMs, keyPrefix: prefix } = opts
  const grantKey = (id: string): string => `${prefix}{${id}}:grant`
  const tombKey = (id: string): string => `${prefix}{${id}}:revoked`
  const expiryKey = (id: string): string => `${prefix}{${id}}:expiry`
  const claimedKey = (id: string): string => `${prefix}{${id}}:expired`
  const indexKey = `${prefix}grants`
  const channel = `${prefix}events`

  const connection = openFailClosedRedis({
    url: opts.url,
    timeoutMs,
    onError,
    name: 'grant store',
    passThrough: (err) => err instanceof GrantExistsError,
    setup(c) {
      c.defineCommand('jitgateCreate', { numberOfKeys: 3, lua: CREATE_LUA })
      c.defineCommand('jitgateRevoke', { numberOfKeys: 3, lua: REVOKE_LUA })
      c.defineCommand('jitgateExtend', { numberOfKeys: 2, lua: EXTEND_LUA })
      c.defineCommand('jitgateClaim', { numberOfKeys: 3, lua: CLAIM_LUA })
      c.defineCommand('jitgateFirstUse', { numberOfKeys: 2, lua: FIRST_USE_LUA })
    },
  })
  const client = connection.client as ScriptedRedis
  const op = connection.op

  const listeners = new Set<(event: GrantEvent) => void>()
  let subscriber: Redis | undefined

  /** Names this store instance's claims; each attempt's nonce is `claimer.n`. */
  const claimer = randomBytes(9).toString('base64url')
  let claims = 0
  /** Claims sent without an answer (id → nonce): they may have happened, so they are asked again. */
  const unconfirmed = new Map<string, string>()

  /** One claim attempt; the grant when this attempt owns its expiry. */
  const claimOne = async (id: string, nonce: string, t: number): Promise<Grant | undefined> => {
    let answer: string | number | null
    try {
      answer = await op('claimExpired', () => client.jitgateClaim(grantKey(id), expiryKey(id), claimedKey(id), t, nonce, EXPIRY_RETENTION_MS))
    } catch (err) {
      // Sent or not, there is no telling: the next call asks again with the same nonce.
      unconfirmed.set(id, nonce)
      throw err
    }
    unconfirmed.delete(id)
    // Tidying only (a failure is reported; the next call finds the entry again and tidies it):
    // the index entry goes, or moves to the grant's new expiry; the marker has served its purpose.
    const tidy: Promise<unknown>[] =
      typeof answer === 'number'
        ? [client.zadd(indexKey, answer, id)]
        : [client.zrem(indexKey, id), ...(typeof answer === 'string' ? [client.del(claimedKey(id))] : [])]
    await Promise.all(tidy).catch((err: unknown) => onError(toError(err)))
    return typeof answer === 'string' ? (JSON.parse(answer) as Grant) : undefined
  }

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

  /**
   * The per-request hot path. Lookups asked for during one turn of the event loop leave together
   * at the end of that turn (setImmediate: after the I/O callbacks that asked for them), in one
   * write, and the requests of that turn that carry the same grant share one MGET. Each lookup is
   * still sent after the request that asked for it arrived, never reused from before: a
   * revocation that completed before a request arrived is always seen, and the check stays per
   * request. Measured by `npm run bench`: the Redis path's cost was per command, not per byte.
   */
  let batch: Map<string, Pending> | undefined

  const lookupBatch = (): void => {
    const ids = batch as Map<string, Pending>
    batch = undefined
    op('get', async () => {
      if (ids.size === 1) {
        const [id] = ids.keys()
        return [[null, await client.mget(grantKey(id as string), tombKey(id as string))]] as [Error | null, unknown][]
      }
      const pipeline = client.pipeline()
      for (const id of ids.keys()) pipeline.mget(grantKey(id), tombKey(id))
      return (await pipeline.exec()) as [Error | null, unknown][]
    }).then(
      (results) => {
        let i = 0
        for (const pending of ids.values()) {
          const [err, values] = results[i++] ?? [new Error('no reply')]
          if (err) pending.reject(new StoreUnavailableError(`redis get: ${err.message}`, { cause: err }))
          else pending.resolve(toLookup(values as (string | null)[]))
        }
      },
      (err: unknown) => {
        for (const pending of ids.values()) pending.reject(err)
      },
    )
  }

  /**
   * Grants parsed from their stored text, by that text: every request reads its grant afresh, and
   * an unchanged record is the same grant, so it is parsed once (and the decision's per-grant
   * caches find the same object). A changed record (extended, claimed) is new text, parsed anew.
   */
  const parsed = new Map<string, Grant>()
  const parseGrant = (json: string): Grant => {
    let grant = parsed.get(json)
    if (grant === undefined) {
      grant = Object.freeze(JSON.parse(json) as Grant)
      if (parsed.size >= PARSED_GRANTS_MAX) parsed.delete(parsed.keys().next().value as string)
      parsed.set(json, grant)
    }
    return grant
  }

  const toLookup = ([grantJson, tombJson]: (string | null)[]): GrantLookup => {
    if (tombJson != null) return { status: 'revoked', revocation: JSON.parse(tombJson) as Revocation }
    if (grantJson == null) return NOT_FOUND
    const grant = parseGrant(grantJson)
    // Redis expires the key by its own clock; this keeps `now()` authoritative to the ms.
    return grant.expiresAt > now() ? { status: 'active', grant } : NOT_FOUND
  }

  /**
   * Active grants, soonest expiry first. Due entries stay in the index (no pruning here): they are
   * how claimExpired finds the expiries still to report, and it removes them.
   */
  const activeGrants = async (): Promise<Grant[]> => {
    const t = now()
    const ids = await client.zrangebyscore(indexKey, `(${t}`, '+inf')
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

    async create(grant, nonce) {
      const ttlMs = grant.expiresAt - now()
      if (ttlMs <= 0) throw new RangeError(`grant ${grant.id} has already expired`)
      const json = JSON.stringify(withNonces(grant, nonce !== undefined ? { issue: nonce } : {}))
      return op('create', async () => {
        // Index first (NX: never move an existing entry), in the same write burst as the script.
        // An entry left behind by a failed create is harmless: list() skips ids without a grant
        // key, and the entry is pruned once its score (the expiry) has passed.
        const [, created] = await Promise.all([
          client.zadd(indexKey, 'NX', grant.expiresAt, grant.id),
          client.jitgateCreate(grantKey(grant.id), tombKey(grant.id), expiryKey(grant.id), json, ttlMs, channel, ttlMs + EXPIRY_RETENTION_MS),
        ])
        if (created !== 1) throw new GrantExistsError(`grant ${grant.id} already exists`)
      })
    },

    // One MGET (both keys share a slot), batched per event-loop turn: see lookupBatch.
    get(id) {
      if (connection.closed) return Promise.reject(new StoreUnavailableError('grant store is closed'))
      if (batch === undefined) {
        batch = new Map()
        setImmediate(lookupBatch)
      }
      let pending = batch.get(id)
      if (pending === undefined) {
        pending = deferred()
        batch.set(id, pending)
      }
      return pending.promise
    },

    list() {
      return op('list', activeGrants)
    },

    // Not ZCOUNT: the index may hold ids that have no grant (a create refused after its ZADD), and
    // grants are few (each is a human-approved, time-boxed access), so checking each is cheap.
    count() {
      return op('count', async () => (await activeGrants()).length)
    },

    revoke(id, by, reason, nonce) {
      // JSON.stringify leaves out an undefined nonce, as the memory store does.
      const partial = JSON.stringify({ id, revokedAt: now(), revokedBy: by, reason, nonce }).slice(0, -1)
      return op('revoke', async () => {
        const json = await client.jitgateRevoke(grantKey(id), tombKey(id), expiryKey(id), partial, opts.minTombstoneMs, channel)
        if (json == null) return null
        // The revocation has happened; a stale index entry only costs list() one GET, so a
        // failure here is reported rather than turned into a failed revoke.
        await client.zrem(indexKey, id).catch((err: unknown) => onError(toError(err)))
        return JSON.parse(json) as Revocation
      })
    },

    extend(id, expiresAt, nonce) {
      return op('extend', async () => {
        for (let attempt = 0; attempt < EXTEND_ATTEMPTS; attempt++) {
          const current = await client.get(grantKey(id))
          if (current == null) return null
          const grant = JSON.parse(current) as Grant
          const t = now()
          if (grant.expiresAt <= t) return null
          if (expiresAt <= grant.expiresAt) return grant
          const extended = extendedGrant(grant, expiresAt, nonce)
          const json = JSON.stringify(extended)
          const ttlMs = expiresAt - t
          if ((await client.jitgateExtend(grantKey(id), expiryKey(id), current, json, ttlMs, channel, ttlMs + EXPIRY_RETENTION_MS)) === 1) {
            // Only list() order depends on the score; a failure here is reported, not a failed extend.
            await client.zadd(indexKey, 'XX', expiresAt, id).catch((err: unknown) => onError(toError(err)))
            return extended
          }
        }
        throw new Error(`grant ${id} kept changing during ${EXTEND_ATTEMPTS} extend attempts`)
      })
    },

    async claimExpired() {
      const t = now()
      const due = await op('claimExpired', () => client.zrangebyscore(indexKey, '-inf', t, 'LIMIT', 0, CLAIM_BATCH))
      // Claims whose answer was lost go first, with their own nonce: only they can get those back.
      const attempts = new Map(unconfirmed)
      for (const id of due) if (!attempts.has(id)) attempts.set(id, `${claimer}.${++claims}`)
      const results = await Promise.allSettled([...attempts].map(([id, nonce]) => claimOne(id, nonce, t)))
      const claimed: Grant[] = []
      const failures: unknown[] = []
      for (const r of results) {
        if (r.status === 'rejected') failures.push(r.reason)
        else if (r.value !== undefined) claimed.push(r.value)
      }
      // All failed: the store is down, say so. Some failed: hand over what was claimed (retried next call).
      if (failures.length > 0 && claimed.length === 0) throw failures[0]
      for (const err of failures) onError(toError(err))
      return claimed.sort((a, b) => a.expiresAt - b.expiresAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))
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
        const reply = await client.jitgateFirstUse(grantKey(given.id), expiryKey(given.id), JSON.stringify(next), ttlMs, ttlMs + EXPIRY_RETENTION_MS)
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

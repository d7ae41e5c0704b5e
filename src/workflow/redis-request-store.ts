/**
 * Redis request store, shared by every gateway replica.
 *
 * Keys (P = keyPrefix, default `jitgate:`):
 *   P{requests}:request:<id>  the request's JSON; PX = its retention (none while a break-glass
 *                             review is open)
 *   P{requests}:index         sorted set of request ids scored by createdAt, for list()
 *   P{requests}:open          the same for pending requests and open reviews, for listOpen() (the
 *                             sweeper)
 *   Ponce:<key>               single-use claims (assertion jti, TOTP code), SET NX PX
 *   P{<key>}:attempts         attempt counters (TOTP codes tried per approver), INCR with a PX window
 * Every key of the requests shares the `{requests}` hash tag, so a record and its index entries
 * live in one Redis Cluster slot and each write is one Lua script over all of them: a create or an
 * update is there whole or not at all. A write the caller gave up on (a hung Redis runs it when it
 * wakes up) therefore lands with its index entries, and a late request is listed and swept like any
 * other. Requests are few (each waits for a human), so one slot holds them comfortably. Readers
 * still prune entries whose record has reached its retention.
 *
 * The earlier layout gave each request a hash tag of its own (`P{r_…}:request`) and kept the
 * indexes (`Prequests`, `Prequests:open`) outside it. A request found there is moved into this
 * layout on first sight (get, list, listOpen: the sweeper's next pass moves every open one), with
 * the retention it had left. Replicas of the earlier layout do not see requests created or moved
 * by this one: upgrade them together.
 *
 * Failure policy as in the grant store: no offline queue, no command replay, a deadline on every
 * operation, failures surface as StoreUnavailableError.
 */
import { Redis } from 'ioredis'
import { openFailClosedRedis, toError } from '../grants/redis-connection.js'
import {
  RequestExistsError,
  byNewest,
  isOpen,
  matches,
  retainUntil,
  type AccessRequest,
  type RedisRequestStoreOptions,
  type RequestStore,
} from './request-store.js'

/**
 * KEYS: request, index, open index. ARGV: id, JSON, PX in ms or "0" for no expiry, createdAt, "1"
 * when the request is open. Writes the record and its index entries, unless the id is taken.
 * Returns 1 when written, 0 when the id exists.
 */
const CREATE_LUA = `
local set
if ARGV[3] == '0' then
  set = redis.call('SET', KEYS[1], ARGV[2], 'NX')
else
  set = redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3], 'NX')
end
if not set then return 0 end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if ARGV[5] == '1' then redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1]) end
return 1
`

/**
 * KEYS: request, open index. ARGV: expected (current) version, next JSON, PX in ms or "0" for no
 * expiry, id, createdAt, "1" when the next record is open. Writes the record and moves its open
 * index entry in the same step. Returns 1 when written, 0 when the record is gone or another
 * writer moved its version.
 */
const UPDATE_LUA = `
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if cjson.decode(raw).version ~= tonumber(ARGV[1]) then return 0 end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
else
  redis.call('ZREM', KEYS[2], ARGV[4])
end
return 1
`

/**
 * KEYS: counter. ARGV: window ms. Counts one attempt; a new counter (or one left without an expiry)
 * gets the window, so the count of one window can never outlive it. Returns the count.
 */
const ATTEMPT_LUA = `
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return n
`

interface ScriptedRedis extends Redis {
  jitgateRequestCreate(key: string, indexKey: string, openKey: string, id: string, json: string, pxMs: string, createdAt: number, open: '1' | '0'): Promise<number>
  jitgateRequestUpdate(key: string, openKey: string, expectedVersion: number, json: string, pxMs: string, id: string, createdAt: number, open: '1' | '0'): Promise<number>
  jitgateAttempt(key: string, windowMs: number): Promise<number>
}


export function createRedisRequestStore(opts: RedisRequestStoreOptions): RequestStore {
  const now = opts.now ?? Date.now
  const onError = opts.onError ?? (() => {})
  const { timeoutMs, keyPrefix: prefix } = opts
  const tag = `${prefix}{requests}`
  const requestKey = (id: string): string => `${tag}:request:${id}`
  const indexKey = `${tag}:index`
  const openKey = `${tag}:open`
  // The earlier layout: see the module comment.
  const legacyRequestKey = (id: string): string => `${prefix}{${id}}:request`
  const legacyIndexKey = `${prefix}requests`
  const legacyOpenKey = `${prefix}requests:open`
  const claimKey = (key: string): string => `${prefix}once:${key}`
  // A hash tag of its own: one counter, one Redis Cluster slot.
  const attemptsKey = (key: string): string => `${prefix}{${key}}:attempts`

  const connection = openFailClosedRedis({
    url: opts.url,
    timeoutMs,
    onError,
    name: 'request store',
    passThrough: (err) => err instanceof RequestExistsError,
    setup(c) {
      c.defineCommand('jitgateRequestCreate', { numberOfKeys: 3, lua: CREATE_LUA })
      c.defineCommand('jitgateRequestUpdate', { numberOfKeys: 2, lua: UPDATE_LUA })
      c.defineCommand('jitgateAttempt', { numberOfKeys: 1, lua: ATTEMPT_LUA })
    },
  })
  const client = connection.client as ScriptedRedis
  const op = connection.op

  /** PX for a record, or "0" when it must be kept (open review). At least 1 ms: PX 0 is an error. */
  const px = (r: AccessRequest): string => {
    const until = retainUntil(r, opts.retentionMs)
    return until === Number.POSITIVE_INFINITY ? '0' : String(Math.max(1, Math.ceil(until - now())))
  }

  const openFlag = (r: AccessRequest): '1' | '0' => (isOpen(r) ? '1' : '0')

  /** Loads the records of an index in order; prunes ids whose record is gone (or fails `keep`). */
  const load = async (key: string, ids: string[], keep: (r: AccessRequest) => boolean): Promise<AccessRequest[]> => {
    // One MGET: every record is in the slot of the `{requests}` hash tag.
    const values = ids.length === 0 ? [] : await client.mget(ids.map(requestKey))
    const found: AccessRequest[] = []
    const stale: string[] = []
    values.forEach((json, i) => {
      if (json == null) {
        stale.push(ids[i] as string)
        return
      }
      const r = JSON.parse(json) as AccessRequest
      if (keep(r)) found.push(r)
      else if (key === openKey) stale.push(r.id)
    })
    if (stale.length > 0) client.zrem(key, ...stale).catch((err: unknown) => onError(toError(err)))
    return found.sort(byNewest)
  }

  /**
   * Moves a request of the earlier layout into this one, with the retention it had left; undefined
   * when there is none. Its keys are in other slots, so this is a copy (which never overwrites a
   * request already moved) and then a delete, not one step: a replica moving it at the same time
   * finds it moved, or gone from the earlier layout.
   */
  const adopt = async (id: string): Promise<AccessRequest | undefined> => {
    const [json, pttl] = await Promise.all([client.get(legacyRequestKey(id)), client.pttl(legacyRequestKey(id))])
    // -2: it reached its retention between the two reads.
    if (json == null || pttl === -2) return undefined
    const r = JSON.parse(json) as AccessRequest
    await client.jitgateRequestCreate(requestKey(id), indexKey, openKey, id, json, pttl === -1 ? '0' : String(Math.max(1, pttl)), r.createdAt, openFlag(r))
    await Promise.all([client.del(legacyRequestKey(id)), client.zrem(legacyIndexKey, id), client.zrem(legacyOpenKey, id)])
    const moved = await client.get(requestKey(id))
    return moved == null ? undefined : (JSON.parse(moved) as AccessRequest)
  }

  /** The ids of an index, after moving the requests still listed in its earlier-layout twin. */
  const indexed = async (key: string, legacyKey: string, read: (key: string) => Promise<string[]>): Promise<string[]> => {
    const [ids, legacy] = await Promise.all([read(key), client.zrange(legacyKey, 0, -1)])
    if (legacy.length === 0) return ids
    await Promise.all(legacy.map(adopt))
    // Entries whose record had reached its retention go too.
    await client.zrem(legacyKey, ...legacy)
    return read(key)
  }
  const newestFirst = (key: string): Promise<string[]> => client.zrevrange(key, 0, -1)
  const oldestFirst = (key: string): Promise<string[]> => client.zrange(key, 0, -1)

  return {
    kind: 'redis',

    create(request) {
      if (request.version !== 1) return Promise.reject(new RangeError('a new request has version 1'))
      const json = JSON.stringify(request)
      const ttl = px(request)
      return op('create', async () => {
        const created = await client.jitgateRequestCreate(requestKey(request.id), indexKey, openKey, request.id, json, ttl, request.createdAt, openFlag(request))
        if (created !== 1) throw new RequestExistsError(`request ${request.id} already exists`)
      })
    },

    get(id) {
      return op('get', async () => {
        const json = await client.get(requestKey(id))
        return json == null ? adopt(id) : (JSON.parse(json) as AccessRequest)
      })
    },

    update(next) {
      const json = JSON.stringify(next)
      const ttl = px(next)
      return op('update', async () => {
        const written = await client.jitgateRequestUpdate(requestKey(next.id), openKey, next.version - 1, json, ttl, next.id, next.createdAt, openFlag(next))
        return written === 1
      })
    },

    list(filter) {
      return op('list', async () => load(indexKey, await indexed(indexKey, legacyIndexKey, newestFirst), (r) => matches(r, filter)))
    },

    listOpen() {
      return op('listOpen', async () => load(openKey, await indexed(openKey, legacyOpenKey, oldestFirst), isOpen))
    },

    claimOnce(key, ttlMs) {
      return op('claimOnce', async () => (await client.set(claimKey(key), '1', 'PX', Math.max(1, Math.ceil(ttlMs)), 'NX')) === 'OK')
    },

    countAttempt(key, windowMs) {
      return op('countAttempt', () => client.jitgateAttempt(attemptsKey(key), Math.max(1, Math.ceil(windowMs))))
    },

    clearAttempts(key) {
      return op('clearAttempts', async () => {
        await client.del(attemptsKey(key))
      })
    },

    ping() {
      return op('ping', async () => {
        await client.ping()
      })
    },

    close: () => connection.close(),
  }
}

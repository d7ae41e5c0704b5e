/**
 * Redis request store, shared by every gateway replica.
 *
 * Keys (P = keyPrefix, default `jitgate:`):
 *   P{r_…}:request   the request's JSON; PX = its retention (none while a break-glass review is open)
 *   Prequests        sorted set of request ids scored by createdAt, for list()
 *   Prequests:open   the same for pending requests and open reviews, for listOpen() (the sweeper)
 *   Ponce:<key>      single-use claims (assertion jti, TOTP code), SET NX PX
 *   P{<key>}:attempts  attempt counters (TOTP codes tried per approver), INCR with a PX window
 * The compare-and-set runs as one Lua script on the request's own key, so it touches one Redis
 * Cluster slot. The two indexes are maintained next to it, not inside it (they live in other
 * slots); readers skip and prune entries whose record is gone or no longer open, so a stale
 * entry (an update arriving out of order) heals on the next read. An entry lost to a Redis fault
 * right after the record was written hides the request from list() and the sweeper only: get()
 * still finds it, and expires it when overdue.
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
 * KEYS: request. ARGV: expected (current) version, next JSON, PX in ms or "0" for no expiry.
 * Returns 1 when written, 0 when the record is gone or another writer moved its version.
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
  jitgateRequestUpdate(key: string, expectedVersion: number, json: string, pxMs: string): Promise<number>
  jitgateAttempt(key: string, windowMs: number): Promise<number>
}


export function createRedisRequestStore(opts: RedisRequestStoreOptions): RequestStore {
  const now = opts.now ?? Date.now
  const onError = opts.onError ?? (() => {})
  const { timeoutMs, keyPrefix: prefix } = opts
  const requestKey = (id: string): string => `${prefix}{${id}}:request`
  const indexKey = `${prefix}requests`
  const openKey = `${prefix}requests:open`
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
      c.defineCommand('jitgateRequestUpdate', { numberOfKeys: 1, lua: UPDATE_LUA })
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

  /** Keeps the open index in step with the record; a failure only costs listOpen() a stale entry. */
  const reindexOpen = (r: AccessRequest): Promise<unknown> =>
    (isOpen(r) ? client.zadd(openKey, r.createdAt, r.id) : client.zrem(openKey, r.id)).catch((err: unknown) => onError(toError(err)))

  /** Loads the records of an index in order; prunes ids whose record is gone (or fails `keep`). */
  const load = async (key: string, ids: string[], keep: (r: AccessRequest) => boolean): Promise<AccessRequest[]> => {
    const values = await Promise.all(ids.map((id) => client.get(requestKey(id))))
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

  return {
    kind: 'redis',

    create(request) {
      if (request.version !== 1) return Promise.reject(new RangeError('a new request has version 1'))
      const json = JSON.stringify(request)
      const ttl = px(request)
      return op('create', async () => {
        const set = ttl === '0' ? client.set(requestKey(request.id), json, 'NX') : client.set(requestKey(request.id), json, 'PX', ttl, 'NX')
        if ((await set) !== 'OK') throw new RequestExistsError(`request ${request.id} already exists`)
        // The request exists from here on: an index failure is reported, not a failed create.
        const indexed = client.zadd(indexKey, request.createdAt, request.id).catch((err: unknown) => onError(toError(err)))
        await Promise.all([indexed, reindexOpen(request)])
      })
    },

    get(id) {
      return op('get', async () => {
        const json = await client.get(requestKey(id))
        return json == null ? undefined : (JSON.parse(json) as AccessRequest)
      })
    },

    update(next) {
      const json = JSON.stringify(next)
      const ttl = px(next)
      return op('update', async () => {
        const written = await client.jitgateRequestUpdate(requestKey(next.id), next.version - 1, json, ttl)
        if (written !== 1) return false
        await reindexOpen(next)
        return true
      })
    },

    list(filter) {
      return op('list', async () => load(indexKey, await client.zrevrange(indexKey, 0, -1), (r) => matches(r, filter)))
    },

    listOpen() {
      return op('listOpen', async () => load(openKey, await client.zrange(openKey, 0, -1), isOpen))
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

/**
 * Redis request store, shared by every gateway replica.
 *
 * Keys (P = keyPrefix, default `jitgate:`):
 *   P{requests}:request:<id>  the request's JSON; PX = its retention (none while a break-glass
 *                             review is open)
 *   P{requests}:index         sorted set of request ids scored by createdAt, for list()
 *   P{requests}:open          the same for pending requests and open reviews, for listOpen() (the
 *                             sweeper)
 *   P{requests}:moving        set of the ids copied from the earlier layout (below) whose earlier
 *                             key is not yet known to be retired
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
 * the retention it had left. Its keys are in other slots than this layout's, so a move is several
 * one-slot steps (see `adopt`): copy (never over a record already here, never twice), then retire
 * the earlier key by compare-and-swap, replacing the exact value copied with a marker
 * (`{"movedTo":…}`, its TTL kept) that no reader takes for a request and no earlier-layout writer's
 * compare-and-set accepts (it has no version). A change an earlier-layout writer made in between is
 * carried over into the copy, if the copy is still unchanged here; a change nothing can carry
 * (both layouts written since the copy) is reported through onError, the copy kept. An id in
 * `moving` is never copied again (so a copy that reached its retention stays gone even if the
 * earlier key was never retired), and list/listOpen finish its move (the sweeper's next pass).
 * Replicas of the earlier layout must be stopped before replicas of this one serve: see the README.
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

/** Lua shared by the write scripts: the record (KEYS[1]) set to ARGV[2], with PX ARGV[3] unless "0". */
const SET_RECORD = `if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end`

/** Lua: the open index (KEYS[n]) holds id ARGV[4], scored ARGV[5], exactly when ARGV[6] is "1". */
function openIndexEntry(n: number): string {
  return `if ARGV[6] == '1' then
  redis.call('ZADD', KEYS[${n}], ARGV[5], ARGV[4])
else
  redis.call('ZREM', KEYS[${n}], ARGV[4])
end`
}

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
${SET_RECORD}
${openIndexEntry(2)}
return 1
`

/**
 * KEYS: request, index, open index, moving set. ARGV: id, JSON, PX in ms or "0" for no expiry,
 * createdAt, "1" when the request is open. The copy step of a move from the earlier layout: marks
 * the id as moving and writes the record and its index entries, unless the id was marked before (a
 * copy was made already: the record here may have reached its retention since, and must not come
 * back) or a record is here. Returns 1 when written, 0 otherwise.
 */
const ADOPT_LUA = `
if redis.call('SADD', KEYS[4], ARGV[1]) == 0 then return 0 end
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
 * KEYS: request, index, open index. ARGV: expected JSON (the copy), next JSON, PX in ms or "0" for
 * no expiry, id, createdAt, "1" when the next record is open. Carries a change the earlier layout
 * received after the copy into it: writes the record and its index entries only if the record is
 * still exactly the copy (nobody wrote it here since). Returns 1 when written, 0 otherwise.
 */
const CARRY_LUA = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
${SET_RECORD}
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[4])
${openIndexEntry(3)}
return 1
`

/** KEYS: earlier-layout request. Its value (or nil) and PTTL, read together. */
const LEGACY_READ_LUA = `
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
`

/**
 * KEYS: earlier-layout request. ARGV: expected JSON (the value copied), marker. Retires the key:
 * replaces the value with the marker, keeping the TTL, only if it is still exactly the value
 * copied. Returns {1} when retired, else {0, current value or nil, its PTTL}.
 */
const LEGACY_RETIRE_LUA = `
local raw = redis.call('GET', KEYS[1])
if raw == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return {1}
end
return {0, raw, redis.call('PTTL', KEYS[1])}
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
  jitgateRequestAdopt(key: string, indexKey: string, openKey: string, movingKey: string, id: string, json: string, pxMs: string, createdAt: number, open: '1' | '0'): Promise<number>
  jitgateRequestCarry(key: string, indexKey: string, openKey: string, expectedJson: string, json: string, pxMs: string, id: string, createdAt: number, open: '1' | '0'): Promise<number>
  jitgateLegacyRead(key: string): Promise<[string | null, number]>
  jitgateLegacyRetire(key: string, expectedJson: string, marker: string): Promise<[1] | [0, string | null, number]>
  jitgateAttempt(key: string, windowMs: number): Promise<number>
}

/** For tests only: a step of moving a request of the earlier layout can be interleaved or failed. */
export interface RedisRequestStoreHooks {
  /** Runs after the copy into this layout, before the earlier key is retired; a throw stops the move there. */
  readonly afterAdoptCopy?: (id: string) => Promise<void> | void
}

/** Rounds of carrying earlier-layout changes into a move before it gives up (the next pass goes on). */
const MAX_ADOPT_ROUNDS = 8

/** What an earlier-layout key holds once its request has moved: `{"movedTo": key}`, never a request. */
const isMoved = (v: unknown): boolean => typeof v === 'object' && v !== null && 'movedTo' in v

/** A stored value as a request; undefined for a moved marker. */
const parseStored = (json: string): AccessRequest | undefined => {
  const v = JSON.parse(json) as unknown
  return isMoved(v) ? undefined : (v as AccessRequest)
}

const writesOf = (r: AccessRequest): readonly string[] => r.writes ?? []
const isPrefix = (a: readonly string[], b: readonly string[]): boolean => a.length <= b.length && a.every((w, i) => b[i] === w)

/**
 * True when `later` is `earlier` plus writes of the earlier layout's replicas only: those raise the
 * version but never name themselves in `writes` (they predate it), so `writes` is unchanged.
 */
const builtOnInEarlierLayout = (later: AccessRequest, earlier: AccessRequest): boolean =>
  later.version > earlier.version && writesOf(later).length === writesOf(earlier).length && isPrefix(writesOf(earlier), writesOf(later))

/** True when `later` is `earlier` plus writes of this version only: each names itself in `writes`. */
const builtOnHere = (later: AccessRequest, earlier: AccessRequest): boolean =>
  later.version > earlier.version &&
  writesOf(later).length === writesOf(earlier).length + (later.version - earlier.version) &&
  isPrefix(writesOf(earlier), writesOf(later))


export function createRedisRequestStore(opts: RedisRequestStoreOptions, hooks: RedisRequestStoreHooks = {}): RequestStore {
  const now = opts.now ?? Date.now
  const onError = opts.onError ?? (() => {})
  const { timeoutMs, keyPrefix: prefix } = opts
  const tag = `${prefix}{requests}`
  const requestKey = (id: string): string => `${tag}:request:${id}`
  const indexKey = `${tag}:index`
  const openKey = `${tag}:open`
  const movingKey = `${tag}:moving`
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
      c.defineCommand('jitgateRequestAdopt', { numberOfKeys: 4, lua: ADOPT_LUA })
      c.defineCommand('jitgateRequestCarry', { numberOfKeys: 3, lua: CARRY_LUA })
      c.defineCommand('jitgateLegacyRead', { numberOfKeys: 1, lua: LEGACY_READ_LUA })
      c.defineCommand('jitgateLegacyRetire', { numberOfKeys: 1, lua: LEGACY_RETIRE_LUA })
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
      const r = json == null ? undefined : parseStored(json)
      if (r === undefined) {
        stale.push(ids[i] as string)
        return
      }
      if (keep(r)) found.push(r)
      else if (key === openKey) stale.push(r.id)
    })
    if (stale.length > 0) client.zrem(key, ...stale).catch((err: unknown) => onError(toError(err)))
    return found.sort(byNewest)
  }

  /** PX of a copy: the retention the earlier key had left ("0": none). */
  const pxLeft = (pttl: number): string => (pttl === -1 ? '0' : String(Math.max(1, pttl)))

  /**
   * With no copy of its own in hand (another replica's move, or one interrupted before the earlier
   * key was retired), what to do with the earlier key's `current` value: the record here to carry it
   * over (an unchanged copy that `current` was built on), or null to retire it as it is (the record
   * here is built on it, or reached its retention: the earlier one must not come back).
   */
  const settle = async (id: string, current: string, cur: AccessRequest): Promise<string | null> => {
    const json = await client.get(requestKey(id))
    if (json == null || json === current) return json
    const here = parseStored(json)
    if (here === undefined) return null
    if (builtOnInEarlierLayout(cur, here)) return json
    if (!builtOnHere(here, cur)) {
      onError(
        new Error(
          `request ${id}: written in both key layouts since it was moved (an earlier-version replica was still serving): ` +
            `kept version ${here.version} of this layout, refused version ${cur.version} of the earlier one`,
        ),
      )
    }
    return null
  }

  /**
   * Moves a request of the earlier layout into this one, with the retention it had left; undefined
   * when there is none. Its keys are in other slots, so no one script can do it; each step is one
   * script in one slot:
   *   1. read the earlier key (value and PTTL together);
   *   2. copy it here, unless a record is here or the id was copied before (`moving`);
   *   3. retire the earlier key: only if it still holds exactly the value copied, replace it with
   *      the moved marker (TTL kept). An earlier-layout writer's compare-and-set fails from then on;
   *   4. if it changed in between (an earlier-layout replica wrote it), carry the change over with a
   *      compare-and-set on the record here, only if that is still exactly the copy, then retire the
   *      new value; repeat, a bounded number of times.
   * Replicas moving one request at the same time converge: one copies, every one retires or carries
   * by compare-and-set. A move interrupted after its copy leaves the id in `moving`: it is never
   * copied again, and list/listOpen finish it (from step 3, with `settle`).
   */
  const adopt = async (id: string): Promise<AccessRequest | undefined> => {
    const legacyKey = legacyRequestKey(id)
    let [current, pttl] = await client.jitgateLegacyRead(legacyKey)
    // None, or moved already (a marker).
    if (current == null) return undefined
    let cur = parseStored(current)
    if (cur === undefined) return undefined
    const copied = await client.jitgateRequestAdopt(requestKey(id), indexKey, openKey, movingKey, id, current, pxLeft(pttl), cur.createdAt, openFlag(cur))
    // The exact value the record here holds as an unchanged copy; undefined: not known; null: none to
    // keep in step (retire the earlier value as it is).
    let copy: string | null | undefined = copied === 1 ? current : undefined
    await hooks.afterAdoptCopy?.(id)
    for (let round = 0; ; round++) {
      if (round === MAX_ADOPT_ROUNDS) throw new Error(`request ${id}: its earlier-layout record kept changing while being moved`)
      if (copy === undefined) copy = await settle(id, current, cur)
      if (copy !== null && copy !== current) {
        const carried = await client.jitgateRequestCarry(requestKey(id), indexKey, openKey, copy, current, pxLeft(pttl), id, cur.createdAt, openFlag(cur))
        // Written here since the copy: look again.
        if (carried !== 1) {
          copy = undefined
          continue
        }
        copy = current
      }
      const retired = await client.jitgateLegacyRetire(legacyKey, current, JSON.stringify({ movedTo: requestKey(id) }))
      if (retired[0] === 1) break
      const [, latest, latestPttl] = retired
      // Gone (its retention), or retired by another replica.
      if (latest == null) break
      const next = parseStored(latest)
      if (next === undefined) break
      // Changed by an earlier-layout writer since it was read: carry that over the copy (or settle anew).
      ;[current, pttl, cur] = [latest, latestPttl, next]
      if (copy === null) copy = undefined
    }
    await Promise.all([client.srem(movingKey, id), client.zrem(legacyIndexKey, id), client.zrem(legacyOpenKey, id)])
    const moved = await client.get(requestKey(id))
    return moved == null ? undefined : parseStored(moved)
  }

  /**
   * The ids of an index, after moving the requests still listed in its earlier-layout twin and
   * finishing the moves left unfinished.
   */
  const indexed = async (key: string, legacyKey: string, read: (key: string) => Promise<string[]>): Promise<string[]> => {
    const [ids, legacy, moving] = await Promise.all([read(key), client.zrange(legacyKey, 0, -1), client.smembers(movingKey)])
    if (legacy.length === 0 && moving.length === 0) return ids
    await Promise.all([...new Set([...legacy, ...moving])].map(adopt))
    // Entries whose record had reached its retention go too; every move read here is finished.
    await Promise.all([legacy.length > 0 && client.zrem(legacyKey, ...legacy), moving.length > 0 && client.srem(movingKey, ...moving)])
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
        return json == null ? adopt(id) : parseStored(json)
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

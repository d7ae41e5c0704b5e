import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { createRedisRequestStore } from '../../src/workflow/redis-request-store.js'
import { StoreUnavailableError } from '../../src/grants/types.js'
import { startRedis } from '../helpers/redis-server.js'
import { isOpen, type AccessRequest } from '../../src/workflow/request-store.js'
import { makeRequest, requestStoreContract, revise } from './request-store-contract.js'

const redis = await startRedis(t)

/** A fresh key prefix per pair, so tests sharing the server never see each other's keys. */
let prefixes = 0

await requestStoreContract(t, 'redis', async (opts) => {
  const keyPrefix = `rq${++prefixes}:`
  return [createRedisRequestStore({ ...opts, url: redis.url, keyPrefix }), createRedisRequestStore({ ...opts, url: redis.url, keyPrefix })] as const
})

t.test('fails closed and fast while Redis is hung, and recovers', async (t) => {
  const store = createRedisRequestStore({ url: redis.url, keyPrefix: `rq${++prefixes}:`, timeoutMs: 200, retentionMs: 60_000 })
  t.teardown(() => store.close())
  const r = makeRequest()
  await store.create(r)
  redis.pause()
  t.teardown(() => {
    try {
      redis.resume()
    } catch {
      // already resumed
    }
  })
  const started = Date.now()
  await t.rejects(store.get(r.id), StoreUnavailableError)
  t.ok(Date.now() - started < 2000, 'answers within the deadline')
  await t.rejects(store.countAttempt('totp:alice', 60_000), StoreUnavailableError, 'no attempt can be counted, so none is allowed')
  redis.resume()
  let got
  for (let i = 0; i < 100 && got === undefined; i++) {
    got = await store.get(r.id).catch(() => undefined)
    if (got === undefined) await new Promise((res) => setTimeout(res, 50))
  }
  t.same(got, r, 'the store answers again once Redis does')
})

t.test('attempt counters live under the prefix, with a hash tag, for their window only', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const store = createRedisRequestStore({ url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 })
  const raw = new Redis(redis.port, '127.0.0.1')
  t.teardown(async () => {
    raw.disconnect()
    await store.close()
  })
  t.equal(await store.countAttempt('totp:alice', 300_000), 1)
  t.equal(await raw.get(`${keyPrefix}{totp:alice}:attempts`), '1')
  const pttl = await raw.pttl(`${keyPrefix}{totp:alice}:attempts`)
  t.ok(pttl > 290_000 && pttl <= 300_000, `PTTL ${pttl}: the window`)
  await store.clearAttempts('totp:alice')
  t.equal(await raw.exists(`${keyPrefix}{totp:alice}:attempts`), 0)
})

/** Polls `fn` until it resolves with something other than undefined (real time, bounded). */
async function eventually<T>(fn: () => Promise<T | undefined>, ms = 5000): Promise<T | undefined> {
  const deadline = Date.now() + ms
  for (;;) {
    const value = await fn().catch(() => undefined)
    if (value !== undefined || Date.now() > deadline) return value
    await sleep(50)
  }
}

t.test('a create and an update Redis runs after their deadline (hung, then resumed) land whole: record and index entries together', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const opts = { url: redis.url, keyPrefix, timeoutMs: 200, retentionMs: 60_000 }
  const store = createRedisRequestStore(opts)
  const replica = createRedisRequestStore(opts)
  const raw = new Redis(redis.port, '127.0.0.1')
  t.teardown(async () => {
    raw.disconnect()
    await store.close()
    await replica.close()
  })
  const decided = makeRequest({ createdAt: Date.now() - 1000 })
  await store.create(decided)
  const late = makeRequest()

  redis.pause()
  t.teardown(() => {
    try {
      redis.resume()
    } catch {
      // already resumed
    }
  })
  await t.rejects(store.create(late), StoreUnavailableError, 'the create is not confirmed in time')
  await t.rejects(store.update(revise(decided, { status: 'denied' })), StoreUnavailableError, 'nor is the update')
  await sleep(300)
  redis.resume()

  t.same(await eventually(() => replica.get(late.id)), late, 'the create ran once Redis woke up')
  t.same((await replica.list()).map((r) => r.id), [late.id, decided.id], 'the late request is listed')
  t.same((await replica.listOpen()).map((r) => r.id), [late.id], 'and found by the sweeper; the late denial left the open index')
  t.same(await raw.zrange(`${keyPrefix}{requests}:open`, 0, -1), [late.id], 'in the index itself, not only as read')
  t.match(await replica.get(decided.id), { status: 'denied', version: 2 })
})

t.test('every key of the request workflow shares one hash tag, so each write is one script in one slot', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const store = createRedisRequestStore({ url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 })
  const raw = new Redis(redis.port, '127.0.0.1')
  t.teardown(async () => {
    raw.disconnect()
    await store.close()
  })
  const r = makeRequest()
  await store.create(r)
  t.same((await raw.keys(`${keyPrefix}*`)).sort(), [`${keyPrefix}{requests}:index`, `${keyPrefix}{requests}:open`, `${keyPrefix}{requests}:request:${r.id}`].sort())
  t.same(JSON.parse((await raw.get(`${keyPrefix}{requests}:request:${r.id}`)) as string), r)
  await store.update(revise(r, { status: 'cancelled' }))
  t.same(await raw.zrange(`${keyPrefix}{requests}:open`, 0, -1), [], 'the update left the open index in the same step')
  t.same(await raw.zrange(`${keyPrefix}{requests}:index`, 0, -1), [r.id])
})

t.test('requests stored under the earlier layout (a hash tag per request) are moved on first sight, TTL and all', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const raw = new Redis(redis.port, '127.0.0.1')
  const store = createRedisRequestStore({ url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 })
  t.teardown(async () => {
    raw.disconnect()
    await store.close()
  })
  const pending = makeRequest({ createdAt: Date.now() - 3000 })
  const denied = makeRequest({ createdAt: Date.now() - 2000, status: 'denied', version: 2 })
  const glass = makeRequest({ createdAt: Date.now() - 1000, kind: 'break_glass', status: 'approved', review: { status: 'open' } })
  // As the earlier layout wrote them: the record under its own hash tag, the indexes in other slots.
  await raw.set(`${keyPrefix}{${pending.id}}:request`, JSON.stringify(pending), 'PX', 120_000)
  await raw.set(`${keyPrefix}{${denied.id}}:request`, JSON.stringify(denied), 'PX', 120_000)
  await raw.set(`${keyPrefix}{${glass.id}}:request`, JSON.stringify(glass))
  for (const r of [pending, denied, glass]) await raw.zadd(`${keyPrefix}requests`, r.createdAt, r.id)
  for (const r of [pending, glass]) await raw.zadd(`${keyPrefix}requests:open`, r.createdAt, r.id)

  t.same(await store.get(denied.id), denied, 'found by id')
  t.same((await store.listOpen()).map((r) => r.id), [glass.id, pending.id], 'found by the sweeper')
  t.same((await store.list()).map((r) => r.id), [glass.id, denied.id, pending.id], 'and listed')
  t.equal(await store.update(revise(pending, { status: 'expired' })), true, 'and updated where it now lives')
  t.same((await store.listOpen()).map((r) => r.id), [glass.id])
  const earlier = [pending, denied, glass].map((r) => `${keyPrefix}{${r.id}}:request`)
  t.same(
    (await raw.keys(`${keyPrefix}*`)).sort(),
    [`${keyPrefix}{requests}:index`, `${keyPrefix}{requests}:open`, ...[pending, denied, glass].map((r) => `${keyPrefix}{requests}:request:${r.id}`), ...earlier].sort(),
    'nothing is left under the earlier layout but the keys of the requests moved',
  )
  t.same(
    await raw.mget(earlier),
    [pending, denied, glass].map((r) => JSON.stringify({ movedTo: `${keyPrefix}{requests}:request:${r.id}` })),
    'which hold the moved marker only',
  )
  const pttl = await raw.pttl(`${keyPrefix}{requests}:request:${denied.id}`)
  t.ok(pttl > 100_000 && pttl <= 120_000, `PTTL ${pttl}: the retention it had`)
  t.equal(await raw.pttl(`${keyPrefix}{requests}:request:${glass.id}`), -1, 'an open review is kept')
  const markerPttl = await raw.pttl(`${keyPrefix}{${denied.id}}:request`)
  t.ok(markerPttl > 100_000 && markerPttl <= 120_000, `marker PTTL ${markerPttl}: the earlier key's TTL, kept`)
})

// ---- moving requests of the earlier layout while an earlier-version replica may still write them ----

/** The compare-and-set script of the earlier version, verbatim: what an earlier-version replica runs. */
const EARLIER_UPDATE_LUA = `
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

/** The keys of both layouts under one prefix. */
function layout(keyPrefix: string) {
  return {
    earlier: (id: string) => `${keyPrefix}{${id}}:request`,
    earlierIndex: `${keyPrefix}requests`,
    earlierOpen: `${keyPrefix}requests:open`,
    here: (id: string) => `${keyPrefix}{requests}:request:${id}`,
    index: `${keyPrefix}{requests}:index`,
    open: `${keyPrefix}{requests}:open`,
    moving: `${keyPrefix}{requests}:moving`,
    marker: (id: string) => JSON.stringify({ movedTo: `${keyPrefix}{requests}:request:${id}` }),
  }
}

/** What an earlier-version replica's create() wrote: the record under its own hash tag, the indexes apart. */
async function earlierCreate(raw: Redis, keyPrefix: string, r: AccessRequest, pxMs?: number): Promise<void> {
  const k = layout(keyPrefix)
  if (pxMs === undefined) await raw.set(k.earlier(r.id), JSON.stringify(r), 'NX')
  else await raw.set(k.earlier(r.id), JSON.stringify(r), 'PX', pxMs, 'NX')
  await raw.zadd(k.earlierIndex, r.createdAt, r.id)
  if (isOpen(r)) await raw.zadd(k.earlierOpen, r.createdAt, r.id)
}

/** An earlier-version replica's update(): its compare-and-set, then its open index. True when written. */
async function earlierUpdate(raw: Redis, keyPrefix: string, next: AccessRequest, pxMs?: number): Promise<boolean> {
  const k = layout(keyPrefix)
  const written = await raw.eval(EARLIER_UPDATE_LUA, 1, k.earlier(next.id), next.version - 1, JSON.stringify(next), pxMs === undefined ? '0' : String(pxMs))
  if (written !== 1) return false
  if (isOpen(next)) await raw.zadd(k.earlierOpen, next.createdAt, next.id)
  else await raw.zrem(k.earlierOpen, next.id)
  return true
}

/** An approval as the earlier version recorded it (no write id: it predates them). */
const approve = (r: AccessRequest): AccessRequest =>
  revise(r, { status: 'approved', decidedAt: Date.now(), decidedBy: 'alice', approvals: [{ approver: 'alice', stage: 0, at: Date.now() }], grantStartsAt: Date.now(), grantExpiresAt: Date.now() + 3_600_000 })

/** A change as this version records it: one write id per version. */
const reviseHere = (r: AccessRequest, changes: Partial<AccessRequest>, writeId: string): AccessRequest => ({ ...revise(r, changes), writes: [...(r.writes ?? []), writeId] })

t.test('moving: an earlier-layout write landing between the copy and the retire is carried into the moved record, and later ones are refused', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const r = makeRequest({ createdAt: Date.now() - 1000 })
  const approved = approve(r)
  let landed: boolean | undefined
  const store = createRedisRequestStore(
    { url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 },
    {
      // Exactly between the copy and the retire: an earlier-version replica records the approval.
      afterAdoptCopy: async (id) => {
        if (id === r.id && landed === undefined) landed = await earlierUpdate(raw, keyPrefix, approved, 200_000)
      },
    },
  )
  t.teardown(async () => {
    raw.disconnect()
    await store.close()
  })
  await earlierCreate(raw, keyPrefix, r, 120_000)

  t.same(await store.get(r.id), approved, 'the move answers with the approval')
  t.equal(landed, true, 'which the earlier-version replica was told was written')
  t.same(JSON.parse((await raw.get(k.here(r.id))) as string), approved, 'it is the moved record')
  const pttl = await raw.pttl(k.here(r.id))
  t.ok(pttl > 180_000 && pttl <= 200_000, `PTTL ${pttl}: the retention its writer gave it`)
  t.same(await raw.zrange(k.index, 0, -1), [r.id])
  t.same(await raw.zrange(k.open, 0, -1), [], 'an approved request is not open')
  t.equal(await raw.get(k.earlier(r.id)), k.marker(r.id), 'the earlier key is retired (its new value, not the copy, was the one retired)')
  const markerPttl = await raw.pttl(k.earlier(r.id))
  t.ok(markerPttl > 180_000 && markerPttl <= 200_000, `marker PTTL ${markerPttl}: kept`)
  t.equal(await raw.exists(k.moving, k.earlierIndex, k.earlierOpen), 0, 'the move is finished; the earlier indexes are gone')

  // From now on an earlier-version replica's compare-and-set is refused, not written where nobody reads.
  t.equal(await earlierUpdate(raw, keyPrefix, revise(approved, { status: 'cancelled' }), 200_000), false, 'a later earlier-layout write is refused')
  t.equal(await raw.get(k.earlier(r.id)), k.marker(r.id))
  t.same(await store.get(r.id), approved)
})

t.test('moving: earlier-layout writes racing moves (100 races) are each carried into the moved record or refused, never lost', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const store = createRedisRequestStore({ url: redis.url, keyPrefix, timeoutMs: 2000, retentionMs: 60_000 })
  t.teardown(async () => {
    raw.disconnect()
    await store.close()
  })
  let carried = 0
  const wrong: string[] = []
  for (let i = 0; i < 100; i++) {
    const r = makeRequest()
    await earlierCreate(raw, keyPrefix, r, 120_000)
    const approved = approve(r)
    const writer = (async () => {
      // Spread the write over the steps of the move.
      for (let hop = 0; hop < i % 10; hop++) await new Promise((res) => setImmediate(res))
      return earlierUpdate(raw, keyPrefix, approved, 120_000)
    })()
    const [answer, acknowledged] = await Promise.all([store.get(r.id), writer])
    const expected = acknowledged ? approved : r
    if (acknowledged) carried++
    const final = await store.get(r.id)
    if (JSON.stringify(final) !== JSON.stringify(expected)) wrong.push(`race ${i}: acknowledged ${acknowledged}, moved record version ${final?.version}`)
    if (JSON.stringify(answer) !== JSON.stringify(expected)) wrong.push(`race ${i}: the move answered version ${answer?.version}`)
    if ((await raw.get(k.earlier(r.id))) !== k.marker(r.id)) wrong.push(`race ${i}: the earlier key is not retired`)
  }
  t.comment(`${carried} earlier-layout approvals acknowledged (landed before the retire: copied or carried over), ${100 - carried} refused (after it)`)
  t.same(wrong, [], 'every acknowledged write is in the moved record, every other one was refused')
  t.equal(await raw.exists(k.moving), 0, 'every move finished')
})

t.test('moving: two replicas moving one request while an earlier-version replica writes it converge on the write', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const opts = { url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 }
  const r = makeRequest()
  const approved = approve(r)
  const replicaB = createRedisRequestStore(opts)
  let landed: boolean | undefined
  let sweptB: AccessRequest[] | undefined
  const replicaA = createRedisRequestStore(opts, {
    afterAdoptCopy: async () => {
      landed = await earlierUpdate(raw, keyPrefix, approved, 120_000)
      // B's sweep finds the copy A made (so it copies nothing) and a newer earlier-layout record: it
      // carries that over and retires the earlier key.
      sweptB = await replicaB.listOpen()
    },
  })
  t.teardown(async () => {
    raw.disconnect()
    await replicaA.close()
    await replicaB.close()
  })
  await earlierCreate(raw, keyPrefix, r, 120_000)
  t.same(await replicaA.get(r.id), approved, 'A, whose retire then finds the key retired by B, answers with the write')
  t.equal(landed, true)
  t.same(sweptB, [], 'B moved the approval over: nothing is open')
  t.same(await replicaB.get(r.id), approved)
  t.equal(await raw.get(k.earlier(r.id)), k.marker(r.id))
  t.equal(await raw.exists(k.moving), 0)
  t.same(await replicaA.list(), [approved])
  t.same(await replicaA.listOpen(), [])
})

t.test('moving: a request written in both layouts after its copy keeps this layout\'s write, and the conflict is reported, not silent', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const errors: Error[] = []
  const opts = { url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 }
  const r = makeRequest()
  const approvedEarlier = approve(r)
  const deniedHere = reviseHere(r, { status: 'denied', decidedAt: Date.now(), decidedBy: 'bob' }, 'w-deny')
  const replicaB = createRedisRequestStore(opts)
  let writes: [boolean, boolean] | undefined
  const replicaA = createRedisRequestStore(
    { ...opts, onError: (err) => errors.push(err) },
    { afterAdoptCopy: async () => void (writes = [await earlierUpdate(raw, keyPrefix, approvedEarlier, 120_000), await replicaB.update(deniedHere)]) },
  )
  t.teardown(async () => {
    raw.disconnect()
    await replicaA.close()
    await replicaB.close()
  })
  await earlierCreate(raw, keyPrefix, r, 120_000)
  t.same(await replicaA.get(r.id), deniedHere, 'the denial made in this layout stands')
  t.same(writes, [true, true], 'both writes were acknowledged to their writers')
  t.equal(errors.length, 1, 'the approval that cannot be carried is reported')
  t.match(errors[0]?.message, new RegExp(`request ${r.id}: written in both key layouts.*kept version 2 of this layout, refused version 2 of the earlier one`))
  t.equal(await raw.get(k.earlier(r.id)), k.marker(r.id), 'the earlier key is retired all the same')
  t.equal(await raw.exists(k.moving), 0)
})

t.test('moving: a lost retire never brings the earlier copy back, once the moved record is closed and reaches its retention', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const opts = { url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 100 }
  const hourAgo = Date.now() - 3_600_000
  const glass = makeRequest({
    kind: 'break_glass',
    status: 'approved',
    createdAt: hourAgo - 60_000,
    expiresAt: hourAgo,
    grantStartsAt: hourAgo - 60_000,
    grantExpiresAt: hourAgo,
    review: { status: 'open' },
  })
  // The move copies, then stops before the retire (a Redis timeout there).
  const interrupted = createRedisRequestStore(opts, {
    afterAdoptCopy: () => {
      throw new Error('the retire was lost')
    },
  })
  const store = createRedisRequestStore(opts)
  t.teardown(async () => {
    raw.disconnect()
    await interrupted.close()
    await store.close()
  })
  await earlierCreate(raw, keyPrefix, glass)
  await t.rejects(interrupted.get(glass.id), StoreUnavailableError)
  t.same(JSON.parse((await raw.get(k.here(glass.id))) as string), glass, 'copied')
  t.equal(await raw.get(k.earlier(glass.id)), JSON.stringify(glass), 'the earlier key left as it was')
  t.equal(await raw.sismember(k.moving, glass.id), 1, 'the id is marked as moving')

  // A reviewer closes the review here; the record then reaches its retention (long past).
  t.same(await store.get(glass.id), glass, 'the copy is read here')
  const closed = reviseHere(glass, { review: { status: 'closed', reviewedBy: 'bob', reviewedAt: Date.now() } }, 'w-review')
  t.equal(await store.update(closed), true, 'review closed')
  await sleep(100)
  t.equal(await raw.exists(k.here(glass.id)), 0, 'the closed record reached its retention')

  t.equal(await store.get(glass.id), undefined, 'get does not bring the earlier copy back')
  t.equal(await raw.exists(k.here(glass.id)), 0)
  t.same(await store.listOpen(), [], 'the sweeper does not find it open again')
  t.same(await store.list(), [], 'nor is it listed')
  t.equal(await raw.exists(k.here(glass.id), k.open, k.index, k.moving), 0, 'nothing came back, and the move is finished')
  t.equal(await raw.get(k.earlier(glass.id)), k.marker(glass.id), 'the earlier key is retired')
})

t.test('moving: a lost retire never reopens a review closed in this layout', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const opts = { url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 }
  const glass = makeRequest({ kind: 'break_glass', status: 'approved', grantStartsAt: Date.now(), grantExpiresAt: Date.now() + 3_600_000, review: { status: 'open' } })
  const interrupted = createRedisRequestStore(opts, {
    afterAdoptCopy: () => {
      throw new Error('the retire was lost')
    },
  })
  const store = createRedisRequestStore(opts)
  t.teardown(async () => {
    raw.disconnect()
    await interrupted.close()
    await store.close()
  })
  await earlierCreate(raw, keyPrefix, glass)
  await t.rejects(interrupted.listOpen(), StoreUnavailableError)
  const closed = reviseHere(glass, { review: { status: 'closed', reviewedBy: 'bob', reviewedAt: Date.now() } }, 'w-review')
  t.equal(await store.update(closed), true, 'review closed here')

  t.same(await store.listOpen(), [], 'the sweeper does not find it open again')
  t.same(await store.get(glass.id), closed)
  t.same(await store.list(), [closed])
  t.same(await raw.zrange(k.open, 0, -1), [], 'not in the open index')
  t.equal(await raw.get(k.earlier(glass.id)), k.marker(glass.id), 'the sweeper finished the move: the earlier key is retired')
  t.equal(await raw.exists(k.moving, k.earlierIndex, k.earlierOpen), 0)
  t.same(await store.listOpen(), [])
  t.same(await store.get(glass.id), closed, 'and stays closed')
})

t.test('moving: an earlier-layout write after an interrupted move is carried over by the next sweep', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const opts = { url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 }
  const r = makeRequest()
  const interrupted = createRedisRequestStore(opts, {
    afterAdoptCopy: () => {
      throw new Error('the retire was lost')
    },
  })
  const store = createRedisRequestStore(opts)
  t.teardown(async () => {
    raw.disconnect()
    await interrupted.close()
    await store.close()
  })
  await earlierCreate(raw, keyPrefix, r, 120_000)
  await t.rejects(interrupted.get(r.id), StoreUnavailableError)
  const approved = approve(r)
  t.equal(await earlierUpdate(raw, keyPrefix, approved, 150_000), true, 'an earlier-version replica approves it on the key not yet retired')
  t.same(await store.listOpen(), [], 'the sweeper finishes the move, carrying the approval over: nothing is open')
  t.same(await store.get(r.id), approved)
  const pttl = await raw.pttl(k.here(r.id))
  t.ok(pttl > 130_000 && pttl <= 150_000, `PTTL ${pttl}: the approval's`)
  t.equal(await raw.get(k.earlier(r.id)), k.marker(r.id))
  t.equal(await raw.exists(k.moving, k.earlierIndex, k.earlierOpen), 0)
})

t.test('moving: a moved marker is never read as a request', async (t) => {
  const keyPrefix = `rq${++prefixes}:`
  const k = layout(keyPrefix)
  const raw = new Redis(redis.port, '127.0.0.1')
  const store = createRedisRequestStore({ url: redis.url, keyPrefix, timeoutMs: 1000, retentionMs: 60_000 })
  t.teardown(async () => {
    raw.disconnect()
    await store.close()
  })
  // An earlier key retired by a move whose record here is gone, still listed in the earlier indexes.
  const gone = makeRequest()
  await raw.set(k.earlier(gone.id), k.marker(gone.id), 'PX', 60_000)
  await raw.zadd(k.earlierIndex, gone.createdAt, gone.id)
  await raw.zadd(k.earlierOpen, gone.createdAt, gone.id)
  // And, never written by jitgate but read all the same, a marker where a record would be.
  const odd = makeRequest()
  await raw.set(k.here(odd.id), k.marker(odd.id))
  await raw.zadd(k.index, odd.createdAt, odd.id)
  await raw.zadd(k.open, odd.createdAt, odd.id)

  t.equal(await store.get(gone.id), undefined)
  t.equal(await store.get(odd.id), undefined)
  t.same(await store.listOpen(), [])
  t.same(await store.list(), [])
  t.equal(await raw.exists(k.here(gone.id)), 0, 'nothing was moved')
  t.equal(await raw.exists(k.earlierIndex, k.earlierOpen, k.index, k.open, k.moving), 0, 'the index entries are pruned')
  t.equal(await raw.get(k.earlier(gone.id)), k.marker(gone.id), 'the marker stays')
})

import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Redis } from 'ioredis'
import { createRedisRequestStore } from '../../src/workflow/redis-request-store.js'
import { StoreUnavailableError } from '../../src/grants/types.js'
import { startRedis } from '../helpers/redis-server.js'
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
  t.same(
    (await raw.keys(`${keyPrefix}*`)).sort(),
    [`${keyPrefix}{requests}:index`, `${keyPrefix}{requests}:open`, ...[pending, denied, glass].map((r) => `${keyPrefix}{requests}:request:${r.id}`)].sort(),
    'nothing is left under the earlier layout',
  )
  const pttl = await raw.pttl(`${keyPrefix}{requests}:request:${denied.id}`)
  t.ok(pttl > 100_000 && pttl <= 120_000, `PTTL ${pttl}: the retention it had`)
  t.equal(await raw.pttl(`${keyPrefix}{requests}:request:${glass.id}`), -1, 'an open review is kept')
})

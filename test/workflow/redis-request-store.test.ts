import t from 'tap'
import { Redis } from 'ioredis'
import { createRedisRequestStore } from '../../src/workflow/redis-request-store.js'
import { StoreUnavailableError } from '../../src/grants/types.js'
import { startRedis } from '../helpers/redis-server.js'
import { makeRequest, requestStoreContract } from './request-store-contract.js'

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

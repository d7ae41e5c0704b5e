import t from 'tap'
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
  redis.resume()
  let got
  for (let i = 0; i < 100 && got === undefined; i++) {
    got = await store.get(r.id).catch(() => undefined)
    if (got === undefined) await new Promise((res) => setTimeout(res, 50))
  }
  t.same(got, r, 'the store answers again once Redis does')
})

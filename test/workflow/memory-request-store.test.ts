import t from 'tap'
import { createMemoryRequestStore } from '../../src/workflow/memory-request-store.js'
import { makeRequest, requestStoreContract } from './request-store-contract.js'

await requestStoreContract(t, 'memory', async (opts) => {
  const store = createMemoryRequestStore(opts)
  return [store, store] as const
})

t.test('stored requests are frozen copies the caller cannot change', async (t) => {
  const store = createMemoryRequestStore({ timeoutMs: 100, retentionMs: 1000 })
  t.teardown(() => store.close())
  const scopes = ['GET /a']
  const r = makeRequest({ scopes })
  await store.create(r)
  scopes.push('DELETE /**')
  const got = await store.get(r.id)
  t.same(got?.scopes, ['GET /a'])
  t.ok(Object.isFrozen(got?.scopes))
})

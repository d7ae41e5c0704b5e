import t from 'tap'
import { createMemoryGrantStore } from '../../src/grants/memory-store.js'
import { grantStoreContract, makeGrant } from './contract.js'

await grantStoreContract(t, 'memory', async (opts) => createMemoryGrantStore(opts))

// The memory store reads only its injected clock, so its boundaries can be checked to the ms.
t.test('expiry and tombstone boundaries follow the injected clock exactly', async (t) => {
  const base = Date.now()
  let now = base
  const store = createMemoryGrantStore({ timeoutMs: 100, minTombstoneMs: 5000, now: () => now })
  t.teardown(() => store.close())
  const plain = makeGrant({ expiresAt: base + 1000 })
  const short = makeGrant({ expiresAt: base + 1000 })
  const long = makeGrant({ expiresAt: base + 10_000 })
  for (const g of [plain, short, long]) await store.create(g)
  await store.revoke(short.id, 'bob', 'x')
  await store.revoke(long.id, 'bob', 'x')

  now = base + 999
  t.equal((await store.get(plain.id)).status, 'active')
  now = base + 1000
  t.equal((await store.get(plain.id)).status, 'not_found', 'expired at expiresAt')

  now = base + 4999
  t.equal((await store.get(short.id)).status, 'revoked')
  now = base + 5000
  t.equal((await store.get(short.id)).status, 'not_found', 'tombstone ends at revokedAt + minTombstoneMs')

  now = base + 9999
  t.equal((await store.get(long.id)).status, 'revoked')
  now = base + 10_000
  t.equal((await store.get(long.id)).status, 'not_found', 'tombstone ends with the grant')
})

t.test('stored grants are copies the caller cannot change', async (t) => {
  const store = createMemoryGrantStore({ timeoutMs: 100, minTombstoneMs: 1000 })
  t.teardown(() => store.close())
  const scopes = ['GET /a']
  const grant = makeGrant({ scopes })
  await store.create(grant)
  scopes.push('DELETE /**')
  t.match(await store.get(grant.id), { status: 'active', grant: { scopes: ['GET /a'] } })
  t.equal((await store.list())[0]?.scopes.length, 1)
})

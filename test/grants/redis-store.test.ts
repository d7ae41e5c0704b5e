import { Redis } from 'ioredis'
import t, { type Test } from 'tap'
import { createRedisGrantStore } from '../../src/grants/redis-store.js'
import { StoreUnavailableError, type GrantStore, type RedisGrantStoreOptions } from '../../src/grants/types.js'
import { startRedis } from '../helpers/redis-server.js'
import {
  eventually,
  grantStoreContract,
  isIssued,
  isRevoked,
  makeGrant,
  recordEvents,
  unclaimedGrant,
  untilSubscribed,
} from './contract.js'

const redis = await startRedis(t)

/** A fresh key prefix per store group, so tests sharing the server never see each other's keys. */
let prefixes = 0
const newPrefix = (): string => `jg${++prefixes}:`

const open = (t: Test, opts: Partial<RedisGrantStoreOptions> = {}): GrantStore => {
  const store = createRedisGrantStore({
    url: redis.url,
    keyPrefix: newPrefix(),
    timeoutMs: 1000,
    minTombstoneMs: 60_000,
    ...opts,
  })
  t.teardown(() => store.close())
  return store
}

/**
 * Asserts that `key` expires at `endsAt` (epoch ms). Redis counts a PX from when it received the
 * command, a little after the store computed it: hence slack on the upper bound only.
 */
const expiresAt = async (t: Test, raw: Redis, key: string, endsAt: number, what: string): Promise<void> => {
  const before = Date.now()
  const pttl = await raw.pttl(key)
  const after = Date.now()
  t.ok(pttl >= endsAt - after - 5 && pttl <= endsAt - before + 500, `${what}: PTTL ${pttl} ends at ${endsAt}`)
}

/** A plain client for looking at what the store wrote. */
const rawClient = (t: Test): Redis => {
  const client = new Redis(redis.port, '127.0.0.1', { maxRetriesPerRequest: 1 })
  client.on('error', () => {}) // expected while a test has the server down
  t.teardown(() => client.disconnect())
  return client
}

/** Rejects with StoreUnavailableError within `boundMs`: the fail-closed guarantee on a dead Redis. */
const failsFast = async (t: Test, what: string, op: () => Promise<unknown>, boundMs: number): Promise<void> => {
  const started = Date.now()
  await t.rejects(op(), StoreUnavailableError, `${what} rejects with StoreUnavailableError`)
  const took = Date.now() - started
  t.ok(took < boundMs, `${what} failed in ${took} ms (bound ${boundMs} ms)`)
}

await grantStoreContract(t, 'redis', async (opts) =>
  createRedisGrantStore({ ...opts, url: redis.url, keyPrefix: newPrefix() }),
)

t.test('two replicas on one Redis see the same grants and events', async (t) => {
  const keyPrefix = newPrefix()
  const a = open(t, { keyPrefix })
  const b = open(t, { keyPrefix })
  const eventsA = recordEvents(a)
  const eventsB = recordEvents(b)
  t.teardown(() => {
    eventsA.unsubscribe()
    eventsB.unsubscribe()
  })
  await untilSubscribed(a, eventsA)
  await untilSubscribed(a, eventsB)

  const grant = makeGrant()
  await a.create(grant)
  t.strictSame(await b.get(grant.id), { status: 'active', grant })
  await eventsB.waitFor(isIssued(grant.id))

  const revocation = await a.revoke(grant.id, 'bob', 'x')
  t.strictSame(await b.get(grant.id), { status: 'revoked', revocation }, "B sees A's revocation at once")
  t.strictSame(await eventsB.waitFor(isRevoked(grant.id)), { type: 'revoked', revocation }, 'B is told')
  t.strictSame(await eventsA.waitFor(isRevoked(grant.id)), { type: 'revoked', revocation }, 'A is told too')
  t.equal(await b.revoke(grant.id, 'carol', 'y'), null, 'B cannot revoke it again')
})

t.test('keys: prefix, per-grant hash tag, TTLs that end with the grant', async (t) => {
  const keyPrefix = newPrefix()
  const store = open(t, { keyPrefix, minTombstoneMs: 30_000 })
  const raw = rawClient(t)
  const long = makeGrant({ expiresAt: Date.now() + 50_000 })
  const short = makeGrant({ expiresAt: Date.now() + 10_000 })
  await store.create(long)
  await store.create(short)

  t.strictSame(
    (await raw.keys(`${keyPrefix}*`)).sort(),
    [`${keyPrefix}grants`, `${keyPrefix}{${long.id}}:grant`, `${keyPrefix}{${short.id}}:grant`].sort(),
  )
  t.strictSame(await raw.keys(`*${long.id}*`), [`${keyPrefix}{${long.id}}:grant`], 'nothing outside the prefix')
  await expiresAt(t, raw, `${keyPrefix}{${long.id}}:grant`, long.expiresAt, 'grant key')
  t.equal(Number(await raw.zscore(`${keyPrefix}grants`, long.id)), long.expiresAt, 'indexed by expiry')

  await store.revoke(long.id, 'bob', 'x')
  const shortRevokedAt = Date.now()
  await store.revoke(short.id, 'bob', 'x')
  t.strictSame(
    (await raw.keys(`${keyPrefix}*`)).sort(),
    [`${keyPrefix}{${long.id}}:revoked`, `${keyPrefix}{${short.id}}:revoked`].sort(),
    'grant keys and index entries gone, tombstones left',
  )
  await expiresAt(t, raw, `${keyPrefix}{${long.id}}:revoked`, long.expiresAt, 'tombstone of a long grant')
  await expiresAt(t, raw, `${keyPrefix}{${short.id}}:revoked`, shortRevokedAt + 30_000, 'tombstone of a short grant')
})

t.test('a unix socket URL works', async (t) => {
  const local = await startRedis(t, { unixSocket: true })
  t.match(local.url, /^unix:\/\/\//)
  const store = createRedisGrantStore({ url: local.url, keyPrefix: 'jg:', timeoutMs: 1000, minTombstoneMs: 1000 })
  t.teardown(() => store.close())
  const grant = makeGrant()
  await store.create(grant)
  t.strictSame(await store.get(grant.id), { status: 'active', grant })
})

t.test('an unsupported URL scheme is refused at construction', async (t) => {
  t.throws(
    () => createRedisGrantStore({ url: 'http://u:secret@x', keyPrefix: 'jg:', timeoutMs: 1, minTombstoneMs: 1 }),
    { message: /unsupported Redis URL scheme.*\/\/\*\*\*@x/ },
  )
})

const TIMEOUT_MS = 200
const BOUND_MS = 1500

t.test('Redis killed: every operation fails closed and fast, then recovers on restart', async (t) => {
  const errors: Error[] = []
  const store = open(t, { timeoutMs: TIMEOUT_MS, onError: (err) => errors.push(err) })
  const grant = makeGrant()
  await store.create(grant)

  await redis.kill()
  // Constructing a store while Redis is down must not throw; its operations fail the same way.
  const late = open(t, { timeoutMs: TIMEOUT_MS })
  for (const s of [store, late]) {
    await failsFast(t, 'get', () => s.get(grant.id), BOUND_MS)
    await failsFast(t, 'create', () => s.create(makeGrant()), BOUND_MS)
    await failsFast(t, 'revoke', () => s.revoke(grant.id, 'bob', 'x'), BOUND_MS)
    await failsFast(t, 'list', () => s.list(), BOUND_MS)
    await failsFast(t, 'count', () => s.count(), BOUND_MS)
    await failsFast(t, 'ping', () => s.ping(), BOUND_MS)
  }
  t.ok(errors.length > 0, 'connection errors reach onError (and nothing crashed)')

  await redis.start()
  for (const s of [store, late]) {
    await eventually(() => s.ping())
    const fresh = makeGrant() // the restarted Redis is empty
    await s.create(fresh)
    t.strictSame(await s.get(fresh.id), { status: 'active', grant: fresh }, 'works again without a restart')
  }
})

t.test('Redis hung (SIGSTOP): reads fail within the deadline, then work after SIGCONT', async (t) => {
  const store = open(t, { timeoutMs: TIMEOUT_MS })
  const grant = makeGrant()
  await store.create(grant)

  redis.pause()
  t.teardown(() => redis.resume()) // never leave the server frozen for the next test
  await Promise.all([
    failsFast(t, 'get', () => store.get(grant.id), BOUND_MS),
    failsFast(t, 'list', () => store.list(), BOUND_MS),
    failsFast(t, 'count', () => store.count(), BOUND_MS),
    failsFast(t, 'ping', () => store.ping(), BOUND_MS),
  ])
  // Writes are left out on purpose: a command already sent cannot be recalled, so a revoke that
  // timed out here would still run when the server resumes.
  redis.resume()
  t.strictSame(await store.get(grant.id), { status: 'active', grant })
})

t.test('close() is prompt while Redis is down and leaves nothing running', async (t) => {
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: newPrefix(), timeoutMs: TIMEOUT_MS, minTombstoneMs: 1000 })
  recordEvents(store) // opens the subscriber connection too
  await store.ping()
  await redis.stop()
  const started = Date.now()
  await store.close()
  t.ok(Date.now() - started < BOUND_MS, 'closed promptly')
  // A leftover reconnect timer or socket would keep this test process alive past tap's timeout.
  await redis.start()
})

t.test('subscribers recover after a Redis restart', async (t) => {
  const keyPrefix = newPrefix()
  const a = open(t, { keyPrefix, timeoutMs: TIMEOUT_MS })
  const eventsA = recordEvents(a)
  t.teardown(eventsA.unsubscribe)
  await untilSubscribed(a, eventsA)

  await redis.stop()
  // B subscribes while Redis is down: its SUBSCRIBE must go out once Redis is reachable.
  const b = open(t, { keyPrefix, timeoutMs: TIMEOUT_MS })
  const eventsB = recordEvents(b)
  t.teardown(eventsB.unsubscribe)
  await redis.start()

  const raw = rawClient(t)
  await eventually(async () => {
    const [, subscribers] = (await raw.pubsub('NUMSUB', `${keyPrefix}events`)) as [string, number]
    if (subscribers !== 2) throw new Error(`${subscribers} subscribers so far`)
  })
  await eventually(() => a.ping())
  const grant = makeGrant()
  await a.create(grant)
  const revocation = await a.revoke(grant.id, 'bob', 'after restart')
  t.strictSame(await eventsA.waitFor(isRevoked(grant.id)), { type: 'revoked', revocation }, 'A resubscribed')
  t.strictSame(await eventsB.waitFor(isRevoked(grant.id)), { type: 'revoked', revocation }, 'B subscribed late')
})

t.test('claim: two replicas racing the first use claim once; the key\'s TTL follows the claimed expiry', async (t) => {
  const keyPrefix = newPrefix()
  const a = open(t, { keyPrefix })
  const b = open(t, { keyPrefix })
  const raw = rawClient(t)
  for (let round = 0; round < 5; round++) {
    const grant = unclaimedGrant({ withinMs: 60_000, durationMs: 600_000 })
    await a.create(grant)
    await expiresAt(t, raw, `${keyPrefix}{${grant.id}}:grant`, grant.expiresAt, 'unclaimed: the claim-by time')
    const at = Date.now()
    const [x, y] = await Promise.all([a.claim(grant, at), b.claim(grant, at + 3)])
    t.same([x?.claimed, y?.claimed].sort(), [false, true], `round ${round}: exactly one replica claimed it`)
    t.strictSame(x?.grant, y?.grant, 'both see the one claimed record')
    const claimed = x?.grant as NonNullable<typeof x>['grant']
    await expiresAt(t, raw, `${keyPrefix}{${grant.id}}:grant`, claimed.expiresAt, 'claimed: the claimed expiry')
    t.equal(Number(await raw.zscore(`${keyPrefix}grants`, grant.id)), claimed.expiresAt, 'the index follows')
  }
})

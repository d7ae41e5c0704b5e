import { Redis } from 'ioredis'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { type Test } from 'tap'
import { EXPIRY_RETENTION_MS, createRedisGrantStore } from '../../src/grants/redis-store.js'
import { StoreUnavailableError, type Grant, type GrantStore, type RedisGrantStoreOptions } from '../../src/grants/types.js'
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

t.test('lookups asked for in one event-loop turn share one MGET per grant, sent after they were asked', async (t) => {
  const store = open(t)
  const raw = rawClient(t)
  const grants = [makeGrant(), makeGrant(), makeGrant()]
  for (const g of grants) await store.create(g)
  const mgets = async (): Promise<number> => Number(/cmdstat_mget:calls=(\d+)/.exec(await raw.info('commandstats'))?.[1] ?? 0)
  const before = await mgets()
  const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => store.get((grants[i % 3] as Grant).id)))
  t.ok(answers.every((a) => a.status === 'active'))
  t.equal((await mgets()) - before, 3, '30 lookups of 3 grants in one turn: 3 MGETs')
  // The next turn asks Redis again: nothing is reused from an earlier turn.
  await store.get((grants[0] as Grant).id)
  await store.get((grants[0] as Grant).id)
  t.equal((await mgets()) - before, 5, 'one MGET per later turn')
})

t.test('keys: prefix, per-grant hash tag, TTLs that end with the grant', async (t) => {
  const keyPrefix = newPrefix()
  const store = open(t, { keyPrefix, minTombstoneMs: 30_000 })
  const raw = rawClient(t)
  const long = makeGrant({ expiresAt: Date.now() + 50_000 })
  const short = makeGrant({ expiresAt: Date.now() + 10_000 })
  await store.create(long)
  await store.create(short)

  const keysOf = (id: string) => [`${keyPrefix}{${id}}:expiry`, `${keyPrefix}{${id}}:grant`]
  t.strictSame((await raw.keys(`${keyPrefix}*`)).sort(), [`${keyPrefix}grants`, ...keysOf(long.id), ...keysOf(short.id)].sort())
  t.strictSame((await raw.keys(`*${long.id}*`)).sort(), keysOf(long.id), 'nothing outside the prefix')
  await expiresAt(t, raw, `${keyPrefix}{${long.id}}:grant`, long.expiresAt, 'grant key')
  await expiresAt(t, raw, `${keyPrefix}{${long.id}}:expiry`, long.expiresAt + EXPIRY_RETENTION_MS, 'expiry record')
  t.strictSame(JSON.parse((await raw.get(`${keyPrefix}{${long.id}}:expiry`)) as string), long, 'the record holds the grant')
  t.equal(Number(await raw.zscore(`${keyPrefix}grants`, long.id)), long.expiresAt, 'indexed by expiry')

  await store.revoke(long.id, 'bob', 'x')
  const shortRevokedAt = Date.now()
  await store.revoke(short.id, 'bob', 'x')
  t.strictSame(
    (await raw.keys(`${keyPrefix}*`)).sort(),
    [`${keyPrefix}{${long.id}}:revoked`, `${keyPrefix}{${short.id}}:revoked`].sort(),
    'grant keys, expiry records and index entries gone, tombstones left',
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

t.test('a write refused while Redis was down never happens later, once Redis is back', async (t) => {
  const store = open(t, { timeoutMs: TIMEOUT_MS })
  await store.ping()
  await redis.stop()
  const grant = makeGrant()
  // The API answers 503 "nothing was changed" for this: it must stay true.
  await failsFast(t, 'create', () => store.create(grant), BOUND_MS)
  await redis.start()
  await eventually(() => store.ping())
  // The store reconnected: an operation still queued for its connection would have run by now.
  t.strictSame(await store.get(grant.id), { status: 'not_found' }, 'the refused create did not happen')
  t.strictSame(await store.list(), [])
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

t.test('expiries: two replicas sweeping at once report each expired grant once; nothing is left behind', async (t) => {
  const keyPrefix = newPrefix()
  let offset = 0
  const now = () => Date.now() + offset
  const a = open(t, { keyPrefix, now })
  const b = open(t, { keyPrefix, now })
  const raw = rawClient(t)
  const base = Date.now()
  const grants = Array.from({ length: 60 }, (_, i) => makeGrant({ expiresAt: base + 5_000 + i }))
  for (const [i, g] of grants.entries()) await (i % 2 ? a : b).create(g)
  const revoked = grants.slice(0, 10)
  for (const g of revoked) await b.revoke(g.id, 'bob', 'x')
  const kept = makeGrant({ expiresAt: base + 60_000 })
  await a.create(kept)

  offset = 10_000
  const sweeps = await Promise.all([a, b, a, b, a, b].map((s) => s.claimExpired()))
  const ids = sweeps.flat().map((g) => g.id)
  t.equal(ids.length, 50, 'no grant twice')
  t.strictSame(ids.sort(), grants.slice(10).map((g) => g.id).sort(), 'every unrevoked grant once, no revoked one')
  t.strictSame(await Promise.all([a.claimExpired(), b.claimExpired()]), [[], []])
  t.strictSame(await raw.zrange(`${keyPrefix}grants`, 0, -1), [kept.id], 'the due index entries are gone')
  t.strictSame(
    (await raw.keys(`${keyPrefix}*`)).filter((k) => !k.endsWith(':revoked')).sort(),
    [`${keyPrefix}grants`, `${keyPrefix}{${kept.id}}:expiry`, `${keyPrefix}{${kept.id}}:grant`].sort(),
    'no expiry record, grant key or claim marker of a reported grant left',
  )
})

t.test('expiries: an index entry behind the grant (its extension re-scored nothing) is moved, not reported', async (t) => {
  const keyPrefix = newPrefix()
  let offset = 0
  const store = open(t, { keyPrefix, now: () => Date.now() + offset })
  const raw = rawClient(t)
  const base = Date.now()
  const grant = makeGrant({ expiresAt: base + 5_000 })
  await store.create(grant)
  await store.extend(grant.id, base + 30_000)
  await raw.zadd(`${keyPrefix}grants`, grant.expiresAt, grant.id) // as if the re-scoring had failed
  offset = 10_000
  t.strictSame(await store.claimExpired(), [])
  t.equal(Number(await raw.zscore(`${keyPrefix}grants`, grant.id)), base + 30_000, 're-scored to the new expiry')
  t.equal((await store.get(grant.id)).status, 'active')
})

t.test('expiries: a grant stored before expiry records existed is not reported, and still revocable', async (t) => {
  const keyPrefix = newPrefix()
  let offset = 0
  const store = open(t, { keyPrefix, now: () => Date.now() + offset })
  const raw = rawClient(t)
  const old = makeGrant({ expiresAt: Date.now() + 5_000 })
  const revocable = makeGrant({ expiresAt: Date.now() + 60_000 })
  for (const g of [old, revocable]) {
    await raw.set(`${keyPrefix}{${g.id}}:grant`, JSON.stringify(g), 'PX', 60_000)
    await raw.zadd(`${keyPrefix}grants`, g.expiresAt, g.id)
  }
  t.ok(await store.revoke(revocable.id, 'bob', 'x'))
  offset = 10_000
  t.strictSame(await store.claimExpired(), [])
  t.strictSame(await raw.zrange(`${keyPrefix}grants`, 0, -1), [], 'its index entry is removed')
})

t.test('expiries: Redis hung (SIGSTOP) across an expiry: the sweep fails fast, then reports it once', async (t) => {
  const keyPrefix = newPrefix()
  let offset = 0
  const now = () => Date.now() + offset
  const a = open(t, { keyPrefix, now, timeoutMs: TIMEOUT_MS })
  const b = open(t, { keyPrefix, now, timeoutMs: TIMEOUT_MS })
  const grant = makeGrant({ expiresAt: Date.now() + 5_000 })
  await a.create(grant)

  redis.pause()
  t.teardown(() => redis.resume())
  offset = 10_000 // the grant expires during the outage
  await failsFast(t, 'claimExpired', () => a.claimExpired(), BOUND_MS)
  await failsFast(t, 'claimExpired', () => b.claimExpired(), BOUND_MS)
  redis.resume()
  const after = await Promise.all([eventually(() => a.claimExpired()), eventually(() => b.claimExpired())])
  t.strictSame(after.flat(), [grant], 'reported once, by one of them')
})

t.test('expiries: a claim whose answer was lost is reported by its claimer on the next sweep, by nobody else', async (t) => {
  const keyPrefix = newPrefix()
  let offset = 0
  const now = () => Date.now() + offset
  const errors: Error[] = []
  const a = open(t, { keyPrefix, now, timeoutMs: TIMEOUT_MS })
  const b = open(t, { keyPrefix, now, timeoutMs: TIMEOUT_MS, onError: (err) => errors.push(err) })
  const raw = rawClient(t)
  const grant = makeGrant({ expiresAt: Date.now() + 5_000 })
  await a.create(grant)
  offset = 10_000

  // Reads go on, scripts wait: A finds the due entry, its claim runs only after A gave up on it.
  const pauseMs = TIMEOUT_MS * 3
  const pausedAt = Date.now()
  await raw.call('CLIENT', 'PAUSE', String(pauseMs), 'WRITE')
  await t.rejects(a.claimExpired(), StoreUnavailableError, "A's claim is not answered in time")
  await sleep(pausedAt + pauseMs + 100 - Date.now())
  t.strictSame(await b.claimExpired(), [], 'B, sweeping meanwhile, gets nothing: the claim happened')
  t.strictSame(await a.claimExpired(), [grant], 'A asks again and gets it')
  t.strictSame(await Promise.all([a.claimExpired(), b.claimExpired()]), [[], []], 'once')
  t.strictSame(await raw.keys(`${keyPrefix}{${grant.id}}*`), [], 'nothing left of it')
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
    t.equal((JSON.parse((await raw.get(`${keyPrefix}{${grant.id}}:expiry`)) as string) as Grant).expiresAt, claimed.expiresAt, 'the expiry record follows: grant.expired comes at the claimed expiry')
  }
})

/**
 * The GrantStore contract, run against every implementation (memory-store.test.ts,
 * redis-store.test.ts). Timing tests use real time with wide margins (hundreds of ms), so they
 * hold on a loaded machine; ordering and expiry-in-list tests move an injected clock instead.
 */
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import {
  GrantExistsError,
  StoreUnavailableError,
  type Grant,
  type GrantEvent,
  type GrantStore,
  type GrantStoreOptions,
} from '../../src/grants/types.js'

export type MakeStore = (opts: GrantStoreOptions) => Promise<GrantStore>

/** What the contract passes unless a test needs otherwise. */
const DEFAULTS: GrantStoreOptions = { timeoutMs: 1000, minTombstoneMs: 60_000 }

export function makeGrant(overrides: Partial<Grant> = {}): Grant {
  const now = Date.now()
  return {
    id: randomUUID(),
    subject: 'sp-acme',
    resource: 'crm',
    scopes: ['GET /crm/customers/*', 'GET,POST /crm/tickets/**'],
    startsAt: now,
    expiresAt: now + 60_000,
    createdAt: now,
    issuedBy: 'alice',
    reason: 'INC-1234: export for the audit',
    policyVersion: 'sha256:0f1e',
    ...overrides,
  }
}

/** An unclaimed grant (claim-by window), its window and duration counted from now. */
export function unclaimedGrant(opts: { withinMs: number; durationMs: number; notAfter?: number }): Grant {
  const now = Date.now()
  const by = now + opts.withinMs
  return makeGrant({ expiresAt: by, claim: { by, durationMs: opts.durationMs, notAfter: opts.notAfter ?? Math.floor((by + opts.durationMs) / 1000) * 1000 } })
}

/** Retries `fn` until it resolves (e.g. while a restarted Redis is being reconnected to). */
export async function eventually<T>(fn: () => Promise<T>, withinMs = 5000): Promise<T> {
  const deadline = Date.now() + withinMs
  for (;;) {
    try {
      return await fn()
    } catch (err) {
      if (Date.now() > deadline) throw err
      await sleep(50)
    }
  }
}

export interface EventRecorder {
  readonly events: GrantEvent[]
  unsubscribe(): void
  /** Resolves with the first recorded event matching `pred`; rejects after `withinMs`. */
  waitFor(pred: (e: GrantEvent) => boolean, withinMs?: number): Promise<GrantEvent>
}

export function recordEvents(store: GrantStore): EventRecorder {
  const events: GrantEvent[] = []
  const unsubscribe = store.subscribe((e) => events.push(e))
  return {
    events,
    unsubscribe,
    async waitFor(pred, withinMs = 3000) {
      const deadline = Date.now() + withinMs
      for (;;) {
        const found = events.find(pred)
        if (found !== undefined) return found
        if (Date.now() > deadline) throw new Error(`no matching event within ${withinMs} ms`)
        await sleep(5)
      }
    },
  }
}

export const isIssued = (id: string) => (e: GrantEvent) => e.type === 'issued' && e.grant.id === id
export const isRevoked = (id: string) => (e: GrantEvent) => e.type === 'revoked' && e.revocation.id === id
export const isExtended = (id: string) => (e: GrantEvent) => e.type === 'extended' && e.grant.id === id

/**
 * Waits until `recorder`'s subscription delivers: a subscription may go live a moment after
 * subscribe() returns (Redis SUBSCRIBE is asynchronous). Issues short-lived probe grants until one
 * is seen, so the following assertions can't race the subscription.
 */
export async function untilSubscribed(store: GrantStore, recorder: EventRecorder): Promise<void> {
  const deadline = Date.now() + 5000
  for (;;) {
    const probe = makeGrant({ subject: 'probe', expiresAt: Date.now() + 5000 })
    await store.create(probe)
    try {
      await recorder.waitFor(isIssued(probe.id), 250)
      return
    } catch (err) {
      if (Date.now() > deadline) throw err
    }
  }
}

export function grantStoreContract(t: Test, name: string, makeStore: MakeStore): Promise<unknown> {
  /** A fresh store (closed at the end of the subtest), so subtests never see each other's grants. */
  const open = async (t: Test, opts: Partial<GrantStoreOptions> = {}): Promise<GrantStore> => {
    const store = await makeStore({ ...DEFAULTS, ...opts })
    t.teardown(() => store.close())
    return store
  }

  return t.test(`${name} grant store contract`, async (t) => {
    t.test('ping answers', async (t) => {
      const store = await open(t)
      await t.resolves(store.ping())
    })

    t.test('create/get round trip keeps every field', async (t) => {
      const store = await open(t)
      const full = makeGrant()
      const { reason: _reason, policyVersion: _policyVersion, ...minimal } = makeGrant({ scopes: [] })
      await store.create(full)
      await store.create(minimal)
      t.strictSame(await store.get(full.id), { status: 'active', grant: full })
      t.strictSame(await store.get(minimal.id), { status: 'active', grant: minimal })
      t.strictSame(await store.get('no-such-grant'), { status: 'not_found' })
    })

    t.test('many lookups at once, of the same and of different grants, each get their own answer', async (t) => {
      const store = await open(t)
      const grants = [makeGrant(), makeGrant(), makeGrant()]
      for (const g of grants) await store.create(g)
      await store.revoke((grants[2] as Grant).id, 'bob', 'done')
      const ids = [...grants.map((g) => g.id), 'no-such-grant']
      const asked = Array.from({ length: 40 }, (_, i) => ids[i % ids.length] as string)
      const answers = await Promise.all(asked.map((id) => store.get(id)))
      answers.forEach((a, i) => {
        const id = asked[i] as string
        const want = id === 'no-such-grant' ? 'not_found' : id === (grants[2] as Grant).id ? 'revoked' : 'active'
        t.equal(a.status, want, `lookup ${i} of ${id}`)
        if (a.status === 'active') t.equal(a.grant.id, id)
        if (a.status === 'revoked') t.equal(a.revocation.id, id)
      })
    })

    t.test('a lookup asked for after a revoke completed sees it, even while earlier lookups are in flight', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      const before = store.get(grant.id)
      const revoked = store.revoke(grant.id, 'bob', 'now')
      const during = store.get(grant.id)
      await revoked
      t.equal((await store.get(grant.id)).status, 'revoked', 'asked after the revoke answered: revoked')
      t.ok(['active', 'revoked'].includes((await before).status) && ['active', 'revoked'].includes((await during).status), 'asked before: either answer')
    })

    t.test('a duplicate id is refused and the original kept', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      await t.rejects(store.create({ ...grant, subject: 'sp-other' }), GrantExistsError)
      t.strictSame(await store.get(grant.id), { status: 'active', grant })
    })

    t.test('a revoked id cannot be re-created while its tombstone lives', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      await store.revoke(grant.id, 'bob', 'leaked token')
      await t.rejects(store.create(grant), GrantExistsError)
      t.equal((await store.get(grant.id)).status, 'revoked')
      t.equal(await store.count(), 0, 'the refused create is not counted')
    })

    t.test('an already expired grant is refused', async (t) => {
      const store = await open(t)
      await t.rejects(store.create(makeGrant({ expiresAt: Date.now() - 1 })), RangeError)
    })

    t.test('a grant is not_found once it has expired (real time)', async (t) => {
      const store = await open(t)
      const grant = makeGrant({ expiresAt: Date.now() + 1000 })
      await store.create(grant)
      t.equal((await store.get(grant.id)).status, 'active')
      await sleep(grant.expiresAt + 100 - Date.now())
      t.strictSame(await store.get(grant.id), { status: 'not_found' })
      t.strictSame(await store.list(), [])
      t.equal(await store.count(), 0)
    })

    t.test('revoke deletes the grant and leaves a tombstone', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      const before = Date.now()
      const revocation = await store.revoke(grant.id, 'bob', 'vendor offboarded')
      const after = Date.now()
      t.ok(revocation, 'revoke returns the revocation')
      t.match(revocation, { id: grant.id, revokedBy: 'bob', reason: 'vendor offboarded', subject: 'sp-acme', resource: 'crm' })
      t.ok(revocation!.revokedAt >= before && revocation!.revokedAt <= after, 'revokedAt is now')
      t.strictSame(await store.get(grant.id), { status: 'revoked', revocation })
    })

    t.test('revoking twice, or an unknown id, returns null', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      t.ok(await store.revoke(grant.id, 'bob', 'first'))
      t.equal(await store.revoke(grant.id, 'carol', 'second'), null)
      t.match(await store.get(grant.id), { status: 'revoked', revocation: { revokedBy: 'bob', reason: 'first' } })
      t.equal(await store.revoke('no-such-grant', 'bob', 'typo'), null)
    })

    t.test('concurrent revokes have exactly one winner', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      const results = await Promise.all(
        Array.from({ length: 10 }, (_, i) => store.revoke(grant.id, `op${i}`, 'race')),
      )
      const winners = results.filter((r) => r !== null)
      t.equal(winners.length, 1)
      t.strictSame(await store.get(grant.id), { status: 'revoked', revocation: winners[0] })
    })

    t.test('the tombstone keeps the nonce of the revoke that wrote it; a later revoke changes nothing', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      // Same actor, same reason: the nonce alone tells the two calls apart.
      const first = await store.revoke(grant.id, 'bob', 'done', 'nonce-1')
      t.match(first, { id: grant.id, revokedBy: 'bob', reason: 'done', nonce: 'nonce-1', subject: 'sp-acme', resource: 'crm' })
      await sleep(5) // a second revokedAt, were the tombstone rewritten
      t.equal(await store.revoke(grant.id, 'bob', 'done', 'nonce-2'), null)
      t.strictSame(await store.get(grant.id), { status: 'revoked', revocation: first }, 'the first tombstone, its nonce and revokedAt unchanged')

      const other = makeGrant()
      await store.create(other)
      const plain = await store.revoke(other.id, 'bob', 'done')
      t.notOk(plain !== null && 'nonce' in plain, 'no nonce given, none stored')
      t.strictSame(await store.get(other.id), { status: 'revoked', revocation: plain })
    })

    t.test('of concurrent revokes with their own nonces, the tombstone names the winner', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => store.revoke(grant.id, 'bob', 'race', `n${i}`)))
      const winners = results.filter((r) => r !== null)
      t.equal(winners.length, 1)
      const lookup = await store.get(grant.id)
      t.equal(lookup.status === 'revoked' ? lookup.revocation.nonce : undefined, winners[0]?.nonce)
      t.equal(results.findIndex((r) => r !== null), Number(winners[0]?.nonce?.slice(1)), 'the nonce the winning call sent')
    })

    t.test('the tombstone lasts until the grant would have expired, and at least minTombstoneMs', async (t) => {
      const store = await open(t, { minTombstoneMs: 1000 })
      const short = makeGrant({ expiresAt: Date.now() + 300 }) // ends before the minimum
      const long = makeGrant({ expiresAt: Date.now() + 2000 }) // ends after the minimum
      await store.create(short)
      await store.create(long)
      const t0 = Date.now()
      await store.revoke(short.id, 'bob', 'x')
      await store.revoke(long.id, 'bob', 'x')

      await sleep(t0 + 500 - Date.now()) // past the short grant's expiry
      t.equal((await store.get(short.id)).status, 'revoked', 'kept past the grant expiry for minTombstoneMs')
      t.equal((await store.get(long.id)).status, 'revoked')

      await sleep(t0 + 1400 - Date.now()) // past minTombstoneMs
      t.equal((await store.get(short.id)).status, 'not_found', 'gone after minTombstoneMs')
      t.equal((await store.get(long.id)).status, 'revoked', 'kept past minTombstoneMs until the grant expiry')

      await sleep(long.expiresAt + 150 - Date.now())
      t.equal((await store.get(long.id)).status, 'not_found', 'gone after the grant expiry')
    })

    t.test('list and count: active only, soonest expiry first', async (t) => {
      let offset = 0
      const store = await open(t, { now: () => Date.now() + offset })
      const base = Date.now()
      const g1 = makeGrant({ expiresAt: base + 30_000 })
      const g2 = makeGrant({ expiresAt: base + 10_000 })
      const g3 = makeGrant({ expiresAt: base + 20_000 })
      const revoked = makeGrant({ expiresAt: base + 40_000 })
      const soon = makeGrant({ expiresAt: base + 5_000 })
      for (const g of [g1, g2, g3, revoked, soon]) await store.create(g)
      await store.revoke(revoked.id, 'bob', 'x')

      t.strictSame(await store.list(), [soon, g2, g3, g1])
      t.equal(await store.count(), 4)

      offset = 6_000 // `soon` has now expired by the store's clock
      t.strictSame(await store.list(), [g2, g3, g1])
      t.equal(await store.count(), 3)
      t.strictSame(await store.get(soon.id), { status: 'not_found' })
    })

    t.test('extend moves the expiry, never shortens it, and tells subscribers', async (t) => {
      const store = await open(t)
      const rec = recordEvents(store)
      t.teardown(rec.unsubscribe)
      await untilSubscribed(store, rec)
      const grant = makeGrant()
      const other = makeGrant({ expiresAt: grant.expiresAt + 10_000 })
      await store.create(grant)
      await store.create(other)
      const later = grant.expiresAt + 60_000
      const extended = { ...grant, expiresAt: later }
      t.strictSame(await store.extend(grant.id, later), extended)
      t.strictSame(await store.get(grant.id), { status: 'active', grant: extended })
      t.strictSame(await rec.waitFor(isExtended(grant.id)), { type: 'extended', grant: extended })
      const order = (await store.list()).map((g) => g.id).filter((id) => id === grant.id || id === other.id)
      t.strictSame(order, [other.id, grant.id], 'listed by the new expiry')
      t.strictSame(await store.extend(grant.id, grant.expiresAt), extended, 'an earlier expiry changes nothing')
      t.strictSame(await store.extend(grant.id, later), extended, 'a retried extension changes nothing')
      t.equal(rec.events.filter(isExtended(grant.id)).length, 1, 'and tells nobody')
    })

    t.test('extend of an unknown or revoked grant returns null', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant)
      await store.revoke(grant.id, 'bob', 'x')
      t.equal(await store.extend(grant.id, grant.expiresAt + 60_000), null)
      t.equal((await store.get(grant.id)).status, 'revoked', 'a revoked grant stays revoked')
      t.equal(await store.extend('no-such-grant', Date.now() + 60_000), null)
    })

    t.test('create writes its nonce into the record (and its event); of concurrent creates of one id, the record names the one that stored it', async (t) => {
      const store = await open(t)
      const rec = recordEvents(store)
      t.teardown(rec.unsubscribe)
      await untilSubscribed(store, rec)
      const grant = makeGrant()
      const results = await Promise.allSettled(Array.from({ length: 10 }, (_, i) => store.create(grant, `i${i}`)))
      const winner = results.findIndex((r) => r.status === 'fulfilled')
      t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one create stored it')
      t.ok(results.every((r) => r.status === 'fulfilled' || r.reason instanceof GrantExistsError), 'the others were refused')
      const stored = { ...grant, nonces: { issue: `i${winner}` } }
      t.strictSame(await store.get(grant.id), { status: 'active', grant: stored }, 'the nonce of the create that stored it')
      t.strictSame(await rec.waitFor(isIssued(grant.id)), { type: 'issued', grant: stored })
      t.strictSame(await store.list().then((all) => all.filter((g) => g.id === grant.id)), [stored])

      const carrying = makeGrant({ nonces: { issue: 'not-this-call', extend: 'nor-this' } })
      await store.create(carrying)
      const { nonces: _nonces, ...plain } = carrying
      t.strictSame(await store.get(carrying.id), { status: 'active', grant: plain }, "no nonce given, none stored (the given grant's are not)")
      const other = makeGrant({ nonces: { extend: 'not-this-call' } })
      await store.create(other, 'mine')
      t.strictSame(await store.get(other.id), { status: 'active', grant: { ...other, nonces: { issue: 'mine' } } })
    })

    t.test("extend writes its nonce with the new expiry, in one record; the create's nonce stays", async (t) => {
      const store = await open(t)
      const rec = recordEvents(store)
      t.teardown(rec.unsubscribe)
      await untilSubscribed(store, rec)
      const grant = makeGrant()
      await store.create(grant, 'i')
      const later = grant.expiresAt + 60_000
      const first = { ...grant, expiresAt: later, nonces: { issue: 'i', extend: 'e1' } }
      t.strictSame(await store.extend(grant.id, later, 'e1'), first)
      t.strictSame(await store.get(grant.id), { status: 'active', grant: first })
      t.strictSame(await rec.waitFor(isExtended(grant.id)), { type: 'extended', grant: first })
      t.strictSame(await store.extend(grant.id, later, 'e2'), first, 'the same expiry again: the record still names the extend that moved it')
      t.strictSame(await store.extend(grant.id, grant.expiresAt, 'e3'), first, 'an earlier one changes nothing either')
      t.strictSame(await store.get(grant.id), { status: 'active', grant: first })
      const second = { ...grant, expiresAt: later + 60_000, nonces: { issue: 'i', extend: 'e4' } }
      t.strictSame(await store.extend(grant.id, later + 60_000, 'e4'), second, 'the next extension names itself')
      const third = { ...grant, expiresAt: later + 120_000, nonces: { issue: 'i' } }
      t.strictSame(await store.extend(grant.id, later + 120_000), third, "an extend without a nonce leaves none of its own, nor the previous extend's")
      t.strictSame(await store.get(grant.id), { status: 'active', grant: third })

      const plain = makeGrant()
      await store.create(plain)
      t.strictSame(await store.extend(plain.id, later), { ...plain, expiresAt: later }, 'no nonces at all: none appear')
    })

    t.test('of concurrent extends to one expiry with their own nonces, the record names the one that moved it', async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant, 'i')
      const later = grant.expiresAt + 60_000
      const results = await Promise.all(Array.from({ length: 10 }, (_, i) => store.extend(grant.id, later, `e${i}`)))
      const lookup = await store.get(grant.id)
      const record = lookup.status === 'active' ? lookup.grant : undefined
      t.equal(record?.expiresAt, later)
      t.match(record?.nonces, { issue: 'i', extend: /^e\d$/ })
      t.strictSame(results, results.map(() => record), 'every call answers the one record, so exactly one finds its own nonce')
    })

    t.test("the tombstone keeps the revoked grant's nonces", async (t) => {
      const store = await open(t)
      const grant = makeGrant()
      await store.create(grant, 'i')
      await store.extend(grant.id, grant.expiresAt + 60_000, 'e')
      const revocation = await store.revoke(grant.id, 'bob', 'done', 'r')
      t.strictSame(revocation, {
        id: grant.id,
        revokedAt: revocation?.revokedAt,
        revokedBy: 'bob',
        reason: 'done',
        nonce: 'r',
        grantNonces: { issue: 'i', extend: 'e' },
        subject: grant.subject,
        resource: grant.resource,
      })
      t.strictSame(await store.get(grant.id), { status: 'revoked', revocation })

      const plain = makeGrant()
      await store.create(plain)
      const r = await store.revoke(plain.id, 'bob', 'done')
      t.notOk(r !== null && 'grantNonces' in r, 'a grant without nonces: none in the tombstone')
    })

    t.test("a first use keeps the grant's nonces", async (t) => {
      const store = await open(t)
      const grant = unclaimedGrant({ withinMs: 60_000, durationMs: 600_000 })
      await store.create(grant, 'i')
      const lookup = await store.get(grant.id)
      const result = lookup.status === 'active' ? await store.claim(lookup.grant, Date.now()) : null
      t.equal(result?.claimed, true)
      t.strictSame(result?.grant.nonces, { issue: 'i' })
      t.strictSame(await store.get(grant.id), { status: 'active', grant: result?.grant })
    })

    t.test('an extended grant outlives its first expiry, then ends at the new one (real time)', async (t) => {
      const store = await open(t)
      const grant = makeGrant({ expiresAt: Date.now() + 500 })
      await store.create(grant)
      await store.extend(grant.id, grant.expiresAt + 700)
      await sleep(grant.expiresAt + 300 - Date.now())
      t.equal((await store.get(grant.id)).status, 'active', 'past the first expiry')
      t.equal(await store.count(), 1)
      await sleep(grant.expiresAt + 900 - Date.now())
      t.equal((await store.get(grant.id)).status, 'not_found', 'gone after the new expiry')
      t.equal(await store.extend(grant.id, Date.now() + 60_000), null, 'an expired grant cannot be extended')
    })

    t.test('claimExpired hands over each expired grant once, soonest expiry first', async (t) => {
      let offset = 0
      const store = await open(t, { now: () => Date.now() + offset })
      const base = Date.now()
      const a = makeGrant({ expiresAt: base + 10_000 })
      const b = makeGrant({ expiresAt: base + 5_000 })
      const later = makeGrant({ expiresAt: base + 60_000 })
      for (const g of [a, b, later]) await store.create(g)
      t.strictSame(await store.claimExpired(), [], 'nothing before an expiry')

      offset = 20_000 // a and b have expired by the store's clock
      t.strictSame(await store.list(), [later], 'listing does not consume expiries')
      t.strictSame(await store.claimExpired(), [b, a], 'every field kept, soonest first')
      t.strictSame(await store.claimExpired(), [], 'never twice')
      t.strictSame(await store.get(a.id), { status: 'not_found' })
      t.equal(await store.revoke(a.id, 'bob', 'too late'), null, 'a claimed grant cannot be revoked')
      t.equal(await store.extend(b.id, base + 120_000), null, 'nor extended')
      t.strictSame(await store.list(), [later])
    })

    t.test('a revoked grant is never handed over as expired', async (t) => {
      let offset = 0
      const store = await open(t, { now: () => Date.now() + offset })
      const grant = makeGrant({ expiresAt: Date.now() + 5_000 })
      await store.create(grant)
      await store.revoke(grant.id, 'bob', 'x')
      offset = 20_000
      t.strictSame(await store.claimExpired(), [])
    })

    t.test('an extended grant is handed over at its new expiry only', async (t) => {
      let offset = 0
      const store = await open(t, { now: () => Date.now() + offset })
      const base = Date.now()
      const grant = makeGrant({ expiresAt: base + 5_000 })
      await store.create(grant)
      const extended = await store.extend(grant.id, base + 15_000)
      offset = 10_000 // past the first expiry, before the new one
      t.strictSame(await store.claimExpired(), [], 'not at the first expiry')
      t.equal((await store.get(grant.id)).status, 'active')
      offset = 20_000
      t.strictSame(await store.claimExpired(), [extended], 'at the new one, with the new expiry')
      t.strictSame(await store.claimExpired(), [])
    })

    t.test('concurrent claims hand each expired grant to exactly one caller', async (t) => {
      let offset = 0
      const store = await open(t, { now: () => Date.now() + offset })
      const grants = Array.from({ length: 20 }, (_, i) => makeGrant({ expiresAt: Date.now() + 1_000 + i }))
      for (const g of grants) await store.create(g)
      offset = 10_000
      const batches = await Promise.all(Array.from({ length: 5 }, () => store.claimExpired()))
      const ids = batches.flat().map((g) => g.id)
      t.equal(ids.length, grants.length, 'no grant twice')
      t.strictSame(ids.sort(), grants.map((g) => g.id).sort(), 'every grant once')
    })

    t.test('claim starts an unclaimed grant\'s clock at its first use, exactly once', async (t) => {
      const store = await open(t)
      const grant = unclaimedGrant({ withinMs: 60_000, durationMs: 3_600_000 })
      await store.create(grant)
      t.strictSame(await store.get(grant.id), { status: 'active', grant }, 'unclaimed: it lives until its claim-by time')
      const at = Date.now()
      const results = await Promise.all([store.claim(grant, at), store.claim(grant, at + 7), store.claim(grant, at + 9)])
      t.equal(results.filter((r) => r?.claimed === true).length, 1, 'one of three concurrent claims wins')
      const winner = results.find((r) => r?.claimed === true)?.grant as Grant
      t.strictSame(
        results.map((r) => r?.grant),
        [winner, winner, winner],
        'every caller gets the grant as claimed',
      )
      const claimedAt = winner.claim?.claimedAt as number
      t.ok([at, at + 7, at + 9].includes(claimedAt))
      t.strictSame(winner, { ...grant, expiresAt: Math.floor((claimedAt + 3_600_000) / 1000) * 1000, claim: { ...grant.claim, claimedAt } })
      t.strictSame(await store.get(grant.id), { status: 'active', grant: winner })
      t.strictSame(await store.claim(grant, at + 1000), { grant: winner, claimed: false }, 'claimed once: a later use changes nothing')
      t.strictSame((await store.list()).find((g) => g.id === grant.id), winner)

      const plain = makeGrant()
      await store.create(plain)
      t.strictSame(await store.claim(plain, at), { grant: plain, claimed: false }, 'a grant without a claim window is left as it is')
      t.equal(await store.claim(makeGrant(), at), null, 'an unknown grant')
      const revoked = unclaimedGrant({ withinMs: 60_000, durationMs: 60_000 })
      await store.create(revoked)
      await store.revoke(revoked.id, 'bob', 'x')
      t.equal(await store.claim(revoked, at), null, 'a revoked grant')
      t.equal((await store.get(revoked.id)).status, 'revoked', 'stays revoked')
    })

    t.test('a claimed expiry is capped by notAfter (the contract end)', async (t) => {
      const store = await open(t)
      const at = Date.now()
      const late = unclaimedGrant({ withinMs: 60_000, durationMs: 3_600_000, notAfter: Math.floor((at + 120_000) / 1000) * 1000 })
      await store.create(late)
      t.equal((await store.claim(late, at))?.grant.expiresAt, Math.floor((at + 120_000) / 1000) * 1000, 'never past notAfter (the contract end)')
    })

    t.test('an unclaimed grant ends at its claim-by time; a claimed one outlives it (real time)', async (t) => {
      const store = await open(t)
      const unused = unclaimedGrant({ withinMs: 500, durationMs: 60_000 })
      const used = unclaimedGrant({ withinMs: 500, durationMs: 2_000 })
      await store.create(unused)
      await store.create(used)
      const claimed = await store.claim(used, Date.now())
      t.equal(claimed?.claimed, true)
      await sleep(unused.expiresAt + 400 - Date.now())
      t.equal((await store.get(unused.id)).status, 'not_found', 'unused within the window: gone')
      t.equal(await store.claim(unused, Date.now()), null, 'and can no longer be claimed')
      t.equal((await store.get(used.id)).status, 'active', 'claimed: lives past its claim-by time')
    })

    t.test('subscribers receive issued and revoked events', async (t) => {
      const store = await open(t)
      const rec = recordEvents(store)
      t.teardown(rec.unsubscribe)
      await untilSubscribed(store, rec)
      const grant = makeGrant()
      await store.create(grant)
      t.strictSame(await rec.waitFor(isIssued(grant.id)), { type: 'issued', grant })
      const revocation = await store.revoke(grant.id, 'bob', 'x')
      t.strictSame(await rec.waitFor(isRevoked(grant.id)), { type: 'revoked', revocation })
    })

    t.test('unsubscribe stops delivery to that listener only', async (t) => {
      const store = await open(t)
      const gone = recordEvents(store)
      const stays = recordEvents(store)
      t.teardown(stays.unsubscribe)
      await untilSubscribed(store, stays)
      gone.unsubscribe()
      const grant = makeGrant()
      await store.create(grant)
      await stays.waitFor(isIssued(grant.id))
      // Both listeners are served by the same dispatch, so `gone` would have it by now.
      t.notOk(gone.events.some(isIssued(grant.id)), 'no delivery after unsubscribe')
    })

    t.test('a throwing listener is reported and does not starve the others', async (t) => {
      const errors: Error[] = []
      const store = await open(t, { onError: (err) => errors.push(err) })
      const unsubscribe = store.subscribe(() => {
        throw new Error('listener bug')
      })
      t.teardown(unsubscribe)
      const rec = recordEvents(store)
      t.teardown(rec.unsubscribe)
      await untilSubscribed(store, rec)
      t.ok(errors.some((e) => e.message === 'listener bug'), 'reported to onError')
    })

    t.test('after close, operations reject with StoreUnavailableError', async (t) => {
      const store = await makeStore(DEFAULTS)
      const grant = makeGrant()
      await store.create(grant)
      await store.close()
      await t.rejects(store.get(grant.id), StoreUnavailableError)
      await t.rejects(store.create(makeGrant()), StoreUnavailableError)
      await t.resolves(store.close(), 'close is idempotent')
    })
  })
}

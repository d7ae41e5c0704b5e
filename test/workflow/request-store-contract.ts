/**
 * The RequestStore contract, run against every implementation (memory-request-store.test.ts,
 * redis-request-store.test.ts). A "pair" is two handles on the same data: two replicas. Timing
 * tests use real time with margins of hundreds of ms, so they hold on a loaded machine.
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { StoreUnavailableError } from '../../src/grants/types.js'
import { RequestExistsError, type AccessRequest, type RequestStore, type RequestStoreOptions } from '../../src/workflow/request-store.js'

/** Two handles on one store's data (for memory, the same instance twice). */
export type MakeStores = (opts: RequestStoreOptions) => Promise<readonly [RequestStore, RequestStore]>

const DEFAULTS: RequestStoreOptions = { timeoutMs: 1000, retentionMs: 60_000 }

export function makeRequest(overrides: Partial<AccessRequest> = {}): AccessRequest {
  const now = Date.now()
  const rand = randomBytes(16).toString('base64url')
  return {
    id: `r_${rand}`,
    version: 1,
    kind: 'access',
    subject: 'acme',
    resource: 'crm-api',
    scopes: ['GET /crm/customers/**'],
    durationMs: 3_600_000,
    reason: 'SUP-1234: customer export broken',
    ticket: 'SUP-1234',
    policyVersion: '0f1e2d3c4b5a6978',
    approvalPolicy: 'two-stage',
    stages: [
      { group: 'crm-owners', approvals: 1 },
      { group: 'security', approvals: 1 },
    ],
    status: 'pending',
    createdAt: now,
    expiresAt: now + 60_000,
    escalateAt: now + 30_000,
    approvals: [],
    grantId: `g_${rand}`,
    ...overrides,
  }
}

/** The next revision of `r` with `changes`. */
export const revise = (r: AccessRequest, changes: Partial<AccessRequest>): AccessRequest => ({ ...r, ...changes, version: r.version + 1 })

export function requestStoreContract(t: Test, name: string, makeStores: MakeStores): Promise<unknown> {
  const open = async (t: Test, opts: Partial<RequestStoreOptions> = {}): Promise<readonly [RequestStore, RequestStore]> => {
    const pair = await makeStores({ ...DEFAULTS, ...opts })
    t.teardown(async () => {
      await pair[0].close()
      await pair[1].close()
    })
    return pair
  }

  return t.test(`${name} request store contract`, async (t) => {
    t.test('ping answers', async (t) => {
      const [store] = await open(t)
      await t.resolves(store.ping())
    })

    t.test('create/get round trip keeps every field', async (t) => {
      const [store] = await open(t)
      const full = makeRequest({
        approvals: [{ approver: 'alice', stage: 0, at: Date.now(), comment: 'ok' }],
        escalatedAt: Date.now(),
        review: { status: 'open' },
        extends: 'r_other',
        writes: ['w1', 'w2'],
      })
      const { ticket: _t, escalateAt: _e, ...minimal } = makeRequest({ scopes: [] })
      await store.create(full)
      await store.create(minimal)
      t.strictSame(await store.get(full.id), full)
      t.strictSame(await store.get(minimal.id), minimal)
      t.equal(await store.get('r_nope'), undefined)
    })

    t.test('a duplicate id is refused and the original kept', async (t) => {
      const [store] = await open(t)
      const r = makeRequest()
      await store.create(r)
      await t.rejects(store.create({ ...r, subject: 'other' }), RequestExistsError)
      t.strictSame(await store.get(r.id), r)
      await t.rejects(store.create(makeRequest({ version: 2 })), RangeError, 'a new request starts at version 1')
    })

    t.test('update is a compare-and-set on the version', async (t) => {
      const [store] = await open(t)
      const r = makeRequest()
      await store.create(r)
      const v2 = revise(r, { approvals: [{ approver: 'alice', stage: 0, at: Date.now() }] })
      t.equal(await store.update(v2), true)
      t.strictSame(await store.get(r.id), v2)
      t.equal(await store.update(revise(r, { status: 'denied' })), false, 'written against a stale version: refused')
      t.equal(await store.update({ ...v2, version: 5 }), false, 'a version gap is refused too')
      t.strictSame(await store.get(r.id), v2, 'the refused writes left nothing behind')
      t.equal(await store.update(revise(makeRequest(), {})), false, 'an unknown request is never created by update')
    })

    t.test('two replicas racing the final approval: exactly one wins', async (t) => {
      const [a, b] = await open(t)
      for (let round = 0; round < 10; round++) {
        const r = makeRequest()
        await a.create(r)
        const read = await Promise.all([a.get(r.id), b.get(r.id)])
        const results = await Promise.all(
          read.map((seen, i) =>
            (i === 0 ? a : b).update(revise(seen as AccessRequest, { status: 'approved', decidedBy: `approver${i}`, decidedAt: Date.now() })),
          ),
        )
        t.equal(results.filter(Boolean).length, 1, `round ${round}: one winner`)
        const winner = results.indexOf(true)
        t.match(await b.get(r.id), { status: 'approved', version: 2, decidedBy: `approver${winner}` })
      }
    })

    t.test('list: newest first, filtered by status and subject', async (t) => {
      const [store, other] = await open(t)
      const base = Date.now()
      const r1 = makeRequest({ createdAt: base - 3000 })
      const r2 = makeRequest({ createdAt: base - 2000, subject: 'globex' })
      const r3 = makeRequest({ createdAt: base - 1000 })
      for (const r of [r1, r2, r3]) await store.create(r)
      await store.update(revise(r3, { status: 'cancelled' }))
      t.same((await other.list()).map((r) => r.id), [r3.id, r2.id, r1.id])
      t.same((await other.list({ status: 'pending' })).map((r) => r.id), [r2.id, r1.id])
      t.same((await other.list({ subject: 'acme' })).map((r) => r.id), [r3.id, r1.id])
      t.same((await other.list({ status: 'pending', subject: 'globex' })).map((r) => r.id), [r2.id])
    })

    t.test('listOpen: pending requests and open reviews only', async (t) => {
      const [store, other] = await open(t)
      const pending = makeRequest()
      const decided = makeRequest()
      const glass = makeRequest({ kind: 'break_glass', status: 'approved', review: { status: 'open' } })
      for (const r of [pending, decided, glass]) await store.create(r)
      await store.update(revise(decided, { status: 'denied' }))
      t.same(new Set((await other.listOpen()).map((r) => r.id)), new Set([pending.id, glass.id]))
      await other.update(revise(glass, { review: { status: 'closed', reviewedBy: 'bob', reviewedAt: Date.now() } }))
      t.same((await store.listOpen()).map((r) => r.id), [pending.id])
    })

    t.test('a decided request is kept for the retention after its deadline and grant, then dropped (real time)', async (t) => {
      const [store] = await open(t, { retentionMs: 400 })
      const now = Date.now()
      const plain = makeRequest({ expiresAt: now + 100 })
      const granted = makeRequest({ expiresAt: now + 100, status: 'approved', grantExpiresAt: now + 900 })
      const reviewing = makeRequest({ expiresAt: now + 100, kind: 'break_glass', status: 'approved', review: { status: 'open' } })
      for (const r of [plain, granted, reviewing]) await store.create(r)
      await sleep(now + 300 - Date.now())
      t.ok(await store.get(plain.id), 'kept during the retention')
      await sleep(now + 800 - Date.now())
      t.equal(await store.get(plain.id), undefined, 'gone after deadline + retention')
      t.ok(await store.get(granted.id), 'kept while its grant lives, plus the retention')
      t.ok(await store.get(reviewing.id), 'an open review is never dropped')
      await sleep(now + 1600 - Date.now())
      t.equal(await store.get(granted.id), undefined)
      t.same((await store.list()).map((r) => r.id), [reviewing.id])
    })

    t.test('claimOnce: single use until the claim expires (real time)', async (t) => {
      const [a, b] = await open(t)
      const key = `jti:acme:${randomBytes(8).toString('hex')}`
      const results = await Promise.all([a.claimOnce(key, 400), b.claimOnce(key, 400), a.claimOnce(key, 400)])
      t.equal(results.filter(Boolean).length, 1, 'one of three concurrent claims wins')
      t.equal(await b.claimOnce(`${key}:other`, 400), true, 'keys are independent')
      await sleep(700)
      t.equal(await b.claimOnce(key, 400), true, 'claimable again once expired')
    })

    t.test('countAttempt: one count across replicas, exact under concurrency, cleared, windowed (real time)', async (t) => {
      const [a, b] = await open(t)
      const key = `totp:${randomBytes(6).toString('hex')}`
      const counts = await Promise.all(Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).countAttempt(key, 60_000)))
      t.same([...counts].sort((x, y) => x - y), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'ten concurrent attempts on two replicas count 1 to 10, none lost')
      t.equal(await b.countAttempt(`${key}:other`, 60_000), 1, 'keys are independent')
      await a.clearAttempts(key)
      t.equal(await b.countAttempt(key, 60_000), 1, 'cleared: the count starts again')
      await b.clearAttempts('never-counted')
      const short = `${key}:short`
      t.equal(await a.countAttempt(short, 400), 1)
      t.equal(await b.countAttempt(short, 400), 2, 'a later attempt does not move the window')
      await sleep(700)
      t.equal(await a.countAttempt(short, 400), 1, 'a new window once the first has ended')
    })

    t.test('after close, operations reject with StoreUnavailableError', async (t) => {
      const [store, other] = await makeStores(DEFAULTS)
      await other.close()
      await store.close()
      await t.rejects(store.get('r_x'), StoreUnavailableError)
      await t.rejects(store.create(makeRequest()), StoreUnavailableError)
      await t.rejects(store.claimOnce('k', 1000), StoreUnavailableError)
      await t.rejects(store.countAttempt('k', 1000), StoreUnavailableError)
      await t.resolves(store.close(), 'close is idempotent')
    })
  })
}

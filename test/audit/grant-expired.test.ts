/**
 * `grant.expired`: real gateways (the memory store, and two replicas on one private Redis) issue
 * short grants through the control-plane API and write one `grant.expired` per grant that reaches
 * its expiry, none for a revoked grant, and one at the new expiry for an extended grant. Every
 * line validates against the published schema. Waits are bounded; "exactly once" is counted after
 * the gateways stopped (their last sweep included), when nothing more can be written.
 */
import t, { type Test } from 'tap'
import { startTestGateway, call, sleep, type AuditRecord, type TestGateway } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis-server.js'
import { auditValidator } from '../helpers/audit-schema.js'

const POLICY = `
resources:
  - id: api
    upstream: UPSTREAM
    match: { path_prefix: /api }
    max_ttl: 1h
`
const CONFIG = 'store: { expiry_sweep_interval: 100ms }'
const SCOPES = ['GET /api/**']

const expiredOf = (id: string) => (e: AuditRecord) => e.event === 'grant.expired' && e.grant_id === id

function allValid(t: Test, ...gateways: TestGateway[]): void {
  const validate = auditValidator()
  for (const g of gateways) for (const e of g.audit) t.same(validate(e), [], `${e.event} valid`)
}

t.test('memory store: one grant.expired per expired grant, none when revoked, the new expiry when extended', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY, config: CONFIG })
  // Expiries are whole seconds, so a `3s` grant has at least 2 s left: time to revoke or extend it.
  const plain = await g.issue({ resource: 'api', scopes: SCOPES, ttl: '1s', reason: 'SUP-1' })
  const revoked = await g.issue({ resource: 'api', scopes: SCOPES, ttl: '3s' })
  const extended = await g.issue({ resource: 'api', scopes: SCOPES, ttl: '3s' })
  t.equal(await g.revoke(revoked.id, 'done early'), 204)
  const newExpiry = Date.parse(extended.expires_at) + 2000
  t.equal((await g.gw.store.extend(extended.id, newExpiry))?.expiresAt, newExpiry)
  // Expires after the revoked grant would have: once it is reported, a sweep has covered that time.
  const later = await g.issue({ resource: 'api', scopes: SCOPES, ttl: '4s' })

  const e = await g.waitForEvent(expiredOf(plain.id))
  t.match(e, {
    event: 'grant.expired',
    grant_id: plain.id,
    subject: 'acme',
    resource: 'api',
    scopes: SCOPES,
    starts_at: String,
    expires_at: plain.expires_at,
  })
  t.ok(Date.parse(e.time as string) >= Date.parse(plain.expires_at), 'written after the expiry')
  await g.waitForEvent(expiredOf(later.id))
  t.notOk(g.audit.some(expiredOf(revoked.id)), 'a revoked grant does not expire')

  const x = await g.waitForEvent(expiredOf(extended.id))
  t.equal(x.expires_at, new Date(newExpiry).toISOString(), 'the new expiry')
  t.ok(Date.parse(x.time as string) >= newExpiry, 'written after the new expiry, not at the first one')

  t.match((await call(`${g.controlUrl}/metrics`)).text, /^jitgate_grants_expired_total 3$/m, 'the metric counts them')
  await g.stop()
  for (const id of [plain.id, extended.id, later.id]) t.equal(g.audit.filter(expiredOf(id)).length, 1, `${id}: exactly one`)
  t.equal(g.audit.filter(expiredOf(revoked.id)).length, 0)
  allValid(t, g)
})

t.test('memory store: a grant that expired since the last sweep is on record when the gateway stops', async (t) => {
  // The periodic sweep is far away: only the last sweep at stop can report this expiry.
  const g = await startTestGateway(t, { policy: POLICY, config: 'store: { expiry_sweep_interval: 1h }' })
  const grant = await g.issue({ resource: 'api', scopes: SCOPES, ttl: '1s' })
  await sleep(Date.parse(grant.expires_at) + 50 - Date.now())
  await g.stop()
  t.equal(g.audit.filter(expiredOf(grant.id)).length, 1)
  const stopped = g.audit.findIndex((e) => e.event === 'gateway.stopped')
  t.ok(g.audit.findIndex(expiredOf(grant.id)) < stopped, 'before gateway.stopped')
})

t.test('Redis: two replicas write exactly one grant.expired per expired grant, through an outage too', async (t) => {
  const redis = await startRedis(t)
  const a = await startTestGateway(t, { policy: POLICY, config: CONFIG, env: { REDIS_URL: redis.url, JITGATE_GATEWAY_ID: 'gw-a' } })
  const b = await startTestGateway(t, {
    policy: POLICY,
    config: CONFIG,
    env: { REDIS_URL: redis.url, JITGATE_GATEWAY_ID: 'gw-b' },
    dataDir: a.dataDir,
  })
  const both = () => [...a.audit, ...b.audit]
  const waitBoth = async (pred: (e: AuditRecord) => boolean, withinMs = 10_000): Promise<AuditRecord> => {
    const deadline = Date.now() + withinMs
    for (;;) {
      const found = both().find(pred)
      if (found !== undefined) return found
      if (Date.now() > deadline) throw new Error(`no matching audit event within ${withinMs} ms`)
      await sleep(20)
    }
  }

  const plain = await Promise.all(Array.from({ length: 6 }, (_, i) => (i % 2 ? a : b).issue({ resource: 'api', scopes: SCOPES, ttl: '1s' })))
  const revoked = await a.issue({ resource: 'api', scopes: SCOPES, ttl: '3s' })
  t.equal(await b.revoke(revoked.id), 204, 'revoked through the other replica')
  const extended = await b.issue({ resource: 'api', scopes: SCOPES, ttl: '3s' })
  const newExpiry = Date.parse(extended.expires_at) + 2000
  t.equal((await a.gw.store.extend(extended.id, newExpiry))?.expiresAt, newExpiry)
  const later = await a.issue({ resource: 'api', scopes: SCOPES, ttl: '4s' })

  for (const g of [...plain, later]) {
    const e = await waitBoth(expiredOf(g.id))
    t.match(e, { subject: 'acme', resource: 'api', expires_at: g.expires_at })
  }
  t.notOk(both().some(expiredOf(revoked.id)), 'none for the revoked grant')
  const x = await waitBoth(expiredOf(extended.id))
  t.equal(x.expires_at, new Date(newExpiry).toISOString())
  t.ok(Date.parse(x.time as string) >= newExpiry, 'the extended grant at its new expiry')

  // Redis hangs across an expiry: the sweeps fail meanwhile; the event comes once Redis is back.
  const during = await b.issue({ resource: 'api', scopes: SCOPES, ttl: '3s' })
  redis.pause()
  const pausedAt = Date.now()
  t.teardown(() => redis.resume())
  t.ok(pausedAt < Date.parse(during.expires_at), 'Redis hangs before the expiry')
  await sleep(Date.parse(during.expires_at) + 500 - Date.now())
  redis.resume()
  const d = await waitBoth(expiredOf(during.id))
  t.equal(d.expires_at, during.expires_at)

  // The metric, summed over the replicas, counts each expired grant once (sweeps are still running).
  const expiredMetric = async (g: TestGateway): Promise<number> =>
    Number(/^jitgate_grants_expired_total (\d+)$/m.exec((await call(`${g.controlUrl}/metrics`)).text)?.[1] ?? Number.NaN)
  t.equal((await expiredMetric(a)) + (await expiredMetric(b)), 9, 'jitgate_grants_expired_total: 9 across the replicas')

  await Promise.all([a.stop(), b.stop()])
  const events = both()
  for (const g of [...plain, later, extended, during]) t.equal(events.filter(expiredOf(g.id)).length, 1, `${g.id}: exactly one across the replicas`)
  t.equal(events.filter(expiredOf(revoked.id)).length, 0)
  allValid(t, a, b)
})

/**
 * Writes the store confirms too late. A hung Redis (SIGSTOP) receives a control-plane write and
 * runs it once it wakes up, after the caller was told `503 store_unavailable`. The gateway then
 * reads behind the write, audits what happened, and revokes an operator's grant whose token the
 * failed call never handed out: every grant that ever existed has its grant.issued and its end on
 * record. The exact inputs of a finding: POST /v1/grants and DELETE /v1/grants/{id} while Redis
 * is stopped, then SIGCONT. The same for the access-request workflow: a request created into the
 * hang (listed and swept once it lands), and a stage-1 approval that lands late and is built on by
 * the next approval before the gateway reads behind it.
 */
import t, { type Test } from 'tap'
import { PassThrough } from 'node:stream'
import { startTestGateway, call, sleep, ADMIN_TOKEN, type AuditRecord } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis-server.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { createRedisGrantStore } from '../../src/grants/redis-store.js'
import { StoreUnavailableError, type GrantStore } from '../../src/grants/types.js'
import { createGrantService, RECONCILE_ACTOR, RECONCILE_EVERY_MS, UNCONFIRMED_ISSUE_REASON } from '../../src/control/grant-service.js'
import { createAuditLog } from '../../src/audit/audit-log.js'
import { createMetrics } from '../../src/metrics/metrics.js'
import { compilePolicy } from '../../src/policy/policy.js'
import { ApiError } from '../../src/control/errors.js'
import type { TokenIssuer } from '../../src/authn/token.js'
import { createRedisRequestStore } from '../../src/workflow/redis-request-store.js'
import type { AccessRequest, RequestStore } from '../../src/workflow/request-store.js'
import { localApprover } from '../../src/workflow/auth/approvers.js'
import { HOUR, harness } from '../workflow/fixtures.js'

const POLICY = `
resources:
  - id: api
    upstream: UPSTREAM
    match: { path_prefix: /api }
    max_ttl: 1h
`
const codeOf = (p: Promise<unknown>): Promise<string> =>
  p.then(
    () => 'resolved',
    (err: unknown) => (err instanceof ApiError ? err.code : String(err)),
  )
/** Asserts that `p` rejects with ApiError `code`. */
async function refused(t: Test, p: Promise<unknown>, code: string): Promise<void> {
  t.equal(await codeOf(p), code, code)
}
const auth = { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }

t.test('issue and revoke answered 503 while Redis hangs, landed when it wakes: audited, the orphan grant revoked', async (t) => {
  const redis = await startRedis(t)
  const g = await startTestGateway(t, { policy: POLICY, env: { REDIS_URL: redis.url } })
  const kept = await g.issue({ resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })

  redis.pause()
  t.teardown(() => redis.resume())
  const started = Date.now()
  const issued = await call(`${g.controlUrl}/v1/grants`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' }),
  })
  t.equal(issued.status, 503)
  t.match(issued.json, { error: { code: 'store_unavailable', details: [/^grant g_\S+: .*may still take effect/] } })
  const orphanId = /grant (g_\S+):/.exec(String((issued.json as { error: { details: string[] } }).error.details[0]))?.[1] as string
  const revoked = await call(`${g.controlUrl}/v1/grants/${kept.id}`, { method: 'DELETE', headers: auth, body: JSON.stringify({ reason: 'done' }) })
  t.equal(revoked.status, 503)
  t.ok(Date.now() - started < 3000, 'both answered fast')
  await sleep(300)
  redis.resume()

  // Both writes ran when Redis woke up: each is now on record, and the orphan grant is revoked.
  const late = await g.waitForEvent((e) => e.event === 'grant.issued' && e.grant_id === orphanId)
  t.match(late, { actor: 'operator', subject: 'acme', resource: 'api', request_id: String })
  t.match(await g.waitForEvent((e) => e.event === 'grant.revoked' && e.grant_id === orphanId), {
    actor: RECONCILE_ACTOR,
    reason: UNCONFIRMED_ISSUE_REASON,
  })
  t.match(await g.waitForEvent((e) => e.event === 'grant.revoked' && e.grant_id === kept.id), { actor: 'operator', reason: 'done' })
  const list = await call(`${g.controlUrl}/v1/grants`, { headers: auth })
  t.notOk(JSON.stringify(list.json).includes(orphanId), 'the orphan grant is not active')
  t.equal((await call(`${g.dataUrl}/api/x`, { token: kept.token })).status, 403, 'the revoked grant is refused')

  const refused = g.audit.filter((e) => e.event === 'admin.denied' && e.code === 'store_unavailable')
  t.equal(refused.length, 2, 'each 503 is an admin.denied event')
  t.match(refused, [{ status: 503, method: 'POST' }, { status: 503, method: 'DELETE' }])
  await g.stop()
  const validate = auditValidator()
  for (const e of g.audit) t.same(validate(e), [], `${e.event} valid`)
})

t.test('a write that never ran leaves nothing to audit; an extension confirmed late is audited', async (t) => {
  const redis = await startRedis(t)
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'uw:', timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  const stream = new PassThrough()
  const events: AuditRecord[] = []
  let buf = ''
  stream.on('data', (c: Buffer) => {
    buf += c.toString()
    for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
      events.push(JSON.parse(buf.slice(0, nl)) as AuditRecord)
      buf = buf.slice(nl + 1)
    }
  })
  const audit = createAuditLog({ output: stream, gatewayId: 'test', policyVersion: () => 'v' })
  t.teardown(() => audit.close())
  const policy = compilePolicy([{ file: 'p.yaml', text: POLICY.replace('UPSTREAM', 'http://127.0.0.1:1') }])
  const tokens: TokenIssuer = { issue: async () => 'token', keyId: 'k' } as unknown as TokenIssuer
  const metrics = createMetrics({ activeGrants: async () => 0, defaultMetrics: false })
  // The extension's answer is lost after it ran (what a reply after the deadline looks like to
  // the service): the store is real, only the confirmation goes missing.
  const replyLost: GrantStore = Object.assign(Object.create(store) as GrantStore, {
    extend: async (id: string, expiresAt: number) => {
      await store.extend(id, expiresAt)
      throw new StoreUnavailableError('redis extend: no answer within 200 ms')
    },
  })
  const grants = createGrantService({ store: replyLost, policy: () => policy, tokens: () => tokens, audit, metrics })
  const ctx = { actor: 'carol', requestId: 'req-1', accessRequestId: 'r_1' }

  const { grant } = await grants.issue({ subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttlMs: 600_000, actor: 'operator', requestId: 'req-0' })
  const newExpiry = grant.expiresAt + 60_000
  t.equal(await codeOf(grants.extend(grant.id, newExpiry, ctx)), 'store_unavailable')
  const deadline = Date.now() + 10_000
  while (!events.some((e) => e.event === 'grant.extended') && Date.now() < deadline) await sleep(20)
  t.match(events.find((e) => e.event === 'grant.extended'), {
    grant_id: grant.id,
    actor: 'carol',
    expires_at: new Date(newExpiry).toISOString(),
    previous_expires_at: new Date(grant.expiresAt).toISOString(),
  })

  // Redis refuses connections (stopped): the revoke is never sent, so nothing is ever audited.
  await redis.stop()
  t.equal(await codeOf(grants.revoke(grant.id, 'operator', 'x', 'req-2')), 'store_unavailable')
  await sleep(1500)
  t.notOk(events.some((e) => e.event === 'grant.revoked'), 'no event for a revoke that never ran')
})

t.test('workflow on a hung Redis: a late create is listed and swept; a late approval built on by a later one is audited', async (t) => {
  const redis = await startRedis(t)
  t.teardown(() => {
    try {
      redis.resume()
    } catch {
      // stopped already
    }
  })
  const keyPrefix = 'uwr:'
  const requestStore = (now: () => number) => createRedisRequestStore({ url: redis.url, keyPrefix, timeoutMs: 200, retentionMs: 24 * HOUR, now })
  const ask = { resource: 'crm-api', scopes: ['GET /crm/customers/*'], durationMs: HOUR, reason: 'SUP-1: export broken' }
  const ctx = { requestId: 'http-1' }
  const until = async <T>(what: string, fn: () => T | undefined | Promise<T | undefined>): Promise<T> => {
    const deadline = Date.now() + 10_000
    for (;;) {
      const value = await fn()
      if (value !== undefined) return value
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
      await sleep(20)
    }
  }

  t.test('a create sent into the hang: once Redis wakes, it is audited, listed, and swept to expired', async (t) => {
    const h = await harness(t, { requestStore })
    // A running gateway has written before: its scripts are in Redis's cache.
    await h.service.create('acme', ask, ctx)
    const before = h.audit.length

    redis.pause()
    await refused(t, h.service.create('acme', ask, ctx), 'store_unavailable')
    await sleep(300)
    redis.resume()

    const created = await until('request.created', () => h.audit.slice(before).find((e) => e.event === 'request.created'))
    const id = created.access_request_id as string
    t.ok((await h.service.list()).some((r) => r.id === id), 'listed')
    t.ok((await h.requests.listOpen()).some((r) => r.id === id), 'open, where the sweeper looks')
    h.advance(24 * HOUR)
    await h.service.sweep()
    t.match(h.events('request.expired').find((e) => e.access_request_id === id), { actor: 'system' }, 'swept to expired')
    t.match(await h.requests.get(id), { status: 'expired' })
    t.equal(h.events('request.created').filter((e) => e.access_request_id === id).length, 1, 'created once')
  })

  t.test('replica A approves stage 1 into the hang; after Redis wakes, replica B approves stage 2 on top: both approvals audited once', async (t) => {
    // A's reads behind its write stay unanswered until B has approved (as on a connection that
    // comes back slower than B's): A then finds its approval under B's.
    let aHangs = false
    let aBlind = false
    const a = await harness(t, {
      requestStore,
      wrapRequests: (store) =>
        Object.assign(Object.create(store) as RequestStore, {
          update: (r: AccessRequest) => {
            if (aHangs) [aHangs, aBlind] = [false, true]
            if (aBlind) redis.pause()
            return store.update(r)
          },
          get: (id: string) => (aBlind ? Promise.reject(new StoreUnavailableError('redis get: no answer within 200 ms')) : store.get(id)),
        }),
    })
    const b = await harness(t, { requestStore })
    const r = await b.service.create('acme', ask, ctx)

    aHangs = true
    await refused(t, a.service.approve(r.id, localApprover('alice', true), 'stage 1 ok', ctx), 'store_unavailable')
    await sleep(300)
    redis.resume()
    await until('alice\'s write', async () => ((await b.requests.get(r.id))?.version === 2 ? true : undefined))

    const done = await b.service.approve(r.id, localApprover('carol', true), undefined, ctx)
    t.match(done, { status: 'approved', version: 3, approvals: [{ approver: 'alice', stage: 0 }, { approver: 'carol', stage: 1 }] })
    aBlind = false
    t.match(await until('alice\'s approval_recorded', () => a.events('request.approval_recorded')[0]), {
      actor: 'alice',
      stage: 1,
      comment: 'stage 1 ok',
      access_request_id: r.id,
    })
    t.match(b.events('request.approval_recorded'), [{ actor: 'carol', stage: 2 }])
    t.match(b.events('request.approved'), [{ actor: 'carol' }])
    t.equal(b.events('grant.issued').length, 1)
    await sleep(RECONCILE_EVERY_MS + 200)
    t.equal(a.events('request.approval_recorded').length, 1, "alice's approval once")
    t.equal(a.audit.length, 1, 'and nothing else from A')
    t.equal(b.events('request.approval_recorded').length, 1, "carol's once")
  })
})

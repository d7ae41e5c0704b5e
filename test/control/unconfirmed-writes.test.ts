/**
 * Writes the store confirms too late. A hung Redis (SIGSTOP) receives a control-plane write and
 * runs it once it wakes up, after the caller was told `503 store_unavailable`. The gateway then
 * reads behind the write, audits what happened, and revokes an operator's grant whose token the
 * failed call never handed out: every grant that ever existed has its grant.issued and its end on
 * record. The exact inputs of a finding: POST /v1/grants and DELETE /v1/grants/{id} while Redis
 * is stopped, then SIGCONT. The same for the access-request workflow: a request created into the
 * hang (listed and swept once it lands), and a stage-1 approval that lands late and is built on by
 * the next approval before the gateway reads behind it. Two calls writing the same thing during one
 * hang (two issues of one approved request's grant, two extensions to one expiry, two revokes) are
 * audited once: each write carries its own nonce, and only the call that finds its own is audited.
 */
import t, { type Test } from 'tap'
import { PassThrough, Writable } from 'node:stream'
import { pino } from 'pino'
import { Redis } from 'ioredis'
import { startTestGateway, call, sleep, ADMIN_TOKEN, type AuditRecord } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis-server.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { createRedisGrantStore } from '../../src/grants/redis-store.js'
import { StoreUnavailableError, type Grant, type GrantStore } from '../../src/grants/types.js'
import { createMemoryGrantStore } from '../../src/grants/memory-store.js'
import { createGrantService, type GrantService, RECONCILE_ACTOR, RECONCILE_EVERY_MS, UNCONFIRMED_ISSUE_REASON } from '../../src/control/grant-service.js'
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

t.test('two revokes of one grant answered 503 while Redis hangs: exactly one grant.revoked once it wakes', async (t) => {
  const redis = await startRedis(t)
  const g = await startTestGateway(t, { policy: POLICY, env: { REDIS_URL: redis.url } })
  const grant = await g.issue({ resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })

  redis.pause()
  t.teardown(() => redis.resume())
  // The same operator and reason twice (a retried click): only the tombstone tells the calls apart.
  const del = () => call(`${g.controlUrl}/v1/grants/${grant.id}`, { method: 'DELETE', headers: auth, body: JSON.stringify({ reason: 'done' }) })
  t.equal((await del()).status, 503)
  t.equal((await del()).status, 503)
  await sleep(300)
  redis.resume()

  t.match(await g.waitForEvent((e) => e.event === 'grant.revoked' && e.grant_id === grant.id), { actor: 'operator', reason: 'done' })
  const again = await call(`${g.controlUrl}/v1/grants/${grant.id}`, { method: 'DELETE', headers: auth, body: JSON.stringify({ reason: 'done' }) })
  t.equal(again.status, 409, 'the first tombstone stands')
  t.match(again.json, { error: { code: 'grant_already_revoked', details: [/^revoked by operator at .*: done$/] } })
  // Both reads behind the writes have seen the tombstone by now (one every RECONCILE_EVERY_MS).
  await sleep(4 * RECONCILE_EVERY_MS)
  t.equal(g.audit.filter((e) => e.event === 'grant.revoked' && e.grant_id === grant.id).length, 1, 'one revocation, one event')
  t.equal((await call(`${g.dataUrl}/api/x`, { token: grant.token })).status, 403, 'the revoked grant is refused')
})

t.test('a gateway stopped while Redis hangs logs the operator grant it could not confirm, by id', async (t) => {
  const redis = await startRedis(t)
  const lines: Record<string, unknown>[] = []
  const logStream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      done()
    },
  })
  const g = await startTestGateway(t, { policy: POLICY, env: { REDIS_URL: redis.url }, log: pino({ level: 'warn' }, logStream) })
  await g.issue({ resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })

  redis.pause()
  t.teardown(() => redis.resume())
  const issued = await call(`${g.controlUrl}/v1/grants`, {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' }),
  })
  t.equal(issued.status, 503)
  const orphanId = /grant (g_\S+):/.exec(String((issued.json as { error: { details: string[] } }).error.details[0]))?.[1] as string
  await g.stop()
  t.match(lines.find((l) => String(l.msg).startsWith('stopping with grant store writes whose outcome is unknown')), {
    level: 40,
    unconfirmed: [{ grant_id: orphanId, operation: 'issue', follow_up: /^revoke the grant if it exists/ }],
  })
})

interface LogLine {
  readonly level: 'warn' | 'info'
  readonly msg: string
  readonly fields: Record<string, unknown>
}

/** A grant service over `store`, with its audit events and operational log lines captured. */
function serviceOver(t: Test, store: GrantStore): { grants: GrantService; events: AuditRecord[]; logs: LogLine[] } {
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
  const logs: LogLine[] = []
  const log = {
    warn: (fields: object, msg: string) => logs.push({ level: 'warn', msg, fields: fields as Record<string, unknown> }),
    info: (fields: object, msg: string) => logs.push({ level: 'info', msg, fields: fields as Record<string, unknown> }),
  }
  const grants = createGrantService({ store, policy: () => policy, tokens: () => tokens, audit, metrics, log })
  return { grants, events, logs }
}

const operatorIssue = { subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttlMs: 600_000, actor: 'operator', requestId: 'req-0' }
const orphanOf = (err: unknown): string => /grant (g_\S+):/.exec(String((err as ApiError).details?.[0]))?.[1] as string

t.test('a write that never ran leaves nothing to audit; an extension confirmed late is audited', async (t) => {
  const redis = await startRedis(t)
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'uw:', timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  // The extension's answer is lost after it ran (what a reply after the deadline looks like to
  // the service): the store is real, only the confirmation goes missing.
  const replyLost: GrantStore = Object.assign(Object.create(store) as GrantStore, {
    extend: async (id: string, expiresAt: number, nonce?: string) => {
      await store.extend(id, expiresAt, nonce)
      throw new StoreUnavailableError('redis extend: no answer within 200 ms')
    },
  })
  const { grants, events } = serviceOver(t, replyLost)
  const ctx = { actor: 'carol', requestId: 'req-1', accessRequestId: 'r_1' }

  const { grant } = await grants.issue(operatorIssue)
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

/** The grant of an approved access request: its id derived from the request, so every issue of it writes the same grant. */
function approvedGrant(): Grant {
  const now = Date.now()
  return {
    id: `g_r${now.toString(36)}approved`,
    subject: 'acme',
    resource: 'api',
    scopes: ['GET /api/**'],
    startsAt: now,
    expiresAt: Math.floor((now + 600_000) / 1000) * 1000,
    createdAt: now,
    issuedBy: 'carol',
    reason: 'SUP-1: export broken',
    policyVersion: 'v',
  }
}

/** Resolves once `check` holds; fails the test after 10 s. */
async function until(t: Test, what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000
  while (!check()) {
    if (Date.now() > deadline) return void t.fail(`${what}: not within 10 s`)
    await sleep(20)
  }
}

t.test("two issues of one approved request's grant answered 503 while Redis hangs: exactly one grant.issued once it wakes", async (t) => {
  const redis = await startRedis(t)
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'uw:', timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  const { grants, events, logs } = serviceOver(t, store)
  await store.ping()
  const grant = approvedGrant()
  const ctx = { actor: 'carol', requestId: 'req-1', accessRequestId: 'r_1' }

  redis.pause()
  t.teardown(() => redis.resume())
  // The approving replica's issue, then the requester's read issuing the same grant again (or a
  // second replica): both creates are sent into the hang, and both find "the grant exists" later.
  t.equal(await codeOf(grants.issueApproved(grant, ctx)), 'store_unavailable')
  t.equal(await codeOf(grants.issueApproved(grant, { ...ctx, requestId: 'req-2' })), 'store_unavailable')
  await sleep(300)
  redis.resume()

  const issued = () => events.filter((e) => e.event === 'grant.issued' && e.grant_id === grant.id)
  await until(t, 'grant.issued', () => issued().length > 0)
  // Both reads behind the writes have seen the grant by now (one every RECONCILE_EVERY_MS).
  await sleep(4 * RECONCILE_EVERY_MS)
  t.equal(issued().length, 1, 'one grant, one grant.issued')
  const lookup = await store.get(grant.id)
  t.equal(lookup.status, 'active', "an approved request's grant is the requester's to fetch: not revoked")
  t.match(issued()[0], { request_id: 'req-1', actor: 'carol', access_request_id: 'r_1', subject: 'acme', resource: 'api' }, 'for the call whose create stored it: the first sent')
  const nonce = lookup.status === 'active' ? lookup.grant.nonces?.issue : undefined
  t.match(nonce, /^[\w-]{16}$/, 'the record names its create')
  t.notOk(JSON.stringify(events).includes(nonce as string) || JSON.stringify(events).includes('nonce'), 'no nonce in the audit trail')
  t.notOk(events.some((e) => e.event === 'grant.revoked'))
  t.same(logs.filter((l) => l.level === 'warn'), [], 'nothing left unknown')
  await grants.stop()
})

t.test('two issues of one grant during a hang, then a revoke of it before the reads behind them: one grant.issued, one grant.revoked', async (t) => {
  const redis = await startRedis(t)
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'uw:', timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  const { grants, events } = serviceOver(t, store)
  await store.ping()
  const grant = approvedGrant()
  const ctx = { actor: 'carol', requestId: 'req-1', accessRequestId: 'r_1' }

  redis.pause()
  t.teardown(() => redis.resume())
  t.equal(await codeOf(grants.issueApproved(grant, ctx)), 'store_unavailable')
  t.equal(await codeOf(grants.issueApproved(grant, { ...ctx, requestId: 'req-2' })), 'store_unavailable')
  // The id was in the 503: an operator revokes it, into the same hang.
  t.equal(await codeOf(grants.revoke(grant.id, 'operator', 'not wanted', 'req-3')), 'store_unavailable')
  // Every read sent before the revoke has timed out: the reads that see the grant see its tombstone.
  await sleep(600)
  redis.resume()

  await until(t, 'grant.issued and grant.revoked', () => events.some((e) => e.event === 'grant.issued') && events.some((e) => e.event === 'grant.revoked'))
  await sleep(4 * RECONCILE_EVERY_MS)
  t.match(events.filter((e) => e.event === 'grant.issued'), [{ grant_id: grant.id, request_id: 'req-1', actor: 'carol' }], 'the create that stored it, once')
  t.match(events.filter((e) => e.event === 'grant.revoked'), [{ grant_id: grant.id, request_id: 'req-3', actor: 'operator', reason: 'not wanted' }])
  const lookup = await store.get(grant.id)
  t.match(lookup, { status: 'revoked', revocation: { grantNonces: { issue: String } } }, 'the tombstone keeps the nonce of the create')
  await grants.stop()
})

t.test('two extensions of one grant to the same expiry answered 503 while Redis hangs: exactly one grant.extended once it wakes', async (t) => {
  const redis = await startRedis(t)
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'uw:', timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  const raw = new Redis(redis.url)
  t.teardown(() => raw.disconnect())
  const { grants, events, logs } = serviceOver(t, store)
  const ctx = { actor: 'carol', requestId: 'req-1', accessRequestId: 'r_2' }
  const { grant } = await grants.issue(operatorIssue)
  // A running gateway has extended before: its extend script is in Redis's cache.
  const first = await grants.extend(grant.id, grant.expiresAt + 60_000, ctx)
  const target = first.expiresAt + 60_000

  // The hang begins after both calls read the grant, before their writes: CLIENT PAUSE WRITE lets
  // the reads through and holds the writes (a SIGSTOP before the calls would fail their reads, and
  // no write would be sent), then SIGSTOP hangs Redis altogether.
  await raw.call('CLIENT', 'PAUSE', '60000', 'WRITE')
  const calls = await Promise.all([
    codeOf(grants.extend(grant.id, target, { ...ctx, requestId: 'req-2' })),
    codeOf(grants.extend(grant.id, target, { ...ctx, requestId: 'req-3' })),
  ])
  t.same(calls, ['store_unavailable', 'store_unavailable'], 'both answered 503')
  redis.pause()
  t.teardown(() => redis.resume())
  await sleep(300)
  redis.resume()
  await raw.call('CLIENT', 'UNPAUSE')

  const extended = () => events.filter((e) => e.event === 'grant.extended' && e.expires_at === new Date(target).toISOString())
  await until(t, 'grant.extended', () => extended().length > 0)
  await sleep(4 * RECONCILE_EVERY_MS)
  t.equal(extended().length, 1, 'one extension, one grant.extended')
  t.match(extended()[0], {
    grant_id: grant.id,
    actor: 'carol',
    request_id: /^req-[23]$/,
    previous_expires_at: new Date(first.expiresAt).toISOString(),
  })
  const lookup = await store.get(grant.id)
  t.match(lookup, { status: 'active', grant: { expiresAt: target, nonces: { extend: String } } })
  t.notOk(JSON.stringify(events).includes('nonce'), 'no nonce in the audit trail')
  t.same(logs.filter((l) => l.level === 'warn'), [], 'nothing left unknown')

  // Redis is back: a retry of the same extension changes nothing, and is not audited again.
  await grants.extend(grant.id, target, { ...ctx, requestId: 'req-4' })
  t.equal(extended().length, 1, 'a retry once Redis is back: still one')
  await grants.stop()
})

t.test('two confirmed extensions racing to one expiry: one grant.extended, for the call that moved it', async (t) => {
  const store = createMemoryGrantStore({ timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  const { grants, events } = serviceOver(t, store)
  const { grant } = await grants.issue(operatorIssue)
  const ctx = { actor: 'carol', requestId: 'req-1', accessRequestId: 'r_3' }
  const target = grant.expiresAt + 60_000
  // Both read the grant before either writes: the expiry alone would make both look like the one that moved it.
  const [a, b] = await Promise.all([grants.extend(grant.id, target, ctx), grants.extend(grant.id, target, { ...ctx, requestId: 'req-2' })])
  t.strictSame(a, b, 'both answer the one extended grant')
  t.match(events.filter((e) => e.event === 'grant.extended'), [{ grant_id: grant.id, expires_at: new Date(target).toISOString() }])
  t.equal(events.filter((e) => e.event === 'grant.extended').length, 1)
})

t.test('stopping while Redis still hangs: each unconfirmed write is logged by grant id, with what to do', async (t) => {
  const redis = await startRedis(t)
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'uw:', timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  const { grants, events, logs } = serviceOver(t, store)
  const kept = await grants.issue(operatorIssue)

  redis.pause()
  t.teardown(() => redis.resume())
  const orphanId = orphanOf(await grants.issue(operatorIssue).catch((err: unknown) => err))
  t.match(orphanId, /^g_/)
  t.equal(await codeOf(grants.revoke(kept.grant.id, 'operator', 'done', 'req-2')), 'store_unavailable')
  // SIGTERM during the hang: the last read cannot be answered either; stop does not wait for Redis.
  const started = Date.now()
  await grants.stop()
  t.ok(Date.now() - started < 3000, 'stop is bounded by the store deadline')
  const warned = logs.filter((l) => l.level === 'warn')
  t.equal(warned.length, 1, 'one warning, listing every write')
  t.match(warned[0], {
    msg: /^stopping with grant store writes whose outcome is unknown/,
    fields: {
      unconfirmed: [
        { grant_id: orphanId, operation: 'issue', since: String, follow_up: /^revoke the grant if it exists: .*never handed out/ },
        { grant_id: kept.grant.id, operation: 'revoke', since: String, follow_up: /^revoke the grant again if it is still active/ },
      ],
    },
  })

  // A call that was still running when the gateway stopped: its write is logged on its own.
  const lateId = orphanOf(await grants.issue(operatorIssue).catch((err: unknown) => err))
  t.match(logs.at(-1), {
    level: 'warn',
    msg: /^a grant store write was not confirmed after the gateway stopped/,
    fields: { grant_id: lateId, operation: 'issue', follow_up: /^revoke the grant if it exists/ },
  })

  // The gap the warnings are for: the writes land once Redis wakes, and this stopped service no
  // longer reads behind them. The operator's follow-up closes it.
  redis.resume()
  await sleep(4 * RECONCILE_EVERY_MS)
  t.notOk(events.some((e) => e.grant_id === orphanId || e.grant_id === lateId), 'nothing audited after stop')
  t.equal((await store.get(orphanId)).status, 'active', 'the orphan grant landed')
  t.equal((await store.get(kept.grant.id)).status, 'revoked', 'the revoke landed')
})

t.test('stopping after Redis woke, before the next read behind the write: the last read audits it and revokes the orphan', async (t) => {
  const redis = await startRedis(t)
  const store = createRedisGrantStore({ url: redis.url, keyPrefix: 'uw:', timeoutMs: 200, minTombstoneMs: 60_000 })
  t.teardown(() => store.close())
  const { grants, events, logs } = serviceOver(t, store)
  await store.ping() // connected: the issue below is sent, not refused for want of a connection

  redis.pause()
  t.teardown(() => redis.resume())
  const orphanId = orphanOf(await grants.issue(operatorIssue).catch((err: unknown) => err))
  // The first read behind the write has timed out too; the next is RECONCILE_EVERY_MS away.
  await sleep(300)
  redis.resume()
  await grants.stop()
  t.match(events.find((e) => e.event === 'grant.issued' && e.grant_id === orphanId), { actor: 'operator', subject: 'acme' })
  t.match(events.find((e) => e.event === 'grant.revoked' && e.grant_id === orphanId), { actor: RECONCILE_ACTOR, reason: UNCONFIRMED_ISSUE_REASON })
  t.equal((await store.get(orphanId)).status, 'revoked', 'the orphan grant is revoked')
  t.same(logs.filter((l) => l.level === 'warn'), [], 'nothing left unknown')
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

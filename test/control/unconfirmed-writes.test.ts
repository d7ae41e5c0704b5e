/**
 * Writes the store confirms too late. A hung Redis (SIGSTOP) receives a control-plane write and
 * runs it once it wakes up, after the caller was told `503 store_unavailable`. The gateway then
 * reads behind the write, audits what happened, and revokes an operator's grant whose token the
 * failed call never handed out: every grant that ever existed has its grant.issued and its end on
 * record. The exact inputs of a finding: POST /v1/grants and DELETE /v1/grants/{id} while Redis
 * is stopped, then SIGCONT.
 */
import t from 'tap'
import { PassThrough } from 'node:stream'
import { startTestGateway, call, sleep, ADMIN_TOKEN, type AuditRecord } from '../helpers/gateway.js'
import { startRedis } from '../helpers/redis-server.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { createRedisGrantStore } from '../../src/grants/redis-store.js'
import { StoreUnavailableError, type GrantStore } from '../../src/grants/types.js'
import { createGrantService, RECONCILE_ACTOR, UNCONFIRMED_ISSUE_REASON } from '../../src/control/grant-service.js'
import { createAuditLog } from '../../src/audit/audit-log.js'
import { createMetrics } from '../../src/metrics/metrics.js'
import { compilePolicy } from '../../src/policy/policy.js'
import { ApiError } from '../../src/control/errors.js'
import type { TokenIssuer } from '../../src/authn/token.js'

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

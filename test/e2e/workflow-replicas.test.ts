/**
 * The workflow on two in-process gateways sharing one real Redis (and one signing key): final
 * approvals racing on both replicas make one grant; expiry and escalation happen once however many
 * replicas sweep; an extension approved through one replica keeps a WebSocket open on the other
 * and moves its cut-off. Webhook notifications go to a real receiver on port 0.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { decodeJwt } from 'jose'
import { Redis } from 'ioredis'
import { startRedis } from '../helpers/redis-server.js'
import { startTestGateway, call, ADMIN_TOKEN, type TestGateway, type AuditRecord } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { api, makeWorld, principalsYaml, type WorkflowWorld } from '../helpers/workflow.js'

const redis = await startRedis(t)
const validate = auditValidator()
let prefixes = 0

/** A webhook receiver recording the event of each delivery. */
async function webhook(t: Test): Promise<{ url: string; events: string[] }> {
  const events: string[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      events.push((JSON.parse(body) as { event: string }).event)
      res.writeHead(204).end()
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, events }
}

interface Pair {
  readonly a: TestGateway
  readonly b: TestGateway
  readonly w: WorkflowWorld
  /** The replicas' Redis key prefix. */
  readonly keyPrefix: string
  /** Both replicas' audit events of one name. */
  events(name: string): AuditRecord[]
}

async function replicas(
  t: Test,
  opts: { principals?: Parameters<typeof principalsYaml>[1]; config?: string; upstream?: string; redisUrl?: string } = {},
): Promise<Pair> {
  const w = await makeWorld(t, opts.config ?? '')
  const policy = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 8h
    websocket: true
${principalsYaml(w, opts.principals)}`
  const dataDir = mkdtempSync(join(tmpdir(), 'jitgate-wf-'))
  const keyPrefix = `wf${++prefixes}:`
  const env = { ...w.env, REDIS_URL: opts.redisUrl ?? redis.url, JITGATE_KEY_PREFIX: keyPrefix, HOOK_SECRET: 'hook-secret-0123456789' }
  const common = { policy, env, config: w.config, dataDir, ...(opts.upstream !== undefined ? { upstream: opts.upstream } : {}) }
  const a = await startTestGateway(t, common)
  const b = await startTestGateway(t, common)
  return { a, b, w, keyPrefix, events: (name) => [...a.audit, ...b.audit].filter((e) => e.event === name) }
}

function auditValid(t: Test, p: Pair): void {
  const all = [...p.a.audit, ...p.b.audit]
  t.same(all.flatMap((e) => validate(e).map((m) => `${e.event}: ${m}`)), [], `${all.length} audit lines match the schema`)
}

async function eventually(t: Test, what: string, check: () => boolean, withinMs = 10_000): Promise<void> {
  const deadline = Date.now() + withinMs
  while (!check()) {
    if (Date.now() > deadline) return void t.fail(`${what}: not within ${withinMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
  t.pass(what)
}

const ASK = { resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration: '1h', reason: 'SUP-1234' }

t.test('two simultaneous final approvals on two replicas make one grant', async (t) => {
  const p = await replicas(t)
  for (let round = 0; round < 5; round++) {
    const id = (await api(p.a.controlUrl, 'POST', '/v1/requests', { bearer: await p.w.acme.assertion() }, ASK)).json.id as string
    t.equal((await api(p.b.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await p.w.idToken('bob') })).status, 200)
    const [carol, dave] = await Promise.all([p.w.idToken('00u-carol'), p.w.idToken('00u-dave')])
    const answers = await Promise.all([
      api(p.a.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: carol }),
      api(p.b.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: dave }),
    ])
    const statuses = answers.map((x) => x.status).sort()
    t.same(statuses, [200, 409], `round ${round}: one approval made it, the other found it approved`)
    t.match(answers.find((x) => x.status === 409)?.json, { error: { code: 'wrong_state' } })
  }
  t.equal(p.events('request.approved').length, 5)
  t.equal(p.events('grant.issued').length, 5, 'one grant per request, across both replicas')
  t.equal(new Set(p.events('grant.issued').map((e) => e.grant_id)).size, 5)
  auditValid(t, p)
})

t.test('pending expiry and escalation: once each, however many replicas sweep; notified once', async (t) => {
  const hook = await webhook(t)
  const p = await replicas(t, {
    principals: { approval: '    request_ttl: 5s\n    escalate_after: 1s\n    escalation_group: crm-owners' },
    config: `workflow:\n  sweep_interval: 100ms\nnotifications:\n  webhooks:\n    - url: ${hook.url}\n      secret_env: HOOK_SECRET\n      events: [request.escalated, request.expired]\n  backoff: 50ms\n`,
  })
  const id = (await api(p.a.controlUrl, 'POST', '/v1/requests', { bearer: await p.w.acme.assertion() }, ASK)).json.id as string
  await eventually(t, 'escalated after the delay', () => p.events('request.escalated').length > 0)
  t.equal((await api(p.b.controlUrl, 'GET', `/v1/requests/${id}`, { admin: true })).json.status, 'pending', 'escalated, still pending')
  await eventually(t, 'expired after its TTL', () => p.events('request.expired').length > 0)
  // Several more sweeps on both replicas change nothing.
  await new Promise((r) => setTimeout(r, 500))
  t.match(p.events('request.escalated'), [{ access_request_id: id }])
  t.match(p.events('request.expired'), [{ access_request_id: id }])
  t.match((await api(p.b.controlUrl, 'GET', `/v1/requests/${id}`, { admin: true })).json, { status: 'expired', decided_by: 'system' })
  t.match(await api(p.a.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await p.w.idToken('bob') }), { status: 409, json: { error: { code: 'wrong_state' } } })
  await eventually(t, 'both notifications delivered', () => hook.events.length >= 2)
  t.same(hook.events.sort(), ['request.escalated', 'request.expired'], 'each notified once')
  auditValid(t, p)
})

t.test('extend keeps an open WebSocket open and moves its cut-off, across replicas', async (t) => {
  const upstream = await startUpstream(t)
  const p = await replicas(t, {
    upstream: upstream.url,
    principals: { entitlement: '        auto_approve: { max_duration: 5s, scopes: ["GET /crm/customers/**"] }' },
  })
  const first = await api(p.a.controlUrl, 'POST', '/v1/requests', { bearer: await p.w.acme.assertion() }, { ...ASK, scopes: ['GET /crm/customers/**'], duration: '4s' })
  t.match(first.json, { status: 'approved', decided_by: 'auto-approval', token: /^eyJ/ })
  const firstExpiry = Date.parse(first.json.grant.expires_at as string)

  const ws = new WebSocket(`${p.a.dataUrl.replace('http', 'ws')}/crm/customers/stream`, { headers: { authorization: `Bearer ${first.json.token}` } })
  const closed = new Promise<{ code: number; reason: string; at: number }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString(), at: Date.now() })))
  await new Promise((resolve, reject) => {
    ws.on('open', resolve)
    ws.on('error', reject)
  })

  const ext = await api(p.b.controlUrl, 'POST', `/v1/requests/${first.json.id}/extend`, { bearer: await p.w.acme.assertion() }, { duration: '4s', reason: 'still exporting' })
  t.match(ext, { status: 201, json: { kind: 'extension', status: 'approved', extends: first.json.id, grant: { status: 'active' } } })
  const newExpiry = Date.parse(ext.json.grant.expires_at as string)
  t.equal(newExpiry, firstExpiry + 4000, 'the expiry moved by the extension')
  t.match(p.events('grant.extended'), [{ grant_id: first.json.grant.id, actor: 'auto-approval' }])

  await new Promise((r) => setTimeout(r, firstExpiry + 800 - Date.now()))
  t.equal(ws.readyState, WebSocket.OPEN, 'still open past the first expiry')
  const echoed = new Promise<string>((resolve) => ws.once('message', (d) => resolve(d.toString())))
  ws.send('ping')
  t.equal(await echoed, 'ping')
  // A token's exp is its grant's expiry when it was read: reading it again gives the new one.
  const fresh = (await api(p.b.controlUrl, 'GET', `/v1/requests/${first.json.id}`, { bearer: await p.w.acme.assertion() })).json.token as string
  t.equal(decodeJwt(fresh).exp, newExpiry / 1000)
  t.equal(decodeJwt(fresh).jti, first.json.grant.id, 'same grant')
  t.equal((await call(`${p.b.dataUrl}/crm/customers/1`, { token: fresh })).status, 200, 'the token read after the extension works')

  const end = await closed
  t.match(end, { code: 1008, reason: 'grant expired' })
  t.ok(end.at >= newExpiry - 50, 'closed at the new cut-off, not before')
  auditValid(t, p)
})

t.test('the nonces naming grant writes stay in the store: never in an API answer, an audit line or a token', async (t) => {
  const p = await replicas(t, { principals: { entitlement: '        auto_approve: { max_duration: 2h, scopes: ["GET /crm/customers/**"] }' } })
  const raw = new Redis(redis.url)
  t.teardown(() => raw.disconnect())
  const acme = async () => ({ bearer: await p.w.acme.assertion() })
  const first = await api(p.a.controlUrl, 'POST', '/v1/requests', await acme(), ASK)
  t.match(first.json, { status: 'approved', decided_by: 'auto-approval', token: /^eyJ/ })
  const grantId = first.json.grant.id as string
  const ext = await api(p.b.controlUrl, 'POST', `/v1/requests/${first.json.id}/extend`, await acme(), { duration: '1h', reason: 'more' })
  t.match(ext, { status: 201, json: { kind: 'extension', status: 'approved', grant: { status: 'active' } } })

  const record = JSON.parse((await raw.get(`${p.keyPrefix}{${grantId}}:grant`)) as string) as { nonces?: { issue?: string; extend?: string } }
  t.match(record.nonces, { issue: /^[\w-]{16}$/, extend: /^[\w-]{16}$/ }, 'the record names its create and its extension')
  const secrets = [record.nonces?.issue as string, record.nonces?.extend as string, 'nonce']
  const read = await api(p.b.controlUrl, 'GET', `/v1/requests/${first.json.id}`, await acme())
  const answers = [
    first.json,
    ext.json,
    read.json,
    (await call(`${p.a.controlUrl}/v1/grants/${grantId}`, { token: ADMIN_TOKEN })).json,
    (await call(`${p.b.controlUrl}/v1/grants`, { token: ADMIN_TOKEN })).json,
  ]
  t.equal(await p.a.revoke(grantId, 'done'), 204)
  const tombstone = JSON.parse((await raw.get(`${p.keyPrefix}{${grantId}}:revoked`)) as string) as { grantNonces?: unknown }
  t.same(tombstone.grantNonces, record.nonces, 'the tombstone keeps them')
  answers.push((await call(`${p.b.controlUrl}/v1/grants/${grantId}`, { token: ADMIN_TOKEN })).json)
  t.match(answers.at(-1), { id: grantId, status: 'revoked' })
  for (const [i, answer] of answers.entries()) {
    t.same(secrets.filter((s) => JSON.stringify(answer).includes(s)), [], `API answer ${i}: no nonce`)
  }
  const audit = p.a.auditText() + p.b.auditText()
  t.ok(audit.includes(grantId), 'the grant is in the audit trail')
  t.same(secrets.filter((s) => audit.includes(s)), [], 'the audit trail: no nonce')
  // Tokens carry the standard claims only, as before the nonces.
  for (const token of [first.json.token as string, read.json.token as string]) {
    t.same(Object.keys(decodeJwt(token)).sort(), ['aud', 'exp', 'iat', 'iss', 'jti', 'nbf', 'sub'])
  }
  auditValid(t, p)
})

t.test('TOTP lockout is shared: 5 wrong codes spread over two replicas lock the approver on both', async (t) => {
  const p = await replicas(t)
  const id = (await api(p.a.controlUrl, 'POST', '/v1/requests', { bearer: await p.w.acme.assertion() }, ASK)).json.id as string
  const right = p.w.bob.code()
  const wrong = String((Number(right) + 500_000) % 1_000_000).padStart(6, '0')
  for (const [i, g] of [p.a, p.b, p.a, p.b, p.b].entries()) {
    t.match(await api(g.controlUrl, 'POST', `/v1/requests/${id}/approve`, { approver: p.w.bob, totp: wrong }), { status: 403, json: { error: { code: 'mfa_invalid' } } }, `wrong code ${i + 1}`)
  }
  for (const g of [p.a, p.b]) {
    t.match(await api(g.controlUrl, 'POST', `/v1/requests/${id}/approve`, { approver: p.w.bob, totp: right }), { status: 429, json: { error: { code: 'mfa_locked' } } }, 'locked, even with the right code')
  }
  t.match(await api(p.b.controlUrl, 'POST', `/v1/requests/${id}/approve`, { approver: p.w.alice }), { status: 200 }, 'another approver is not affected')
  t.equal(p.events('admin.denied').filter((e) => e.code === 'mfa_locked' && e.actor === 'approver:bob').length, 2)
  auditValid(t, p)
})

t.test('TOTP check fails closed while Redis is unreachable: store_unavailable, nothing counted as passed', async (t) => {
  const own = await startRedis(t)
  const p = await replicas(t, { redisUrl: own.url })
  const id = (await api(p.a.controlUrl, 'POST', '/v1/requests', { bearer: await p.w.acme.assertion() }, ASK)).json.id as string
  await own.stop()
  t.match(await api(p.a.controlUrl, 'POST', `/v1/requests/${id}/approve`, { approver: p.w.alice }), { status: 503, json: { error: { code: 'store_unavailable' } } })
})

t.test('an approver revokes through DELETE /v1/grants/{id} on one replica; the other refuses the grant at once', async (t) => {
  const upstream = await startUpstream(t)
  const p = await replicas(t, { upstream: upstream.url })
  const id = (await api(p.a.controlUrl, 'POST', '/v1/requests', { bearer: await p.w.acme.assertion() }, ASK)).json.id as string
  await api(p.a.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await p.w.idToken('bob') })
  await api(p.a.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await p.w.idToken('00u-carol') })
  const mine = (await api(p.a.controlUrl, 'GET', `/v1/requests/${id}`, { bearer: await p.w.acme.assertion() })).json
  t.equal((await call(`${p.a.dataUrl}/crm/customers/1`, { token: mine.token })).status, 200)
  const res = await fetch(`${p.b.controlUrl}/v1/grants/${mine.grant.id}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${await p.w.idToken('00u-dave')}`, 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'incident closed' }),
  })
  t.equal(res.status, 204)
  t.match(await call(`${p.a.dataUrl}/crm/customers/1`, { token: mine.token }), { status: 403, json: { error: { code: 'grant_revoked' } } })
  t.match(p.events('grant.revoked'), [{ grant_id: mine.grant.id, actor: '00u-dave', reason: 'incident closed' }])
  auditValid(t, p)
})

t.test('claim-by window: first uses racing on two replicas claim the grant once; both agree on its expiry', async (t) => {
  const upstream = await startUpstream(t)
  const p = await replicas(t, { upstream: upstream.url, principals: { entitlement: '        claim_within: 1h' } })
  for (let round = 0; round < 3; round++) {
    const id = (await api(p.a.controlUrl, 'POST', '/v1/requests', { bearer: await p.w.acme.assertion() }, ASK)).json.id as string
    await api(p.a.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await p.w.idToken('bob') })
    await api(p.b.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await p.w.idToken('00u-carol') })
    const mine = (await api(p.b.controlUrl, 'GET', `/v1/requests/${id}`, { bearer: await p.w.acme.assertion() })).json
    t.match(mine.grant, { status: 'active', claim: { status: 'unclaimed' } })
    const statuses = await Promise.all([p.a, p.b, p.a, p.b].map(async (g) => (await call(`${g.dataUrl}/crm/customers/1`, { token: mine.token })).status))
    t.same(statuses, [200, 200, 200, 200], `round ${round}: every first use passes`)
    const claimed = p.events('grant.claimed').filter((e) => e.grant_id === mine.grant.id)
    t.equal(claimed.length, 1, `round ${round}: claimed once across both replicas`)
    const [fromA, fromB] = await Promise.all(
      [p.a, p.b].map(async (g) => (await api(g.controlUrl, 'GET', `/v1/requests/${id}`, { admin: true })).json.grant),
    )
    t.match(fromA, { expires_at: claimed[0]?.expires_at, claim: { status: 'claimed', claimed_at: claimed[0]?.claimed_at } })
    t.same(fromB, fromA, 'both replicas see the one claimed grant')
  }
  auditValid(t, p)
})

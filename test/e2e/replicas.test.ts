/**
 * Real deployment shape: two `jitgate serve` processes on one private Redis, sharing a signing
 * key. Revocation through one is enforced by the other at once (HTTP and open WebSockets);
 * Redis stopped or frozen mid-test fails closed fast and recovers; SIGTERM drains and flushes.
 */
import t from 'tap'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from '../helpers/tmp.js'
import WebSocket from 'ws'
import { request } from 'undici'
import { connect } from 'node:net'
import { startRedis } from '../helpers/redis-server.js'
import { startUpstream } from '../helpers/upstream.js'
import { startGatewayProcess, type GatewayProcess } from '../helpers/process.js'
import { call, sleep } from '../helpers/gateway.js'
import { generateSigningKey } from '../../src/authn/keys.js'

const ADMIN = 'replica-admin-token-0123456789'

async function issue(gw: GatewayProcess, body: object): Promise<{ id: string; token: string }> {
  const res = await request(`${gw.controlUrl}/v1/grants`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  })
  const json = (await res.body.json()) as { id: string; token: string }
  if (res.statusCode !== 201) throw new Error(`issue: ${res.statusCode} ${JSON.stringify(json)}`)
  return json
}

async function revoke(gw: GatewayProcess, id: string): Promise<number> {
  const res = await request(`${gw.controlUrl}/v1/grants/${id}?reason=incident`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN}` } })
  await res.body.dump()
  return res.statusCode
}

function auditOf(gw: GatewayProcess): Record<string, unknown>[] {
  return gw
    .stdout()
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

t.test('two gateway processes on one Redis', async (t) => {
  const redis = await startRedis(t)
  const upstream = await startUpstream(t)
  const dir = tempDir(t, 'replicas')
  mkdirSync(join(dir, 'policies'))
  writeFileSync(
    join(dir, 'policies', 'p.yaml'),
    `resources:\n  - id: api\n    upstream: ${upstream.url}\n    match: { path_prefix: /api }\n    max_ttl: 1h\n    websocket: true\n`,
  )
  const key = await generateSigningKey()
  writeFileSync(join(dir, 'key.json'), JSON.stringify(key.privateJwk), { mode: 0o600 })
  const env = {
    REDIS_URL: redis.url,
    JITGATE_ADMIN_TOKEN: ADMIN,
    JITGATE_POLICY_DIR: join(dir, 'policies'),
    JITGATE_SIGNING_KEY_FILE: join(dir, 'key.json'),
    JITGATE_DATA_DIR: join(dir, 'data'),
    JITGATE_LOG_LEVEL: 'info',
  }
  const [a, b] = await Promise.all([
    startGatewayProcess(t, { ...env, JITGATE_GATEWAY_ID: 'gw-a' }),
    startGatewayProcess(t, { ...env, JITGATE_GATEWAY_ID: 'gw-b' }),
  ])

  await t.test('a grant issued through one replica works through the other; revoke through one, the other denies at once', async (t) => {
    const grant = await issue(a, { subject: 'acme', resource: 'api', scopes: ['* /api/**'], ttl: '10m' })
    t.equal((await call(`${b.dataUrl}/api/x`, { token: grant.token })).status, 200)
    t.equal(await revoke(a, grant.id), 204)
    const res = await call(`${b.dataUrl}/api/x`, { token: grant.token })
    t.equal(res.status, 403)
    t.equal(res.json.error.code, 'grant_revoked')
  })

  await t.test('an open WebSocket on one replica is closed by a revocation through the other', async (t) => {
    const grant = await issue(a, { subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })
    const ws = new WebSocket(`${b.dataUrl.replace('http', 'ws')}/api/stream`, { headers: { authorization: `Bearer ${grant.token}` } })
    const closed = new Promise<[number, string]>((resolve) => ws.on('close', (code, reason) => resolve([code, reason.toString()])))
    await new Promise((resolve, reject) => {
      ws.on('open', resolve)
      ws.on('error', reject)
    })
    t.equal(await revoke(a, grant.id), 204)
    t.same(await closed, [1008, 'grant revoked'])
  })

  await t.test('a request in flight on one replica is cut by a revocation through the other', async (t) => {
    const grant = await issue(a, { subject: 'acme', resource: 'api', scopes: ['PUT /api/**'], ttl: '10m' })
    // An upload that is still coming: the upstream waits for its end, so it stays in flight on B.
    const u = new URL(b.dataUrl)
    let text = ''
    const socket = connect(Number(u.port), u.hostname, () => socket.write(`PUT /api/upload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${grant.token}\r\nContent-Length: 1000\r\n\r\npart`))
    socket.setEncoding('latin1')
    socket.on('data', (d: string) => (text += d))
    socket.on('error', () => {})
    t.teardown(() => socket.destroy())
    const ended = new Promise<void>((resolve) => socket.on('close', () => resolve()))
    await sleep(300)
    t.equal(await revoke(a, grant.id), 204)
    await ended
    t.match(text, /^HTTP\/1\.1 403 [^]*"code":"grant_revoked"/, 'answered grant_revoked by the other replica')
    await sleep(100)
    t.match(auditOf(b).find((e) => e.event === 'access.allowed' && e.grant_id === grant.id), { code: 'grant_revoked', detail: 'grant revoked while the request was in flight' })
  })

  await t.test('Redis frozen (SIGSTOP): fail closed fast, nothing forwarded; recovers when it resumes', async (t) => {
    const grant = await issue(a, { subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })
    t.equal((await call(`${b.dataUrl}/api/x`, { token: grant.token })).status, 200)
    const before = upstream.received.length
    redis.pause()
    try {
      const started = Date.now()
      const res = await call(`${b.dataUrl}/api/x`, { token: grant.token })
      const took = Date.now() - started
      t.equal(res.status, 503)
      t.equal(res.json.error.code, 'store_unavailable')
      t.equal(res.headers['retry-after'], '1')
      t.ok(took < 2000, `answered in ${took} ms (store timeout 250 ms): no hang`)
      t.equal(upstream.received.length, before, 'nothing forwarded')
      const ready = await call(`${b.controlUrl}/readyz`)
      t.equal(ready.status, 503)
      t.equal(ready.json.store.reachable, false)
    } finally {
      redis.resume()
    }
    await sleep(200)
    t.equal((await call(`${b.dataUrl}/api/x`, { token: grant.token })).status, 200, 'same grant works again')
  })

  await t.test('Redis stopped: 503 fast on both replicas; after restart the gateways recover', async (t) => {
    const grant = await issue(a, { subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })
    await redis.stop()
    for (const gw of [a, b]) {
      const started = Date.now()
      const res = await call(`${gw.dataUrl}/api/x`, { token: grant.token })
      t.equal(res.json?.error?.code, 'store_unavailable')
      t.ok(Date.now() - started < 2000, 'no hang')
    }
    const issueDown = await request(`${a.controlUrl}/v1/grants`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '1m' }),
    })
    t.equal(issueDown.statusCode, 503, 'issuing fails closed too')
    await issueDown.body.dump()
    await redis.start()
    // The private Redis keeps nothing on disk: the old grant is gone, which denies (never allows).
    // Each replica reconnects on its own schedule (at most a second apart): wait for both.
    for (const gw of [a, b]) {
      let ready = 0
      for (let i = 0; i < 50 && ready !== 200; i++) {
        ready = (await call(`${gw.controlUrl}/readyz`)).status
        if (ready !== 200) await sleep(100)
      }
      t.equal(ready, 200, 'ready again')
    }
    t.equal((await call(`${b.dataUrl}/api/x`, { token: grant.token })).json?.error?.code, 'grant_not_found')
    const fresh = await issue(a, { subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })
    t.equal((await call(`${b.dataUrl}/api/x`, { token: fresh.token })).status, 200)
    const metrics = await call(`${b.controlUrl}/metrics`)
    t.match(metrics.text, /jitgate_grant_store_errors_total\{operation="get"\} [1-9]/)
  })

  await t.test('SIGTERM: exits 0 and the audit trail is complete and flushed', async (t) => {
    const grant = await issue(a, { subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' })
    for (let i = 0; i < 20; i++) await call(`${a.dataUrl}/api/n${i}`, { token: grant.token })
    t.equal(await a.stop(), 0)
    const events = auditOf(a)
    t.match(events.slice(-2), [{ event: 'gateway.stopped' }, { event: 'audit.checkpoint', final: true }], 'stopped, then the final signed checkpoint')
    t.equal(events.filter((e) => e.event === 'access.allowed' && String(e.path).startsWith('/api/n')).length, 20)
    t.ok(events.every((e) => e.gateway_id === 'gw-a'))
    t.notOk(a.stdout().includes(grant.token) || a.stderr().includes(grant.token), 'no token in any output')
    t.equal(await b.stop(), 0)
  })
})

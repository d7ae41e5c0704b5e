/** The control-plane API over real HTTP: authentication, validation errors, listing, JWKS, health. */
import t from 'tap'
import { createServer } from 'node:http'
import { connect as netConnect, type AddressInfo } from 'node:net'
import { PassThrough } from 'node:stream'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { loadConfig } from '../../src/config/config.js'
import { startGateway } from '../../src/gateway.js'
import { request } from 'undici'
import { createLocalJWKSet, jwtVerify } from 'jose'
import { startTestGateway, call, rawCall, ADMIN_TOKEN } from '../helpers/gateway.js'

const POLICY = `
resources:
  - id: crm-api
    upstream: http://127.0.0.1:9
    match: { path_prefix: /crm }
    max_ttl: 1h
`

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await request(url, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
  return { status: res.statusCode, json: (await res.body.json()) as any }
}

t.test('operator authentication', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  for (const authorization of [undefined, 'Bearer wrong-token-0123456789', `Basic ${ADMIN_TOKEN}`, `Bearer ${ADMIN_TOKEN}x`]) {
    const res = await call(`${g.controlUrl}/v1/grants`, { headers: authorization ? { authorization } : {} })
    t.equal(res.status, 401, `${authorization ?? 'no header'} refused`)
    t.equal(res.json.error.code, 'unauthorized')
    t.equal(res.headers['www-authenticate'], 'Bearer realm="jitgate-admin"')
  }
  t.match(g.audit.at(-1), { event: 'admin.denied', code: 'unauthorized', path: '/v1/grants' })
  t.notOk(g.auditText().includes('wrong-token'), 'presented credentials are never logged')
  t.equal((await call(`${g.controlUrl}/healthz`)).status, 200, 'health needs no token')
})

t.test('issuing: every validation problem is reported, coded', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  const url = `${g.controlUrl}/v1/grants`
  const bad = await post(url, { subject: 'Not An Id', resource: 'crm-api', scopes: [], ttl: 'soon', extra: 1 })
  t.equal(bad.status, 400)
  t.equal(bad.json.error.code, 'invalid_request')
  t.same(bad.json.error.details, [
    'extra: unknown field',
    'subject: expected a sub-processor id (lowercase letters, digits, ".", "_", "-")',
    'scopes: expected 1 to 64 scope strings such as "GET /crm/customers/**"',
    'ttl: expected a duration with a unit, such as "15m", "2h" or "1h30m" (at least 1s)',
  ])
  t.match(await post(url, '{not json'), { status: 400, json: { error: { code: 'invalid_request', details: ['body: not valid JSON'] } } })
  // One body, two meanings (JSON.parse keeps the last key, other parsers the first): refused.
  t.match(await post(url, '{"subject":"acme","resource":"crm-api","scopes":["GET /crm/**"],"ttl":"1m","subject":"globex"}'), {
    status: 400,
    json: { error: { code: 'invalid_request', details: ['body: the key "subject" occurs twice in one object'] } },
  })
  t.match(await post(url, '[]'), { status: 400, json: { error: { details: ['body: expected a JSON object'] } } })
  t.match(await post(url, 'x'.repeat(70_000)), { status: 413, json: { error: { code: 'payload_too_large' } } })
  t.match(await post(url, '{}', { 'content-type': 'text/plain' }), { status: 415, json: { error: { code: 'unsupported_media_type' } } })
  const base = { subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m' }
  t.match(await post(url, { ...base, resource: 'nope' }), { status: 422, json: { error: { code: 'unknown_resource' } } })
  t.match(await post(url, { ...base, ttl: '2h' }), { status: 422, json: { error: { code: 'ttl_exceeds_max', details: ['ttl 2h > max_ttl 1h'] } } })
  const scope = await post(url, { ...base, scopes: ['GET /crm/*.json', 'FETCH', 'GET /billing/**'] })
  t.equal(scope.status, 422)
  t.equal(scope.json.error.code, 'invalid_scope')
  t.equal(scope.json.error.details.length, 3)
  t.match(scope.json.error.details[2], /outside the resource's prefix \/crm/)
  t.equal((await call(`${g.controlUrl}/v1/grants`, { method: 'PUT', token: ADMIN_TOKEN })).status, 405)
  t.equal((await call(`${g.controlUrl}/v1/nothing`, { token: ADMIN_TOKEN })).status, 404)
  t.notOk(g.audit.some((e) => e.event === 'grant.issued'), 'nothing issued')
})

t.test('list and get never return tokens; a revocation needs a reason', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  const a = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m' })
  const b = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '5m' })
  const list = await call(`${g.controlUrl}/v1/grants`, { token: ADMIN_TOKEN })
  t.same(list.json.grants.map((x: { id: string }) => x.id), [b.id, a.id], 'soonest expiry first')
  t.notOk(list.text.includes(a.token) || list.text.includes('"token"'))
  const one = await call(`${g.controlUrl}/v1/grants/${a.id}`, { token: ADMIN_TOKEN })
  t.match(one.json, { id: a.id, subject: 'acme', resource: 'crm-api', status: 'active', issued_by: 'operator' })
  t.equal(one.json.token, undefined)
  t.notOk('access_request_id' in one.json, 'an operator-issued grant names no access request')
  const noReason = await request(`${g.controlUrl}/v1/grants/${a.id}`, { method: 'DELETE', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(noReason.statusCode, 400)
  await noReason.body.dump()
  // The exact input of a finding: a misspelt field was ignored (and the ?reason= taken instead).
  const misspelt = await call(`${g.controlUrl}/v1/grants/${a.id}?reason=x`, { token: ADMIN_TOKEN, method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reson: 'typo' }) })
  t.match(misspelt, { status: 400, json: { error: { code: 'invalid_request', details: ['reson: unknown field'] } } })
  t.match((await call(`${g.controlUrl}/v1/grants/${a.id}`, { token: ADMIN_TOKEN })).json, { status: 'active' }, 'nothing was revoked')
  t.equal(await g.revoke(a.id, 'done'), 204)
  const after = await call(`${g.controlUrl}/v1/grants/${a.id}`, { token: ADMIN_TOKEN })
  t.match(after.json, { id: a.id, status: 'revoked', revoked_by: 'operator', reason: 'done' })
  t.equal(await g.revoke(a.id, 'again'), 409, 'revoking twice: grant_already_revoked')
  const twice = await call(`${g.controlUrl}/v1/grants/${a.id}`, { token: ADMIN_TOKEN, method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'again' }) })
  t.match(twice.json, { error: { code: 'grant_already_revoked', details: [/^revoked by operator at \S+: done$/] } })
  t.equal((await call(`${g.controlUrl}/v1/grants/g_unknown00000000000`, { token: ADMIN_TOKEN, method: 'DELETE', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reason: 'x' }) })).status, 404)
  t.equal((await call(`${g.controlUrl}/v1/grants/g_unknown00000000000`, { token: ADMIN_TOKEN })).status, 404)
  t.equal((await call(`${g.controlUrl}/v1/grants/..%2f..%2fetc`, { token: ADMIN_TOKEN })).status, 404)
  // The exact inputs of a finding: a malformed escape was a 500 with no audit event, and a
  // fragment reached the audited path.
  const bad = await rawCall(g.controlUrl, '/v1/grants/%E0%A4%A')
  t.match(bad, { status: 404, json: { error: { code: 'grant_not_found' } } })
  t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.path === '/v1/grants/%E0%A4%A' && e.code === 'grant_not_found'), 'audited')
  const fragment = await rawCall(g.controlUrl, '/nope#access=opaque-secret-123', { token: ADMIN_TOKEN })
  t.equal(fragment.status, 404)
  t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.path === '/nope'), 'the fragment is not audited')
  t.notOk(g.auditText().includes('opaque-secret-123'))
})

t.test('JWKS verifies the issued tokens; readyz shows the policy version', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  const grant = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m' })
  const jwks = await call(`${g.controlUrl}/.well-known/jwks.json`)
  t.equal(jwks.json.keys.length, 1)
  t.equal(jwks.json.keys[0].d, undefined, 'no private part')
  const { payload, protectedHeader } = await jwtVerify(grant.token, createLocalJWKSet(jwks.json), { issuer: 'jitgate', audience: 'crm-api' })
  t.match(protectedHeader, { alg: 'EdDSA', typ: 'jit+jwt', kid: jwks.json.keys[0].kid })
  t.match(payload, { sub: 'acme', jti: grant.id })
  t.equal(payload.exp, Date.parse(grant.expires_at) / 1000, 'token exp = grant expiry')
  const ready = await call(`${g.controlUrl}/readyz`)
  t.match(ready, { status: 200, json: { ready: true, store: { kind: 'memory', reachable: true }, policy_version: g.gw.policy().version } })
  const metrics = await call(`${g.controlUrl}/metrics`)
  t.match(metrics.text, /jitgate_active_grants 1/)
  t.match(metrics.text, /jitgate_grants_issued_total 1/)
})

t.test('a ttl without a unit is refused with duration_unit_required, never read as seconds', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  const url = `${g.controlUrl}/v1/grants`
  const base = { subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/**'] }
  for (const ttl of [60, '60', 1.5, ' 90 ']) {
    const res = await post(url, { ...base, ttl })
    t.equal(res.status, 400, `ttl ${JSON.stringify(ttl)}`)
    t.equal(res.json.error.code, 'duration_unit_required')
    t.same(res.json.error.details, [`ttl: ${typeof ttl === 'string' ? JSON.stringify(ttl) : ttl} has no unit: give one, e.g. 60s, 15m or 1h (a bare number is ambiguous)`])
    t.match(res.json.error.message, /needs a unit/)
  }
  const both = await post(url, { ...base, scopes: [], ttl: 60 })
  t.equal(both.json.error.code, 'duration_unit_required', 'the code names what must change in any case')
  t.same(both.json.error.details, ['scopes: expected 1 to 64 scope strings such as "GET /crm/customers/**"', 'ttl: 60 has no unit: give one, e.g. 60s, 15m or 1h (a bare number is ambiguous)'], 'every problem listed')
  t.equal((await post(url, { ...base, ttl: '60s' })).status, 201, 'with a unit it works')
  t.equal(g.audit.filter((e) => e.event === 'grant.issued').length, 1, 'nothing issued for a bare number')
  t.match(g.audit.filter((e) => e.event === 'admin.denied').map((e) => e.code), ['duration_unit_required'], 'refusals audited with the code')
})

t.test('without an admin token the API refuses a non-loopback listener', async (t) => {
  await t.rejects(
    startTestGateway(t, { policy: POLICY, adminToken: '', env: { JITGATE_ADMIN_TOKEN: '', JITGATE_CONTROL_LISTEN: '0.0.0.0:0' } }),
    { name: 'StartupError', message: /no admin token is configured/ },
  )
  const g = await startTestGateway(t, { policy: POLICY, env: { JITGATE_ADMIN_TOKEN: '' } })
  const res = await post(`${g.controlUrl}/v1/grants`, { subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '60s' }, { authorization: '' })
  t.equal(res.status, 201, 'open on loopback')
  t.match(g.audit.find((e) => e.event === 'grant.issued'), { actor: 'local-operator' })
  // A caller that presents another principal's credential (the exact input of a finding: a
  // vendor's signed assertion) is not the anonymous local operator, and cannot issue itself a grant.
  const vendorLike = 'eyJhbGciOiJFZERTQSJ9.eyJpc3MiOiJhY21lIiwic3ViIjoiYWNtZSJ9.c2ln'
  const refused = await post(`${g.controlUrl}/v1/grants`, { subject: 'acme', resource: 'crm-api', scopes: ['* /crm/**'], ttl: '1h' }, { authorization: `Bearer ${vendorLike}` })
  t.equal(refused.status, 401)
  t.equal(refused.json.error.code, 'unauthorized')
  t.equal((await call(`${g.controlUrl}/v1/grants`, { headers: { authorization: `Bearer ${vendorLike}` } })).status, 401, 'nor list grants')
  // The exact input of a finding: an empty Authorization line first hid the credential behind it.
  const hidden = await post(`${g.controlUrl}/v1/grants`, { subject: 'acme', resource: 'crm-api', scopes: ['* /crm/**'], ttl: '1h' }, { authorization: ['', `Bearer ${vendorLike}`] as never })
  t.equal(hidden.status, 401, 'a second Authorization line counts as a credential')
  t.equal(g.audit.filter((e) => e.event === 'grant.issued').length, 1)
})

t.test('a caller that leaves while sending its body is no gateway fault', async (t) => {
  // The exact input of a finding: an aborted POST body logged an error-level stack trace.
  const lines: { level: number; msg: string }[] = []
  const sink = new PassThrough()
  sink.on('data', (c: Buffer) => lines.push(...c.toString().trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string })))
  const g = await startTestGateway(t, { policy: POLICY, log: pino({ level: 'debug' }, sink) })
  const u = new URL(g.controlUrl)
  const socket = netConnect(Number(u.port), u.hostname, () => {
    socket.write(`POST /v1/grants HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nAuthorization: Bearer ${ADMIN_TOKEN}\r\n\r\n{"subject":`)
    setTimeout(() => socket.destroy(), 100)
  })
  socket.on('error', () => {})
  await new Promise((resolve) => setTimeout(resolve, 400))
  t.notOk(lines.some((l) => l.level >= 50), 'no error-level line')
  t.ok(lines.some((l) => l.msg === 'control-plane caller left before its body was read'), 'a debug line says what happened')
  t.equal((await call(`${g.controlUrl}/healthz`)).status, 200)
})

t.test('a start that fails (port in use) leaves nothing in the audit trail', async (t) => {
  // The exact input of a finding: EADDRINUSE left a lone, final audit.checkpoint on stdout.
  const busy = createServer()
  await new Promise<void>((resolve) => busy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => busy.close(() => resolve())))
  const port = (busy.address() as AddressInfo).port
  const out = new PassThrough()
  let text = ''
  out.on('data', (c: Buffer) => (text += c.toString()))
  const root = mkdtempSync(join(tmpdir(), 'jitgate-busy-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  mkdirSync(join(root, 'policies'))
  writeFileSync(join(root, 'policies', 'p.yaml'), POLICY.replaceAll('UPSTREAM', 'http://127.0.0.1:9'))
  const env = { JITGATE_DATA_LISTEN: `127.0.0.1:${port}`, JITGATE_CONTROL_LISTEN: '127.0.0.1:0', JITGATE_POLICY_DIR: join(root, 'policies'), JITGATE_DATA_DIR: join(root, 'data'), JITGATE_ADMIN_TOKEN: ADMIN_TOKEN }
  await t.rejects(startGateway({ config: loadConfig({ text: '{}', env, baseDir: root }), auditStream: out, log: pino({ level: 'silent' }), env }), /EADDRINUSE|in use/)
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(text, '', 'no audit line')
})

t.test('without an admin token, only loopback Host names are answered (DNS rebinding)', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY, env: { JITGATE_ADMIN_TOKEN: '' } })
  const port = new URL(g.controlUrl).port
  const asHost = (host: string) => request(`${g.controlUrl}/v1/grants`, { headers: { host } }).then(async (r) => ({ status: r.statusCode, json: (await r.body.json()) as any }))
  for (const host of ['rebind.attacker.example', `rebind.attacker.example:${port}`, 'localhost.attacker.example', '127.0.0.1.nip.io', '127.1', '0.0.0.0', '10.0.0.1']) {
    const res = await asHost(host)
    t.match(res, { status: 403, json: { error: { code: 'host_not_allowed' } } }, host)
  }
  for (const host of ['localhost', `localhost:${port}`, `127.0.0.1:${port}`, '127.8.9.10', `[::1]:${port}`, 'console.localhost']) {
    t.equal((await asHost(host)).status, 200, host)
  }
  t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.code === 'host_not_allowed'), 'the refusal is audited')

  const withToken = await startTestGateway(t, { policy: POLICY })
  const res = await request(`${withToken.controlUrl}/v1/grants`, { headers: { host: 'gateway.internal.example', authorization: `Bearer ${ADMIN_TOKEN}` } })
  await res.body.dump()
  t.equal(res.statusCode, 200, 'with an operator token any Host is fine: the token is the guard')
})

t.test('gateway.started records the addresses actually bound', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY, env: { JITGATE_DATA_LISTEN: '0.0.0.0:0' } })
  const port = new URL(g.dataUrl).port
  t.equal(new URL(g.dataUrl).hostname, '127.0.0.1', 'the URL to reach it is loopback')
  t.match(g.audit.find((e) => e.event === 'gateway.started'), { listen: { data: `0.0.0.0:${port}`, control: new URL(g.controlUrl).host } })
})

/**
 * A real gateway (real upstream, real tokens, real HTTP and WebSocket clients) taken through every
 * kind of event it emits: every line it writes validates against the published schema, every
 * event type the catalogue says it emits shows up, and client-controlled values (paths, header
 * values, reasons) stay inert inside their field.
 */
import t from 'tap'
import { connect } from 'node:net'
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import WebSocket from 'ws'
import { startUpstream } from '../helpers/upstream.js'
import { startTestGateway, call, rawCall, type TestGateway } from '../helpers/gateway.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { EVENTS, type AuditEventName, type Emitter } from '../../src/audit/catalogue.js'
import { MAX_FIELD_LENGTH, TRUNCATION_MARK } from '../../src/audit/line.js'

const POLICY = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 1h
  - id: live
    upstream: UPSTREAM
    match: { path_prefix: /live }
    max_ttl: 1h
    websocket: true
  - id: dead
    upstream: http://127.0.0.1:9
    match: { path_prefix: /dead }
    max_ttl: 1h
`

/** Sends bytes as they are (header values with obs-text, paths no client library would send). */
function rawRequest(base: string, head: Buffer): Promise<string> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    const socket = connect(Number(u.port), u.hostname, () => socket.write(head))
    let text = ''
    socket.on('data', (c: Buffer) => (text += c.toString('latin1')))
    socket.on('error', reject)
    socket.on('close', () => resolve(text.split('\r\n')[0] ?? ''))
  })
}

async function wsOpen(g: TestGateway, path: string, token: string): Promise<WebSocket> {
  const ws = new WebSocket(`${g.dataUrl.replace('http', 'ws')}${path}`, { headers: { authorization: `Bearer ${token}` } })
  await new Promise((resolve, reject) => {
    ws.on('open', resolve)
    ws.on('error', reject)
  })
  return ws
}

t.test('every event a real gateway writes validates against the published schema', async (t) => {
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url, config: 'store: { expiry_sweep_interval: 100ms }' })
  const brief = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/customers/**'], ttl: '1s' })
  const crm = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/customers/**'], ttl: '10m', reason: 'SUP-1' })
  const dead = await g.issue({ resource: 'dead', scopes: ['GET /dead/**'], ttl: '10m' })
  const live = await g.issue({ resource: 'live', scopes: ['GET /live/**'], ttl: '10m' })
  const revoked = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m' })
  t.equal(await g.revoke(revoked.id, 'contract ended'), 204)

  t.equal((await call(`${g.dataUrl}/crm/customers/1`, { token: crm.token })).status, 200)
  t.equal((await call(`${g.dataUrl}/dead/x`, { token: dead.token })).status, 502)
  const denials: [string, number, string?, Record<string, string>?][] = [
    ['/nowhere', 404, crm.token],
    ['/crm/a%2fb', 400, crm.token],
    ['/crm/customers/1', 401],
    ['/crm/customers/1', 401, 'not-a-jws'],
    ['/crm/customers/1', 401, `${crm.token.slice(0, -4)}AAAA`],
    ['/crm/customers/1', 403, revoked.token],
    ['/crm/admin', 403, crm.token],
  ]
  for (const [path, status, token, headers] of denials) {
    t.equal((await rawCall(g.dataUrl, path, { ...(token ? { token } : {}), ...(headers ? { headers } : {}) })).status, status, path)
  }
  t.match(await rawRequest(g.dataUrl, Buffer.from('GET /crm/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n')), / 400 /)

  const ws = await wsOpen(g, '/live/feed', live.token)
  const closed = new Promise((resolve) => ws.on('close', resolve))
  ws.close()
  await closed

  t.equal((await call(`${g.controlUrl}/v1/grants`, { headers: { authorization: 'Bearer wrong-token-0123456789' } })).status, 401)
  writeFileSync(join(dirname(g.dataDir), 'policies', 'broken.yaml'), 'resources: [{ id: Bad }]\n')
  t.equal((await g.gw.reloadPolicy()).result, 'rejected')
  await g.waitForEvent((e) => e.event === 'grant.expired' && e.grant_id === brief.id)
  await g.stop()

  const validate = auditValidator()
  const seen = new Set<string>()
  for (const e of g.audit) {
    seen.add(e.event)
    t.same(validate(e), [], `${e.event} valid`)
  }
  t.equal(g.auditText().split('\n').length - 1, g.audit.length, 'one line per event')
  for (const [name, spec] of Object.entries(EVENTS) as [AuditEventName, (typeof EVENTS)[AuditEventName]][]) {
    // The workflow's events are exercised by the workflow's tests, audit.dropped by sinks.test.ts,
    // grant.claimed (an approved grant's first use) by e2e/claim-window.test.ts.
    const emitter = spec.emitter as Emitter
    const elsewhere = name === 'audit.dropped' || name === 'grant.claimed'
    if (emitter !== 'pending' && emitter !== 'workflow' && !elsewhere) t.ok(seen.has(name), `${name} emitted in the scenario`)
  }
  t.match(g.audit.slice(-2), [{ event: 'gateway.stopped' }, { event: 'audit.checkpoint', final: true }], 'stopped, then the final checkpoint')
})

t.test('client-controlled values cannot break a line or forge an event', async (t) => {
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url })
  const forged = '{"event":"grant.issued","grant_id":"g_forged"}'
  const reason = `stop\r\n${forged}\u2028\u2029\u0085\u001b[31m"quoted" \\ end`
  const grant = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m', reason })

  const paths = [
    `/crm/x%0d%0a${forged}`,
    `/crm/"quoted"/{"a":1}/%2f`,
    `/crm/%E2%80%A8/%0A/%00`,
    `/crm/${'a'.repeat(MAX_FIELD_LENGTH * 2)}`,
    `/crm/%2f?access_token=${grant.token}`,
  ]
  for (const p of paths) await rawCall(g.dataUrl, p, { token: grant.token })
  // Header values reach events through details: obs-text bytes arrive as Latin-1, so U+2028's
  // UTF-8 bytes include the C1 control U+0080, and 0x85 is NEL (a line break to some readers).
  const upgrade = Buffer.concat([Buffer.from(`h2c"},${forged},{"x":"`), Buffer.from([0x85, 0xe2, 0x80, 0xa8])])
  await rawRequest(
    g.dataUrl,
    Buffer.concat([Buffer.from('GET /crm/x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: '), upgrade, Buffer.from('\r\n\r\n')]),
  )
  t.equal(await g.revoke(grant.id, reason), 204)
  await g.stop()

  const text = g.auditText()
  const lines = text.split('\n').slice(0, -1)
  t.equal(lines.length, g.audit.length, 'every line is exactly one event')
  for (const line of lines) t.doesNotThrow(() => JSON.parse(line))
  t.notMatch(text, /[\r\u2028\u2029\u0085\u0080\u001b\u007f]/, 'no raw line breaks or controls anywhere in the output')
  t.equal(g.audit.filter((e) => e.event === 'grant.issued').length, 1, 'the only grant.issued is the real one')
  t.notOk(g.audit.some((e) => e.grant_id === 'g_forged'), 'no forged grant id became a field')
  t.notOk(text.includes(grant.token), 'the token in the query string is never written')

  t.equal(g.audit.find((e) => e.event === 'grant.issued')?.reason, reason, 'reason round-trips exactly')
  t.equal(g.audit.find((e) => e.event === 'grant.revoked')?.reason, reason)
  const denied = g.audit.filter((e) => e.event === 'access.denied' || e.event === 'access.allowed')
  // A normalised path is written in its canonical percent-encoded form; a rejected one as sent.
  t.ok(denied.some((e) => e.path === '/crm/x%0D%0A%7B%22event%22:%22grant.issued%22,%22grant_id%22:%22g_forged%22%7D'), 'CRLF path kept as one value')
  t.ok(denied.some((e) => e.path === `/crm/"quoted"/{"a":1}/%2f` && e.code === 'path_rejected'), 'raw quotes and JSON kept as one value')
  t.ok(denied.some((e) => e.path === '/crm/%2f' && e.code === 'path_rejected'), 'query string cut from a rejected path')
  const long = denied.find((e) => typeof e.path === 'string' && e.path.endsWith(TRUNCATION_MARK))
  t.equal((long?.path as string).length, MAX_FIELD_LENGTH + TRUNCATION_MARK.length, 'oversized path cut with a marker')
  const upgradeEvent = g.audit.find((e) => e.code === 'upgrade_not_supported')
  t.equal(upgradeEvent?.detail, `upgrade ${upgrade.toString('latin1')}`, 'header value kept exactly, as one field')
})

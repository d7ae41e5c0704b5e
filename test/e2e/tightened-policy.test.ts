/**
 * A live grant under a policy that changes: tightening the policy (scope narrowed, sub-processor
 * removed, resource removed, window enforced at use) denies the grant's requests at once, with the
 * documented codes, without revoking anything; loosening it again restores access. And an operator
 * cannot issue a grant the policy does not entitle in the first place.
 */
import t from 'tap'
import WebSocket from 'ws'
import { renameSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startUpstream } from '../helpers/upstream.js'
import { call, startTestGateway, type TestGateway } from '../helpers/gateway.js'
import { DENY_CODES } from '../../src/decision/codes.js'

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat']

function policy(upstream: string, opts: { scopes?: string; acme?: boolean; crm?: boolean; window?: string; websocket?: boolean } = {}): string {
  const { scopes = '["GET /crm/**"]', acme = true, crm = true, window, websocket = false } = opts
  return [
    'resources:',
    crm ? `  - { id: crm, upstream: "${upstream}", match: { path_prefix: /crm }, max_ttl: 8h${websocket ? ', websocket: true' : ''} }` : '',
    `  - { id: other, upstream: "${upstream}", match: { path_prefix: /other }, max_ttl: 8h }`,
    'approver_groups: [{ id: owners, members: [alice] }]',
    'approval_policies: [{ id: one, stages: [{ group: owners, approvals: 1 }], request_ttl: 1d }]',
    'subprocessors:',
    '  - { id: globex, name: Globex, contract_ends: "2099-12-31" }',
    acme && crm
      ? `  - { id: acme, name: ACME, contract_ends: "2099-12-31", entitlements: [{ resource: crm, approval: one, max_duration: 1h, scopes: ${scopes}${window ? `, window: "${window}", enforce_window_at_use: true` : ''} }] }`
      : '',
    '',
  ]
    .filter((l, i, all) => l !== '' || i === all.length - 1)
    .join('\n')
}

async function replace(g: TestGateway, text: string): Promise<void> {
  writeFileSync(join(g.policyDir, '.next'), text)
  renameSync(join(g.policyDir, '.next'), join(g.policyDir, 'test.yaml'))
  const r = await g.gw.reloadPolicy()
  if (r.result === 'rejected') throw new Error(`policy rejected: ${JSON.stringify(r.issues)}`)
}

t.test('a tightened policy denies a live grant with the documented code', async (t) => {
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: policy(upstream.url), upstream: upstream.url, config: 'policy: { watch: false }\n' })
  const grant = await g.issue({ subject: 'acme', resource: 'crm', scopes: ['GET /crm/customers/**'], ttl: '30m' })
  const get = () => call(`${g.dataUrl}/crm/customers/42`, { token: grant.token })
  t.equal((await get()).status, 200)

  await replace(g, policy(upstream.url, { scopes: '["GET /crm/tickets/**"]' }))
  let res = await get()
  t.equal(res.status, 403)
  t.equal(res.json.error.code, 'grant_not_entitled')
  t.equal(res.json.error.message, DENY_CODES.grant_not_entitled.message)
  t.match(g.audit.at(-1), { event: 'access.denied', code: 'grant_not_entitled', grant_id: grant.id, subject: 'acme', status: 403 })

  await replace(g, policy(upstream.url, { acme: false }))
  res = await get()
  t.equal(res.json.error.code, 'grant_not_entitled', 'sub-processor removed')
  t.match(res.json.error.message, /no longer entitles/)

  await replace(g, policy(upstream.url, { crm: false }))
  t.equal((await get()).json.error.code, 'route_not_found', 'resource removed: nothing routes there')

  await replace(g, policy(upstream.url))
  t.equal((await get()).status, 200, 'loosened again: the grant, never revoked, works again')

  // A window enforced at use that excludes now (yesterday, all day; still not today after midnight).
  const yesterday = DAYS[(new Date().getUTCDay() + 6) % 7] as string
  await replace(g, policy(upstream.url, { window: `${yesterday} 00:00-24:00 UTC` }))
  res = await get()
  t.equal(res.status, 403)
  t.equal(res.json.error.code, 'outside_window')
  const todayAndTomorrow = `${DAYS[new Date().getUTCDay()]},${DAYS[(new Date().getUTCDay() + 1) % 7]} 00:00-24:00 UTC`
  await replace(g, policy(upstream.url, { window: todayAndTomorrow }))
  t.equal((await get()).status, 200, 'inside the window')

  const metrics = await (await call(`${g.controlUrl}/metrics`)).text
  t.match(metrics, /jitgate_requests_total\{resource="crm",decision="deny",code="grant_not_entitled"\} 2/)
  t.match(metrics, /jitgate_requests_total\{resource="crm",decision="deny",code="outside_window"\} 1/)
})

t.test('an open WebSocket is closed once the policy no longer allows it: a window enforced at use, a removed entitlement', async (t) => {
  // The exact input of a finding: a WebSocket opened inside a window enforced at use kept
  // exchanging messages after the window closed, while plain requests got outside_window.
  const upstream = await startUpstream(t)
  const today = `${DAYS[new Date().getUTCDay()]},${DAYS[(new Date().getUTCDay() + 1) % 7]} 00:00-24:00 UTC`
  const yesterday = `${DAYS[(new Date().getUTCDay() + 6) % 7]} 00:00-24:00 UTC`
  const g = await startTestGateway(t, { policy: policy(upstream.url, { websocket: true, window: today }), upstream: upstream.url, config: 'policy: { watch: false }\n' })
  const grant = await g.issue({ subject: 'acme', resource: 'crm', scopes: ['GET /crm/**'], ttl: '30m' })
  const open = async () => {
    const ws = new WebSocket(`${g.dataUrl.replace('http', 'ws')}/crm/live`, { headers: { authorization: `Bearer ${grant.token}` } })
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject))
    const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })))
    return { ws, closed }
  }
  const cases: [string, string, string][] = [
    ['the window closed', policy(upstream.url, { websocket: true, window: yesterday }), 'outside_window'],
    ['the entitlement was removed', policy(upstream.url, { websocket: true, acme: false }), 'grant_not_entitled'],
  ]
  for (const [name, tightened, code] of cases) {
    await replace(g, policy(upstream.url, { websocket: true, window: today }))
    const { ws, closed } = await open()
    ws.send('still here')
    await replace(g, tightened)
    const { code: closeCode } = await closed
    t.equal(closeCode, 1008, `${name}: closed with 1008`)
    const ev = await g.waitForEvent((e) => e.event === 'connection.closed' && e.reason === code)
    t.match(ev, { grant_id: grant.id, subject: 'acme', protocol: 'websocket' }, `${name}: audited as ${code}`)
  }
  t.equal(upstream.sockets.size, 0, 'nothing left open upstream')
})

t.test('an operator issuing a grant outside a window enforced at use is told so in the answer', async (t) => {
  // The exact input of a finding: the grant was issued (201) and unusable (403), without a word.
  const upstream = await startUpstream(t)
  const yesterday = `${DAYS[(new Date().getUTCDay() + 6) % 7]} 00:00-24:00 UTC`
  const g = await startTestGateway(t, { policy: policy(upstream.url, { window: yesterday }), upstream: upstream.url, config: 'policy: { watch: false }\n' })
  const issued = await g.issue({ subject: 'acme', resource: 'crm', scopes: ['GET /crm/**'], ttl: '30m' })
  t.match(issued.warnings, [/"GET \/crm\/\*\*": outside its entitlement's window .* enforced at use/])
  t.equal((await call(`${g.dataUrl}/crm/x`, { token: issued.token })).json.error.code, 'outside_window', 'as the warning said')
  const today = `${DAYS[new Date().getUTCDay()]},${DAYS[(new Date().getUTCDay() + 1) % 7]} 00:00-24:00 UTC`
  await replace(g, policy(upstream.url, { window: today }))
  t.equal((await g.issue({ subject: 'acme', resource: 'crm', scopes: ['GET /crm/**'], ttl: '30m' })).warnings, undefined, 'no warning inside the window')
})

t.test('operators cannot issue what the policy does not entitle', async (t) => {
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: policy(upstream.url), upstream: upstream.url })
  const refused = async (body: Parameters<TestGateway['issue']>[0]) => {
    const err = await g.issue(body).then(
      () => undefined,
      (e: Error) => e.message,
    )
    return JSON.parse((err ?? '').replace(/^issue failed: \d+ /, '') || '{}') as { error?: { code: string; details: string[] } }
  }
  t.match(await refused({ subject: 'acme', resource: 'crm', scopes: ['POST /crm/customers/1'], ttl: '5m' }), {
    error: { code: 'scope_not_entitled', details: ['"POST /crm/customers/1" is not within an entitlement of "acme" for "crm"'] },
  })
  t.match(await refused({ subject: 'mallory', resource: 'crm', scopes: ['GET /crm/x'], ttl: '5m' }), { error: { code: 'not_entitled' } })
  t.match(await refused({ subject: 'globex', resource: 'crm', scopes: ['GET /crm/x'], ttl: '5m' }), {
    error: { code: 'not_entitled', details: [/"globex" has no entitlement for resource "crm"/] },
  })
  t.ok((await g.issue({ subject: 'acme', resource: 'crm', scopes: ['GET /crm/customers/*'], ttl: '5m' })).token, 'within the entitlement')
})

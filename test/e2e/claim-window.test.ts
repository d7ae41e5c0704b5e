/**
 * The claim-by window (entitlement `claim_within`) end to end on a real gateway (memory store):
 * approval issues an unclaimed grant, the first request through the data plane claims it (once,
 * audited), its expiry and the API views follow, a WebSocket opened by the first use closes at the
 * claimed expiry, and a grant nobody used within its window ends.
 */
import t, { type Test } from 'tap'
import WebSocket from 'ws'
import { decodeJwt } from 'jose'
import { startTestGateway, call, sleep, type TestGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { api, makeWorld, principalsYaml, type WorkflowWorld } from '../helpers/workflow.js'

const validate = auditValidator()

async function setup(t: Test, claimWithin: string): Promise<{ g: TestGateway; w: WorkflowWorld }> {
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const policy = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 8h
    websocket: true
${principalsYaml(w, { entitlement: `        claim_within: ${claimWithin}` })}`
  const g = await startTestGateway(t, { policy, upstream: upstream.url, env: w.env, config: w.config })
  return { g, w }
}

/** A request for `duration`, approved by two OIDC approvers; its id and the requester's view. */
async function approved(g: TestGateway, w: WorkflowWorld, duration: string): Promise<{ id: string; view: any }> {
  const ask = { resource: 'crm-api', scopes: ['GET /crm/customers/**'], duration, reason: 'SUP-7: export' }
  const id = (await api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, ask)).json.id as string
  await api(g.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('bob') })
  const done = await api(g.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })
  t.equal(done.status, 200)
  const view = (await api(g.controlUrl, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json
  return { id, view }
}

const grantsOf = async (g: TestGateway): Promise<any[]> => (await api(g.controlUrl, 'GET', '/v1/grants', { admin: true })).json.grants

t.test('the first use claims the grant once; its expiry becomes first use + duration; the views say so', async (t) => {
  const { g, w } = await setup(t, '1h')
  const { id, view } = await approved(g, w, '2h')
  t.match(view, { status: 'approved', claim_within_s: 3600, grant: { status: 'active', claim: { status: 'unclaimed', duration_s: 7200 } }, token: /^eyJ/ })
  const claimBy = Date.parse(view.grant.claim.claim_by as string)
  t.equal(Date.parse(view.grant.expires_at as string), claimBy, 'unclaimed: it ends at its claim-by time')
  t.equal(Date.parse(view.grant.claim.not_after as string), claimBy + 7_200_000)
  t.equal(decodeJwt(view.token as string).exp, (claimBy + 7_200_000) / 1000, "the token's exp allows a late first use plus the full duration")
  const [listed] = await grantsOf(g)
  t.match(listed, { id: view.grant.id, status: 'active', claim: { status: 'unclaimed', claim_by: view.grant.claim.claim_by } })
  t.match(g.audit.find((e) => e.event === 'grant.issued'), { grant_id: view.grant.id, claim_by: view.grant.claim.claim_by, expires_at: view.grant.claim.claim_by })
  t.match(
    await api(g.controlUrl, 'POST', `/v1/requests/${id}/extend`, { bearer: await w.acme.assertion() }, { duration: '1h', reason: 'more' }),
    { status: 409, json: { error: { code: 'wrong_state', details: [/not been used yet/] } } },
  )

  const before = Date.now()
  t.equal((await call(`${g.dataUrl}/crm/customers/1/notes`, { token: 'x' })).status, 401, 'a refused request claims nothing')
  t.equal((await call(`${g.dataUrl}/crm/tickets/1`, { token: view.token })).status, 403, 'nor does one outside the scopes')
  t.match(await grantsOf(g), [{ claim: { status: 'unclaimed' } }])
  t.equal((await call(`${g.dataUrl}/crm/customers/1`, { token: view.token })).status, 200, 'the first use')
  const after = Date.now()
  t.equal((await call(`${g.dataUrl}/crm/customers/2`, { token: view.token })).status, 200)
  t.equal((await call(`${g.dataUrl}/crm/customers/3`, { token: view.token })).status, 200)

  const claimed = g.audit.filter((e) => e.event === 'grant.claimed')
  t.equal(claimed.length, 1, 'claimed once')
  t.match(claimed[0], { actor: 'acme', subject: 'acme', grant_id: view.grant.id, resource: 'crm-api', client_ip: '127.0.0.1' })
  const claimedAt = Date.parse(claimed[0]?.claimed_at as string)
  t.ok(claimedAt >= before && claimedAt <= after, 'at the first use')
  const expiresAt = Math.floor((claimedAt + 7_200_000) / 1000) * 1000
  t.equal(claimed[0]?.expires_at, new Date(expiresAt).toISOString(), 'first use + duration')
  t.match(await grantsOf(g), [{ expires_at: new Date(expiresAt).toISOString(), claim: { status: 'claimed', claimed_at: claimed[0]?.claimed_at } }])
  const again = (await api(g.controlUrl, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json
  t.match(again.grant, { expires_at: new Date(expiresAt).toISOString(), claim: { status: 'claimed' } })
  t.equal(decodeJwt(again.token as string).exp, expiresAt / 1000, 'a token read after the claim carries the claimed expiry')
  t.equal(g.audit.filter((e) => e.event === 'access.allowed').length, 3)

  const ext = await api(g.controlUrl, 'POST', `/v1/requests/${id}/extend`, { bearer: await w.acme.assertion() }, { duration: '1h', reason: 'more' })
  t.equal(ext.status, 201, 'once claimed, the grant can be extended')
  t.same(g.audit.flatMap((e) => validate(e).map((p) => `${e.event}: ${p}`)), [], 'audit lines match the schema')
})

t.test('a WebSocket opened by the first use closes at the claimed expiry', async (t) => {
  const { g, w } = await setup(t, '1h')
  const { view } = await approved(g, w, '2s')
  const ws = new WebSocket(`${g.dataUrl.replace('http', 'ws')}/crm/customers/stream`, { headers: { authorization: `Bearer ${view.token}` } })
  const closed = new Promise<{ code: number; reason: string }>((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })))
  await new Promise((resolve, reject) => {
    ws.on('open', resolve)
    ws.on('error', reject)
  })
  const claimed = g.audit.find((e) => e.event === 'grant.claimed')
  t.ok(claimed, 'the upgrade claimed the grant')
  t.match(await closed, { code: 1008, reason: 'grant expired' }, 'closed when the claimed grant ended, not at the end of the claim-by window')
  await sleep(50)
  t.match(g.audit.find((e) => e.event === 'connection.closed'), { reason: 'grant_expired', grant_id: view.grant.id })
  t.ok(Date.now() >= Date.parse(claimed?.expires_at as string), 'not before the claimed expiry')
})

t.test('a grant nobody uses within its claim-by window ends', async (t) => {
  const { g, w } = await setup(t, '2s')
  const { id, view } = await approved(g, w, '1h')
  const claimBy = Date.parse(view.grant.claim.claim_by as string)
  await sleep(claimBy + 300 - Date.now())
  t.match(await call(`${g.dataUrl}/crm/customers/1`, { token: view.token }), { status: 403, json: { error: { code: 'grant_not_found' } } })
  t.same(await grantsOf(g), [])
  t.match((await api(g.controlUrl, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json, { status: 'approved', grant: { status: 'expired' } })
  t.notOk('token' in (await api(g.controlUrl, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json)
  t.equal(g.audit.filter((e) => e.event === 'grant.claimed').length, 0)
  t.equal(g.audit.filter((e) => e.event === 'grant.issued').length, 1, 'and it is not issued again')
})

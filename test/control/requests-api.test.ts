/**
 * The access-request API over real HTTP on a real gateway (memory stores): signed vendor
 * assertions, local approvers with real TOTP codes, OIDC approvers with ID tokens from a real
 * issuer (JWKS over HTTP), and calls through the data plane with the token that comes out. Every
 * audit line is checked against the published schema.
 */
import t, { type Test } from 'tap'
import { request } from 'undici'
import { ADMIN_TOKEN, startTestGateway, call, type TestGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { api, makeWorld, principalsYaml, type WorkflowWorld } from '../helpers/workflow.js'

const RESOURCES = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 8h
`

const validate = auditValidator()

async function setup(t: Test, opts: Parameters<typeof principalsYaml>[1] = {}): Promise<{ g: TestGateway; w: WorkflowWorld }> {
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: RESOURCES + principalsYaml(w, opts), upstream: upstream.url, env: w.env, config: w.config })
  return { g, w }
}

/** Every audit line written so far matches the published schema. */
function auditValid(t: Test, g: TestGateway): void {
  const problems = g.audit.flatMap((e) => validate(e).map((p) => `${e.event}: ${p}`))
  t.same(problems, [], `${g.audit.length} audit lines match the schema`)
}

const ASK = { resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration: '1h', reason: 'SUP-1234: export broken' }

t.test('two-stage approval end to end: request, local approver with TOTP, OIDC approver, token, call through', async (t) => {
  const { g, w } = await setup(t)
  const u = g.controlUrl
  const created = await api(u, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, ASK)
  t.equal(created.status, 201)
  t.match(created.json, { status: 'pending', subject: 'acme', resource: 'crm-api', stages: [{ group: 'crm-owners', approvals_required: 1 }, { group: 'security' }] })
  t.notOk('token' in created.json)
  const id = created.json.id as string

  const one = await api(u, 'POST', `/v1/requests/${id}/approve`, { approver: w.alice }, { comment: 'ok for SUP-1234' })
  t.equal(one.status, 200)
  t.match(one.json, { status: 'pending', stages: [{ approvals: [{ approver: 'alice', comment: 'ok for SUP-1234' }] }, { approvals: [] }] })

  const two = await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })
  t.equal(two.status, 200)
  t.match(two.json, { status: 'approved', decided_by: '00u-carol', grant: { id: `g_${id.slice(2)}`, status: 'active' } })
  t.notOk('token' in two.json, 'an approver never sees the token')

  const mine = await api(u, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })
  t.equal(mine.status, 200)
  t.match(mine.json, { status: 'approved', grant: { status: 'active' }, token: /^eyJ/ })
  const token = mine.json.token as string
  t.equal((await api(u, 'GET', `/v1/requests/${id}`, { bearer: await w.globex.assertion() })).status, 404, "another vendor can't see it")
  t.notOk('token' in (await api(u, 'GET', `/v1/requests/${id}`, { admin: true })).json, 'nor does an operator get the token')

  t.equal((await call(`${g.dataUrl}/crm/customers/42`, { token })).status, 200)
  t.equal((await call(`${g.dataUrl}/crm/customers/42/notes`, { token })).json.error.code, 'scope_denied')

  const listed = await api(u, 'GET', '/v1/requests?status=approved', { bearer: await w.acme.assertion() })
  t.same(listed.json.requests.map((r: { id: string }) => r.id), [id])
  t.same((await api(u, 'GET', '/v1/requests', { bearer: await w.globex.assertion() })).json.requests, [], 'a vendor lists its own only')
  t.equal((await api(u, 'GET', '/v1/requests?status=pending', { admin: true })).json.requests.length, 0)
  const outsider = await w.idToken('00u-mallory', { groups: ['everyone'] })
  t.match(await api(u, 'GET', '/v1/requests', { bearer: outsider }), { status: 403, json: { error: { code: 'not_an_approver' } } }, 'a signed-in employee outside every approver group reads nothing')
  t.match(await api(u, 'GET', `/v1/requests/${id}`, { bearer: outsider }), { status: 403 })

  const events = g.audit.map((e) => e.event).filter((e) => e.startsWith('request.') || e.startsWith('grant.'))
  t.same(events, ['request.created', 'request.approval_recorded', 'request.approval_recorded', 'request.approved', 'grant.issued'])
  t.match(
    g.audit.filter((e) => e.event.startsWith('request.') || e.event === 'grant.issued').map((e) => e.actor),
    ['acme', 'alice', '00u-carol', '00u-carol', '00u-carol'],
    'each event names its actor',
  )
  t.notOk(g.auditText().includes(token), 'the token never reaches the audit trail')
  auditValid(t, g)
})

t.test('refusals over HTTP: self-approval, missing MFA, bad or reused TOTP, wrong caller', async (t) => {
  const { g, w } = await setup(t)
  const u = g.controlUrl
  const id = (await api(u, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, ASK)).json.id as string
  const approve = (as: Parameters<typeof api>[3]) => api(u, 'POST', `/v1/requests/${id}/approve`, as)

  t.match(await approve({ bearer: await w.idToken('acme') }), { status: 403, json: { error: { code: 'self_approval' } } })
  t.match(await approve({ bearer: await w.idToken('00u-carol', { amr: ['pwd'] }) }), { status: 403, json: { error: { code: 'mfa_required' } } })
  t.match(await approve({ approver: w.alice, totp: false }), { status: 403, json: { error: { code: 'mfa_required' } } })
  const wrong = String((Number(w.alice.code()) + 1) % 1_000_000).padStart(6, '0')
  t.match(await approve({ approver: w.alice, totp: wrong }), { status: 403, json: { error: { code: 'mfa_invalid' } } })
  const code = w.alice.code()
  t.match(await approve({ approver: w.alice, totp: code }), { status: 200 })
  t.match(await api(u, 'POST', `/v1/requests/${id}/deny`, { approver: w.bob }), { status: 200 }, 'bob denies')
  t.match(await approve({ approver: w.alice, totp: code }), { status: 403, json: { error: { code: 'mfa_invalid', details: [/already used/] } } }, 'a TOTP code works once')
  t.match(await approve({ bearer: await w.idToken('00u-carol') }), { status: 409, json: { error: { code: 'wrong_state' } } })
  t.match(await approve({ bearer: await w.acme.assertion() }), { status: 403, json: { error: { code: 'approver_only' } } })
  t.match(await approve({ admin: true }), { status: 403, json: { error: { code: 'approver_only' } } }, 'an operator is not an approver')
  t.match(await api(u, 'POST', `/v1/requests/${id}/cancel`, { approver: w.alice, totp: false }), { status: 403, json: { error: { code: 'requester_only' } } })
  t.match(await approve({ bearer: await w.idToken('00u-carol', { groups: ['other'] }) }), { status: 409 }, 'state is checked before membership')
  t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.code === 'mfa_invalid' && e.actor === 'approver:alice'), 'a failed second factor is audited, naming the approver')
  for (const code of ['self_approval', 'mfa_required', 'wrong_state', 'approver_only', 'requester_only']) {
    t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.code === code && e.path === `/v1/requests/${id}/${code === 'requester_only' ? 'cancel' : 'approve'}`), `${code} is audited`)
  }
  t.equal(g.audit.filter((e) => e.event === 'admin.denied' && e.code === 'mfa_invalid').length, 2, 'each refusal once')
  auditValid(t, g)
})

t.test('an ID token proving an old sign-in is refused (reauthentication_required), and audited', async (t) => {
  const { g, w } = await setup(t)
  const id = (await api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, ASK)).json.id as string
  const longAgo = Math.floor(Date.now() / 1000) - 13 * 3600
  const stale = await api(g.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('bob', { auth_time: longAgo }) })
  t.match(stale, { status: 401, json: { error: { code: 'reauthentication_required', details: [/auth_time\) is 13h old, more than max_age 12h/] } } }, 'the default max_age is 12h')
  t.match(g.audit.at(-1), { event: 'admin.denied', code: 'reauthentication_required', status: 401, path: `/v1/requests/${id}/approve` })
  t.equal(g.audit.filter((e) => e.event === 'admin.denied').length, 1, 'audited once')
  t.match(await api(g.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('bob', { auth_time: longAgo + 3 * 3600 }) }), { status: 200 }, 'a sign-in 10 hours ago is recent enough')
  auditValid(t, g)
})

t.test('guessing TOTP codes locks the approver after 5 wrong codes', async (t) => {
  const { g, w } = await setup(t)
  const u = g.controlUrl
  const id = (await api(u, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, ASK)).json.id as string
  const right = w.bob.code()
  const wrong = String((Number(right) + 500_000) % 1_000_000).padStart(6, '0')
  for (let i = 0; i < 5; i++) {
    t.match(await api(u, 'POST', `/v1/requests/${id}/approve`, { approver: w.bob, totp: wrong }), { status: 403, json: { error: { code: 'mfa_invalid' } } })
  }
  t.match(await api(u, 'POST', `/v1/requests/${id}/approve`, { approver: w.bob, totp: right }), { status: 429, json: { error: { code: 'mfa_locked' } } }, 'even the right code, once locked')
  t.match(await api(u, 'POST', `/v1/requests/${id}/approve`, { approver: w.alice }), { status: 200 }, 'other approvers are not affected')
  t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.code === 'mfa_locked' && e.actor === 'approver:bob'))
  auditValid(t, g)
})

t.test('a replayed assertion is refused (assertion_replayed), and audited', async (t) => {
  const { g, w } = await setup(t)
  const assertion = await w.acme.assertion()
  t.equal((await api(g.controlUrl, 'GET', '/v1/requests', { bearer: assertion })).status, 200)
  const replay = await api(g.controlUrl, 'POST', '/v1/requests', { bearer: assertion }, ASK)
  t.match(replay, { status: 401, json: { error: { code: 'assertion_replayed' } } })
  t.match(g.audit.at(-1), { event: 'admin.denied', code: 'assertion_replayed', path: '/v1/requests', status: 401 })
  const forged = await w.globex.assertion({ iss: 'acme', sub: 'acme' })
  t.match(await api(g.controlUrl, 'GET', '/v1/requests', { bearer: forged }), { status: 401, json: { error: { code: 'credentials_invalid' } } }, "globex can't sign for acme")
  t.match(await api(g.controlUrl, 'GET', '/v1/requests', { bearer: 'not-a-jwt' }), { status: 401, json: { error: { code: 'credentials_invalid' } } })
  t.match(await api(g.controlUrl, 'GET', '/v1/requests', {}), { status: 401, json: { error: { code: 'credentials_invalid' } } })
})

t.test('validation and entitlement refusals carry their codes', async (t) => {
  const { g, w } = await setup(t)
  const post = async (body: unknown) => api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, body)
  t.match(await post({ resource: 'crm-api', scopes: [], duration: 'soon', extra: 1 }), {
    status: 400,
    json: { error: { code: 'invalid_request', details: ['extra: unknown field', /^scopes:/, /^duration:/, /^reason:/] } },
  })
  for (const duration of [60, '60']) {
    t.match(await post({ ...ASK, duration }), {
      status: 400,
      json: { error: { code: 'duration_unit_required', details: [`duration: ${JSON.stringify(duration)} has no unit: give one, e.g. 60s, 15m or 1h (a bare number is ambiguous)`] } },
    }, `duration ${JSON.stringify(duration)} refused, not read as seconds`)
  }
  t.match(await post({ ...ASK, scopes: ['GET /crm/**'] }), { status: 403, json: { error: { code: 'scope_not_entitled' } } })
  t.match(await post({ ...ASK, duration: '5h' }), { status: 403, json: { error: { code: 'duration_exceeds_max', details: ['5h > 4h'] } } })
  t.match(await post({ ...ASK, break_glass: true }), { status: 403, json: { error: { code: 'break_glass_not_allowed' } } })
  t.match(await api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.globex.assertion() }, ASK), { status: 403, json: { error: { code: 'not_entitled' } } })
  t.match(await api(g.controlUrl, 'GET', '/v1/requests/r_nope', { admin: true }), { status: 404, json: { error: { code: 'request_not_found' } } })
  t.match(await api(g.controlUrl, 'POST', '/v1/requests/r_0123456789012345678901/frobnicate', { admin: true }), { status: 404, json: { error: { code: 'not_found' } } })
  t.match(await api(g.controlUrl, 'GET', '/v1/requests?status=maybe', { admin: true }), { status: 400 })
})

t.test('relinquish and revoke take effect on the next request', async (t) => {
  const { g, w } = await setup(t)
  const u = g.controlUrl
  const approved = async (): Promise<{ id: string; token: string }> => {
    const id = (await api(u, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, ASK)).json.id as string
    // OIDC approvers both: a local approver's TOTP code works once per 30-second step.
    await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('bob') })
    await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })
    const token = (await api(u, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json.token as string
    t.equal((await call(`${g.dataUrl}/crm/customers/1`, { token })).status, 200)
    return { id, token }
  }

  const mine = await approved()
  t.match(await api(u, 'POST', `/v1/requests/${mine.id}/extend`, { bearer: await w.acme.assertion() }, { duration: '60', reason: 'more time' }), {
    status: 400,
    json: { error: { code: 'duration_unit_required', details: ['duration: "60" has no unit: give one, e.g. 60s, 15m or 1h (a bare number is ambiguous)'] } },
  }, 'an extension by a bare number is refused too')
  t.equal((await api(u, 'POST', `/v1/requests/${mine.id}/relinquish`, { bearer: await w.acme.assertion() })).status, 204)
  t.match(await call(`${g.dataUrl}/crm/customers/1`, { token: mine.token }), { status: 403, json: { error: { code: 'grant_revoked' } } })
  t.match((await api(u, 'GET', `/v1/requests/${mine.id}`, { bearer: await w.acme.assertion() })).json, { grant: { status: 'revoked' } })
  t.notOk('token' in (await api(u, 'GET', `/v1/requests/${mine.id}`, { bearer: await w.acme.assertion() })).json)

  const byApprover = await approved()
  t.match(await api(u, 'POST', `/v1/requests/${byApprover.id}/revoke`, { bearer: await w.idToken('00u-carol') }, {}), { status: 400 }, 'a reason is required')
  t.equal((await api(u, 'POST', `/v1/requests/${byApprover.id}/revoke`, { bearer: await w.idToken('00u-carol') }, { reason: 'vendor offboarded' })).status, 204)
  t.match(await call(`${g.dataUrl}/crm/customers/1`, { token: byApprover.token }), { status: 403, json: { error: { code: 'grant_revoked' } } })

  const byOperator = await approved()
  t.equal((await api(u, 'POST', `/v1/requests/${byOperator.id}/revoke`, { admin: true }, { reason: 'maintenance' })).status, 204)
  t.match(await call(`${g.dataUrl}/crm/customers/1`, { token: byOperator.token }), { status: 403, json: { error: { code: 'grant_revoked' } } })
  t.match(
    g.audit.filter((e) => e.event === 'grant.revoked').map((e) => [e.actor, e.reason]),
    [
      ['acme', 'relinquished by the requester'],
      ['00u-carol', 'vendor offboarded'],
      ['operator', 'maintenance'],
    ],
  )
  auditValid(t, g)
})

t.test("the grant never outlives the contract: a long request is capped at the contract's end", async (t) => {
  const tomorrow = new Date(Date.now() + 86_400_000).toISOString().slice(0, 10)
  const w = await makeWorld(t)
  const policy = `
resources:
  - id: crm-api
    upstream: http://127.0.0.1:9
    match: { path_prefix: /crm }
    max_ttl: 48h
${principalsYaml(w, { contractEnds: tomorrow })}`.replace('max_duration: 4h', 'max_duration: 48h')
  const g = await startTestGateway(t, { policy, env: w.env, config: w.config })
  const u = g.controlUrl
  const id = (await api(u, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, { ...ASK, duration: '48h' })).json.id as string
  await api(u, 'POST', `/v1/requests/${id}/approve`, { approver: w.alice })
  const done = await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })
  // The contract's last day ends at the next midnight UTC.
  const endOfContract = new Date(Date.parse(`${tomorrow}T00:00:00Z`) + 86_400_000).toISOString()
  t.equal(done.json.grant.expires_at, endOfContract, 'ends with the contract, not 48 h from now')
  auditValid(t, g)
})

/** `DELETE /v1/grants/{id}` as an approver (ID token, or local approver with TOTP) or with raw headers. */
async function revokeGrant(
  controlUrl: string,
  id: string,
  as: { bearer?: string; approver?: import('../helpers/workflow.js').LocalApproverKey; totp?: string | false; headers?: Record<string, string> },
  body?: unknown,
): Promise<{ status: number; json: any }> {
  const headers: Record<string, string> = { ...as.headers }
  if (as.bearer !== undefined) headers.authorization = `Bearer ${as.bearer}`
  if (as.approver !== undefined) {
    headers.authorization = `Bearer ${ADMIN_TOKEN}`
    headers['x-jitgate-approver'] = as.approver.id
    if (as.totp !== false) headers['x-jitgate-totp'] = as.totp ?? as.approver.code()
  }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await request(`${controlUrl}/v1/grants/${id}`, { method: 'DELETE', headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })
  const text = await res.body.text()
  return { status: res.statusCode, json: text === '' ? undefined : JSON.parse(text) }
}

t.test('approvers revoke through DELETE /v1/grants/{id}: who may, with a reason, audited with the approver as actor', async (t) => {
  const { g, w } = await setup(t)
  const u = g.controlUrl
  const approved = async (): Promise<{ grantId: string; token: string }> => {
    const id = (await api(u, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, ASK)).json.id as string
    await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('bob') })
    const done = await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })
    const token = (await api(u, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json.token as string
    return { grantId: done.json.grant.id as string, token }
  }

  const first = await approved()
  // Approvers list the grants they may end: the console's view of live access.
  const listed = await api(u, 'GET', '/v1/grants', { bearer: await w.idToken('00u-carol') })
  t.equal(listed.status, 200)
  t.match(listed.json, { grants: [{ id: first.grantId, subject: 'acme', resource: 'crm-api' }] }, 'an approver of its stages sees the grant')
  const outsider = await api(u, 'GET', '/v1/grants', { bearer: await w.idToken('00u-mallory', { groups: ['everyone'] }) })
  t.match(outsider, { status: 403, json: { error: { code: 'not_an_approver' } } }, 'a signed-in non-approver sees nothing')
  const requester = await api(u, 'GET', '/v1/grants', { bearer: await w.idToken('acme') })
  t.notOk(JSON.stringify(requester.json).includes(first.grantId), 'never its own grant as an approver')
  t.match(await api(u, 'GET', '/v1/grants', { bearer: await w.acme.assertion() }), { status: 403, json: { error: { code: 'approver_only' } } })
  t.match(await revokeGrant(u, first.grantId, { bearer: await w.idToken('00u-carol') }), { status: 400, json: { error: { code: 'invalid_request' } } }, 'a reason is required')
  t.match(await revokeGrant(u, first.grantId, { bearer: await w.idToken('00u-carol', { amr: ['pwd'] }) }, { reason: 'x' }), { status: 403, json: { error: { code: 'mfa_required' } } })
  t.match(
    await revokeGrant(u, first.grantId, { bearer: await w.idToken('00u-mallory', { groups: ['everyone'] }) }, { reason: 'x' }),
    { status: 403, json: { error: { code: 'not_an_approver' } } },
    'signed in, but in no group of the approval policy',
  )
  t.match(await revokeGrant(u, first.grantId, { bearer: await w.idToken('acme') }, { reason: 'x' }), { status: 403, json: { error: { code: 'self_approval' } } })
  t.match(await revokeGrant(u, first.grantId, { bearer: await w.acme.assertion() }, { reason: 'x' }), { status: 403, json: { error: { code: 'approver_only' } } }, 'the vendor relinquishes instead')
  t.match(await revokeGrant(u, first.grantId, { bearer: await w.idToken('00u-carol', { iss: 'https://evil.example' }) }, { reason: 'x' }), { status: 401, json: { error: { code: 'credentials_invalid' } } })
  t.equal((await call(`${g.dataUrl}/crm/customers/1`, { token: first.token })).status, 200, 'no refusal revoked anything')
  t.equal((await revokeGrant(u, first.grantId, { bearer: await w.idToken('00u-carol') }, { reason: 'vendor offboarded' })).status, 204, 'an OIDC approver of the stage groups')
  t.match(await call(`${g.dataUrl}/crm/customers/1`, { token: first.token }), { status: 403, json: { error: { code: 'grant_revoked' } } })
  t.match(await revokeGrant(u, first.grantId, { bearer: await w.idToken('00u-carol') }, { reason: 'again' }), { status: 409, json: { error: { code: 'grant_already_revoked', details: [/^revoked by \S+ at \S+: vendor offboarded$/] } } })

  const second = await approved()
  t.equal((await revokeGrant(u, second.grantId, { approver: w.alice }, { reason: 'done early' })).status, 204, 'a local approver, with its TOTP code')
  t.match(await call(`${g.dataUrl}/crm/customers/1`, { token: second.token }), { status: 403, json: { error: { code: 'grant_revoked' } } })

  // A grant an operator issued directly: whoever approves acme's crm-api requests may end it.
  const direct = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/customers/*'], ttl: '10m' })
  t.match(await revokeGrant(u, direct.id, { approver: w.bob, totp: false }, { reason: 'x' }), { status: 403, json: { error: { code: 'mfa_required' } } }, 'a local approver without its code')
  t.equal((await revokeGrant(u, direct.id, { bearer: await w.idToken('bob') }, { reason: 'ticket closed' })).status, 204)

  // Operators, as before.
  const third = await approved()
  t.match(await revokeGrant(u, third.grantId, { headers: { authorization: 'Bearer wrong-token-0123456789' } }, { reason: 'x' }), { status: 401, json: { error: { code: 'unauthorized' } } })
  t.equal(await g.revoke(third.grantId, 'maintenance'), 204)

  t.match(
    g.audit.filter((e) => e.event === 'grant.revoked').map((e) => [e.grant_id, e.actor, e.reason]),
    [
      [first.grantId, '00u-carol', 'vendor offboarded'],
      [second.grantId, 'alice', 'done early'],
      [direct.id, 'bob', 'ticket closed'],
      [third.grantId, 'operator', 'maintenance'],
    ],
  )
  for (const code of ['mfa_required', 'not_an_approver', 'self_approval', 'approver_only', 'credentials_invalid', 'unauthorized']) {
    t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.code === code && String(e.path).startsWith('/v1/grants/')), `${code} is audited`)
  }
  auditValid(t, g)
})

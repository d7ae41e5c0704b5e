/**
 * The console's API client (src/console/static/api.js, the module the browser runs) under Node
 * with undici's fetch, against a real gateway: signed vendor assertions create the requests, a
 * local approver with real TOTP codes and an OIDC approver with ID tokens from a real issuer act
 * through the client, and every fetch call it makes is recorded and checked exactly.
 */
import t, { type Test } from 'tap'
import { fetch as undiciFetch, request } from 'undici'
import { startTestGateway, call, ADMIN_TOKEN, type TestGateway } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { api, makeWorld, principalsYaml, type WorkflowWorld } from '../helpers/workflow.js'
import { createApiClient, ConsoleApiError, type ConsoleFetch, type ConsoleFetchInit, type ConsoleCredential } from '../../src/console/static/api.js'

const RESOURCES = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 8h
`

/** A reason a requester controls: the console must show it as text, and send it back untouched. */
const HOSTILE = `<img src=x onerror="alert(1)"> "quoted" & </td><script>alert(2)</script>`
const ASK = { resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration: '1h', reason: HOSTILE, ticket: 'SUP-1234' }

/** What the client sends with every call. */
const FETCH_OPTIONS = { cache: 'no-store', credentials: 'omit', redirect: 'error', referrerPolicy: 'no-referrer' }

interface Recorded extends ConsoleFetchInit {
  readonly url: string
}

/** undici's fetch, recording each call exactly as the client made it. */
function recorder(): { fetch: ConsoleFetch; calls: Recorded[] } {
  const calls: Recorded[] = []
  return {
    calls,
    fetch: async (url, init) => {
      calls.push({ url, ...init, headers: { ...init.headers } })
      return undiciFetch(url, init as Parameters<typeof undiciFetch>[1])
    },
  }
}

async function setup(t: Test): Promise<{ g: TestGateway; w: WorkflowWorld; u: string }> {
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: RESOURCES + principalsYaml(w), upstream: upstream.url, env: w.env, config: w.config })
  return { g, w, u: g.controlUrl }
}

/** The ConsoleApiError a call fails with (the test fails if it succeeds or fails otherwise). */
async function failure(t: Test, p: Promise<unknown>): Promise<ConsoleApiError> {
  try {
    await p
  } catch (err) {
    t.ok(err instanceof ConsoleApiError, 'a ConsoleApiError')
    return err as ConsoleApiError
  }
  t.fail('expected a refusal')
  return new ConsoleApiError({ status: 0, code: 'none', message: '' })
}

async function createRequest(g: TestGateway, w: WorkflowWorld, body: object = ASK): Promise<string> {
  const created = await api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, body)
  if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.json)}`)
  return created.json.id as string
}

/** The code a local approver's authenticator shows in the next 30-second step (accepted: one step of skew). */
const nextCode = (who: WorkflowWorld['alice']): string => who.code(Date.now() + 30_000)

t.test('the console calls, end to end: list pending, open, approve with a TOTP code, approve with an ID token, list grants, revoke', async (t) => {
  const { g, w, u } = await setup(t)
  const id = await createRequest(g, w)

  const rec = recorder()
  const alice = createApiClient({ credential: { kind: 'local', approver: 'alice', operatorToken: ADMIN_TOKEN }, fetch: rec.fetch, baseUrl: u })
  t.equal(alice.needsTotp, true, 'a local approver acts with TOTP codes')
  t.same(alice.identity, { kind: 'local', name: 'alice' })
  const aliceHeaders = { authorization: `Bearer ${ADMIN_TOKEN}`, 'x-jitgate-approver': 'alice' }

  const pending = await alice.listPending()
  t.equal(pending.length, 1)
  t.match(pending[0], { id, status: 'pending', subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration_s: 3600, ticket: 'SUP-1234', stages: [{ group: 'crm-owners', approvals_required: 1, approvals: [] }, { group: 'security' }] })
  t.equal(pending[0]?.reason, HOSTILE, 'the reason comes back exactly as the requester wrote it')
  t.same(rec.calls.at(-1), { url: `${u}/v1/requests?status=pending`, method: 'GET', headers: aliceHeaders, ...FETCH_OPTIONS }, 'GET /v1/requests?status=pending, without a TOTP code')

  const opened = await alice.getRequest(id)
  t.match(opened, { id, status: 'pending', created_at: String, expires_at: String })
  t.same(rec.calls.at(-1), { url: `${u}/v1/requests/${id}`, method: 'GET', headers: aliceHeaders, ...FETCH_OPTIONS })

  const before = rec.calls.length
  t.match(await failure(t, alice.approve(id, { comment: 'ok' })), { code: 'invalid_input', status: 0 }, 'no code: refused here')
  t.match(await failure(t, alice.approve(id, { totp: '12345' })), { code: 'invalid_input' }, 'a malformed code: refused here')
  t.equal(rec.calls.length, before, 'nothing was sent: a typo never counts toward the lockout')

  const code = w.alice.code()
  const one = await alice.approve(id, { comment: ' ok for SUP-1234 <b>bold</b> ', totp: ` ${code} ` })
  t.match(one, { status: 'pending', stages: [{ approvals: [{ approver: 'alice', comment: 'ok for SUP-1234 <b>bold</b>' }] }, { approvals: [] }] })
  t.same(
    rec.calls.at(-1),
    {
      url: `${u}/v1/requests/${id}/approve`,
      method: 'POST',
      headers: { ...aliceHeaders, 'x-jitgate-totp': code, 'content-type': 'application/json' },
      body: JSON.stringify({ comment: 'ok for SUP-1234 <b>bold</b>' }),
      ...FETCH_OPTIONS,
    },
    'POST /approve with the TOTP code and the comment',
  )

  const idToken = await w.idToken('00u-carol')
  const orec = recorder()
  const carol = createApiClient({ credential: { kind: 'oidc', idToken: `  ${idToken}\n` }, fetch: orec.fetch, baseUrl: u })
  t.equal(carol.needsTotp, false, 'an OIDC approver proves MFA with its ID token')
  t.match(carol.identity, { kind: 'oidc', name: '00u-carol', expiresAt: Number })
  const two = await carol.approve(id, { totp: '000000' })
  t.match(two, { status: 'approved', decided_by: '00u-carol', grant: { id: `g_${id.slice(2)}`, status: 'active' } })
  t.notOk('token' in two, 'an approver never receives the JIT token')
  t.same(
    orec.calls.at(-1),
    { url: `${u}/v1/requests/${id}/approve`, method: 'POST', headers: { authorization: `Bearer ${idToken}`, 'content-type': 'application/json' }, body: '{}', ...FETCH_OPTIONS },
    'the ID token as the bearer, and no TOTP header',
  )
  t.same(await carol.listPending(), [], 'nothing pending any more')

  const token = (await api(u, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json.token as string
  t.equal((await call(`${g.dataUrl}/crm/customers/42`, { token })).status, 200, 'the vendor calls through')

  const mark = orec.calls.length
  const grants = await carol.listActiveGrants()
  t.equal(grants.length, 1)
  t.match(grants[0], { id: `g_${id.slice(2)}`, subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/customers/*'], status: 'active', reason: HOSTILE, issued_by: '00u-carol', starts_at: String, expires_at: String })
  t.notOk('token' in (grants[0] as object), 'never a token')
  t.same(orec.calls.slice(mark), [{ url: `${u}/v1/grants`, method: 'GET', headers: { authorization: `Bearer ${idToken}` }, ...FETCH_OPTIONS }], 'one call: GET /v1/grants')
  t.ok(Math.abs(Date.parse(grants[0]?.expires_at as string) - (Date.now() + 3_600_000)) < 5_000, 'it expires in an hour')

  t.match(await failure(t, carol.revokeGrant(grants[0] as (typeof grants)[0], { reason: '  ' })), { code: 'invalid_input' }, 'a revocation needs a reason')
  await carol.revokeGrant(grants[0] as (typeof grants)[0], { reason: 'vendor offboarded' })
  t.same(orec.calls.at(-1), {
    url: `${u}/v1/grants/${grants[0]?.id}`,
    method: 'DELETE',
    headers: { authorization: `Bearer ${idToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ reason: 'vendor offboarded' }),
    ...FETCH_OPTIONS,
  })
  t.match(await call(`${g.dataUrl}/crm/customers/42`, { token }), { status: 403, json: { error: { code: 'grant_revoked' } } }, 'the next vendor call is refused')
  t.same(await carol.listActiveGrants(), [], 'and the grant is no longer listed')
  t.match(g.audit.find((e) => e.event === 'grant.revoked'), { actor: '00u-carol', reason: 'vendor offboarded' })

  const all = [...rec.calls, ...orec.calls]
  t.ok(
    all.every((c) => c.url.startsWith(`${u}/v1/requests`) || (c.method === 'GET' && c.url === `${u}/v1/grants`) || (c.method === 'DELETE' && c.url.startsWith(`${u}/v1/grants/`))),
    'every call goes to the access-request API, lists grants, or revokes one',
  )
  t.ok(all.every((c) => !c.url.includes(idToken) && !c.url.includes(ADMIN_TOKEN) && !(c.body ?? '').includes(idToken)), 'a credential is only ever in the Authorization header')
  t.notOk(g.auditText().includes(idToken), 'nor in the audit trail')
})

t.test('deny with a comment, revoke as a local approver, and refusals with the API code, message and request id', async (t) => {
  const { g, w, u } = await setup(t)
  const denied = await createRequest(g, w)
  const granted = await createRequest(g, w, { ...ASK, reason: 'SUP-2' })
  const local = (approver: string, operatorToken = ADMIN_TOKEN) => createApiClient({ credential: { kind: 'local', approver, operatorToken }, fetch: recorder().fetch, baseUrl: u })
  const bob = local('bob')
  const alice = local('alice')

  const bobCode = w.bob.code()
  const d = await bob.deny(denied, { comment: 'no ticket context', totp: bobCode })
  t.match(d, { status: 'denied', decided_by: 'bob', comment: 'no ticket context' })

  const late = await failure(t, alice.approve(denied, { totp: w.alice.code() }))
  t.match(late, { status: 409, code: 'wrong_state', message: 'The request is not in a state that allows this.', requestId: /^[0-9a-f-]{36}$/ }, "the API's code, message and request id")
  t.match(await failure(t, bob.approve(granted, { totp: bobCode })), { status: 403, code: 'mfa_invalid', details: [/already used/] }, 'a code works once')
  const wrong = String((Number(w.alice.code()) + 500_000) % 1_000_000).padStart(6, '0')
  t.match(await failure(t, alice.approve(granted, { totp: wrong })), { status: 403, code: 'mfa_invalid' })
  t.match(await failure(t, local('alice', 'wrong-token-0123456789').listPending()), { status: 401, code: 'credentials_invalid' }, 'a wrong operator token')
  t.match(await failure(t, local('mallory').listPending()), { status: 401, code: 'credentials_invalid', details: [/not a local approver/] })
  const oidc = async (claims: Record<string, unknown>) =>
    createApiClient({ credential: { kind: 'oidc', idToken: await w.idToken('00u-carol', claims) }, fetch: recorder().fetch, baseUrl: u })
  t.match(await failure(t, (await oidc({ groups: ['everyone'], sub: '00u-mallory' })).listPending()), { status: 403, code: 'not_an_approver' })
  t.match(await failure(t, (await oidc({ amr: ['pwd'] })).approve(granted)), { status: 403, code: 'mfa_required' })
  t.match(await failure(t, (await oidc({ exp: Math.floor(Date.now() / 1000) - 3600 })).listPending()), { status: 401, code: 'credentials_invalid', details: [/ID token/] }, 'an expired ID token')

  // The grant: alice's next code for stage 1, carol's ID token for stage 2; bob revokes with his next code.
  t.match(await alice.approve(granted, { totp: nextCode(w.alice) }), { status: 'pending' })
  t.match(await (await oidc({})).approve(granted), { status: 'approved' })
  const [grant] = await bob.listActiveGrants()
  t.match(grant, { id: `g_${granted.slice(2)}`, reason: 'SUP-2' }, 'a local approver reads the grants without a TOTP code')
  t.match(await failure(t, bob.revokeGrant(grant as NonNullable<typeof grant>, { reason: 'done' })), { code: 'invalid_input' }, 'a local approver revokes with a code')
  await bob.revokeGrant(grant as NonNullable<typeof grant>, { reason: 'done', totp: nextCode(w.bob) })
  t.same(await bob.listActiveGrants(), [])
  t.match(g.audit.find((e) => e.event === 'grant.revoked'), { actor: 'bob', reason: 'done' })
})

t.test('a client refuses a credential that cannot be a header, and says so', async (t) => {
  const bad: [ConsoleCredential, RegExp][] = [
    [{ kind: 'oidc', idToken: 'not-a-jwt' }, /compact JWT/],
    [{ kind: 'oidc', idToken: 'a.b.c\r\nx-jitgate-approver: alice' }, /compact JWT/],
    [{ kind: 'local', approver: 'Alice' }, /approver id/],
    [{ kind: 'local', approver: 'alice\nx' }, /approver id/],
    [{ kind: 'local', approver: 'alice', operatorToken: 'abc def' }, /operator token/],
    [{ kind: 'bogus' } as unknown as ConsoleCredential, /Sign in/],
  ]
  for (const [credential, message] of bad) {
    t.throws(() => createApiClient({ credential, fetch: recorder().fetch }), { code: 'invalid_input', message }, JSON.stringify(credential))
  }
  const open = createApiClient({ credential: { kind: 'local', approver: 'alice' }, fetch: async (url, init) => {
    t.same(init.headers, { 'x-jitgate-approver': 'alice' }, 'no operator token: no Authorization header (a loopback control plane without one)')
    return { status: 200, ok: true, headers: { get: () => null }, text: async () => '{"requests":[]}' }
  } })
  t.same(await open.listPending(), [])
})

t.test('answers that are not the API are reported as such: network_error, bad_response', async (t) => {
  const cred: ConsoleCredential = { kind: 'local', approver: 'alice' }
  const down = createApiClient({ credential: cred, fetch: (url, init) => undiciFetch(url, init as Parameters<typeof undiciFetch>[1]), baseUrl: 'http://127.0.0.1:9' })
  t.match(await failure(t, down.listPending()), { code: 'network_error', status: 0 })
  const proxy = createApiClient({
    credential: cred,
    fetch: async () => ({ status: 502, ok: false, headers: { get: () => 'text/html' }, text: async () => '<html>Bad gateway</html>' }),
  })
  t.match(await failure(t, proxy.listPending()), { code: 'bad_response', status: 502 })
  const odd = createApiClient({ credential: cred, fetch: async () => ({ status: 200, ok: true, headers: { get: () => null }, text: async () => '[1,2]' }) })
  t.match(await failure(t, odd.getRequest('r_x')), { code: 'bad_response' })
})

t.test('the grant list is one GET /v1/grants: operator-issued and request-born grants, extended, soonest expiry first, only those the approver may revoke', async (t) => {
  // A second resource whose approval policy is crm-owners alone: alice may revoke its grants, carol not.
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const policy =
    RESOURCES +
    '  - id: billing-api\n    upstream: UPSTREAM\n    match: { path_prefix: /billing }\n    max_ttl: 8h\n' +
    principalsYaml(w, {
      entitlement: '      - resource: billing-api\n        scopes: ["GET /billing/**"]\n        max_duration: 4h\n        approval: owners-only',
      approval: '    request_ttl: 1h\n  - id: owners-only\n    stages:\n      - { group: crm-owners, approvals: 1 }\n    request_ttl: 1h',
    })
  const g = await startTestGateway(t, { policy, upstream: upstream.url, env: w.env, config: w.config })
  const u = g.controlUrl
  const approveBoth = async (id: string) => {
    await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('bob') })
    const r = await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })
    t.equal(r.json.status, 'approved')
  }
  const a = await createRequest(g, w)
  await approveBoth(a)
  const ext = await api(u, 'POST', `/v1/requests/${a}/extend`, { bearer: await w.acme.assertion() }, { duration: '30m', reason: 'more time' })
  t.equal(ext.status, 201)
  await approveBoth(ext.json.id as string)
  const b = await createRequest(g, w)
  await approveBoth(b)
  t.equal((await api(u, 'POST', `/v1/requests/${b}/relinquish`, { bearer: await w.acme.assertion() })).status, 204)
  // Straight from an operator, named in X-Jitgate-Actor: no request behind it.
  const issued = await request(`${u}/v1/grants`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'x-jitgate-actor': 'dana', 'content-type': 'application/json' },
    body: JSON.stringify({ subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/customers/*'], ttl: '10m', reason: 'INC-7 hotfix' }),
  })
  t.equal(issued.statusCode, 201)
  const direct = (await issued.body.json()) as { id: string }
  const billing = await g.issue({ resource: 'billing-api', scopes: ['GET /billing/**'], ttl: '20m' })
  const ended = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/customers/*'], ttl: '30m' })
  t.equal(await g.revoke(ended.id, 'done'), 204)

  const operatorGrant = { id: direct.id, subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/customers/*'], status: 'active', issued_by: 'operator:dana', reason: 'INC-7 hotfix', starts_at: String, expires_at: String }
  const requestGrant = { id: `g_${a.slice(2)}`, subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/customers/*'], status: 'active', issued_by: '00u-carol', reason: HOSTILE, starts_at: String, expires_at: String }
  const cases: [ConsoleCredential, object[]][] = [
    [{ kind: 'oidc', idToken: await w.idToken('00u-carol') }, [operatorGrant, requestGrant]],
    [{ kind: 'local', approver: 'alice', operatorToken: ADMIN_TOKEN }, [operatorGrant, { id: billing.id, resource: 'billing-api', issued_by: 'operator' }, requestGrant]],
  ]
  for (const [credential, expected] of cases) {
    const rec = recorder()
    const client = createApiClient({ credential, fetch: rec.fetch, baseUrl: u })
    const grants = await client.listActiveGrants()
    t.match(grants, expected, `${credential.kind}: the operator's grants and the extended request's grant it may revoke, soonest expiry first`)
    t.equal(grants.length, expected.length, `${credential.kind}: not the relinquished or revoked ones, nor one it may not revoke`)
    t.ok(Math.abs(Date.parse(grants.at(-1)?.expires_at as string) - (Date.now() + 90 * 60_000)) < 5_000, `${credential.kind}: with the extended expiry`)
    t.same(rec.calls.map((c) => `${c.method} ${c.url.slice(u.length)} ${c.headers['x-jitgate-totp'] ?? 'no code'}`), ['GET /v1/grants no code'], `${credential.kind}: one call, and a read needs no TOTP code`)
  }

  // Alice revokes the operator's grant from the list; it is gone from the next one.
  const alice = createApiClient({ credential: { kind: 'local', approver: 'alice', operatorToken: ADMIN_TOKEN }, fetch: recorder().fetch, baseUrl: u })
  const [first] = await alice.listActiveGrants()
  await alice.revokeGrant(first as NonNullable<typeof first>, { reason: 'hotfix done', totp: w.alice.code() })
  t.same((await alice.listActiveGrants()).map((x) => x.id), [billing.id, `g_${a.slice(2)}`])
  t.match(g.audit.find((e) => e.event === 'grant.revoked' && e.grant_id === direct.id), { actor: 'alice', reason: 'hotfix done' })
  t.match(await failure(t, alice.revokeGrant(first as NonNullable<typeof first>, { reason: 'again', totp: nextCode(w.alice) })), { status: 409, code: 'grant_already_revoked', details: [/hotfix done/], requestId: /^[0-9a-f-]{36}$/ })
})

t.test('the grant list: refusals carry the API code; an answer without a list of grants is bad_response', async (t) => {
  const { w, u } = await setup(t)
  const outsider = createApiClient({ credential: { kind: 'oidc', idToken: await w.idToken('00u-mallory', { groups: ['everyone'] }) }, fetch: recorder().fetch, baseUrl: u })
  t.match(await failure(t, outsider.listActiveGrants()), { status: 403, code: 'not_an_approver', requestId: /^[0-9a-f-]{36}$/ })
  const stranger = createApiClient({ credential: { kind: 'local', approver: 'mallory', operatorToken: ADMIN_TOKEN }, fetch: recorder().fetch, baseUrl: u })
  t.match(await failure(t, stranger.listActiveGrants()), { status: 401, code: 'credentials_invalid' })

  const answering = (body: string) =>
    createApiClient({ credential: { kind: 'local', approver: 'alice' }, fetch: async () => ({ status: 200, ok: true, headers: { get: () => null }, text: async () => body }) })
  for (const body of ['{}', '{"grants":{}}', '{"grants":[null]}', '{"grants":[{"subject":"acme"}]}']) {
    t.match(await failure(t, answering(body).listActiveGrants()), { code: 'bad_response', message: 'The answer is not a list of grants.' }, body)
  }
  t.same(await answering('{"grants":[]}').listActiveGrants(), [], 'an empty list')
  const down = createApiClient({ credential: { kind: 'local', approver: 'alice' }, fetch: (url, init) => undiciFetch(url, init as Parameters<typeof undiciFetch>[1]), baseUrl: 'http://127.0.0.1:9' })
  t.match(await failure(t, down.listActiveGrants()), { code: 'network_error', status: 0 })
})

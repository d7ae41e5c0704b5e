/**
 * The console page as a whole: index.html built into a DOM stand-in (fake-dom.ts), app.js run on
 * it as the browser would (with `document` and `fetch` as globals, fetch going to a real
 * gateway), and an approver's session driven through its forms and buttons: sign in as a local
 * approver, read the pending request, open it, approve with a TOTP code, see the grant, revoke it,
 * meet an error, sign out; and the grant list (`GET /v1/grants`) with a grant an operator issued
 * and one from a request, revoked from the list, and its errors. This checks the wiring between
 * the page and its scripts; the calls themselves are checked exactly in api-client.test.ts.
 */
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { fetch as undiciFetch, request } from 'undici'
import { startTestGateway, call, ADMIN_TOKEN } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { api, makeWorld, principalsYaml } from '../helpers/workflow.js'
import { CONSOLE_STATIC_DIR } from '../../scripts/console-assets.js'
import { FakeDocument, type FakeElement } from './fake-dom.js'

const RESOURCES = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 8h
`
const HOSTILE = `<img src=x onerror="alert(1)"><script>alert(2)</script>`

/** Waits for the page to settle after a user action (its handlers run asynchronously). */
async function until(what: string, ok: () => boolean): Promise<void> {
  const deadline = Date.now() + 5_000
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 10))
  }
}

interface Page {
  readonly doc: FakeDocument
  /** `METHOD /path` of each call the page made. */
  readonly calls: string[]
  /** Answers for the page's next calls matching `METHOD /path`, used once each instead of the gateway's. */
  readonly faults: { match: string; answer: () => Promise<Response> }[]
  $(id: string): FakeElement
  /** The error shown, or ''. */
  errorText(): string
}

let pages = 0

/**
 * index.html in the DOM stand-in, and app.js run on it with `document` and `fetch` as globals:
 * the page's calls, relative to its origin, go to the gateway's control plane (or to a fault).
 * Each page loads its own instance of app.js, so its listeners are on its own document.
 */
async function openPage(t: Test, controlUrl: string): Promise<Page> {
  const doc = new FakeDocument(readFileSync(`${CONSOLE_STATIC_DIR}index.html`, 'utf8'))
  const calls: string[] = []
  const faults: Page['faults'] = []
  const globals = globalThis as unknown as Record<string, unknown>
  const saved = { document: globals.document, fetch: globals.fetch }
  t.teardown(() => Object.assign(globals, saved))
  globals.document = doc
  // The gateway runs in this process too and fetches the IdP's JWKS with absolute URLs: those
  // pass through.
  const nodeFetch = saved.fetch as typeof undiciFetch
  globals.fetch = (url: string | URL, init: Parameters<typeof undiciFetch>[1]) => {
    if (typeof url !== 'string' || !url.startsWith('/')) return nodeFetch(url, init)
    const call = `${init?.method} ${url}`
    calls.push(call)
    const fault = faults.findIndex((f) => f.match === call)
    if (fault >= 0) return faults.splice(fault, 1)[0]?.answer()
    return undiciFetch(`${controlUrl}${url}`, init)
  }
  const $ = (id: string) => doc.getElementById(id) as FakeElement
  await import(`${pathToFileURL(`${CONSOLE_STATIC_DIR}app.js`).href}${pages++ === 0 ? '' : `?page=${pages}`}`)
  return { doc, calls, faults, $, errorText: () => ($('error').hidden ? '' : $('error').textContent) }
}

/** Signs in as a local approver with the operator token, and waits for both lists. */
async function signInLocal(page: Page, approver: string): Promise<void> {
  const { doc, $ } = page
  ;(doc.querySelector('input[value=local]') as FakeElement).checked = true
  ;(doc.querySelector('input[value=oidc]') as FakeElement).checked = false
  $('sign-in-form').dispatch('change')
  $('approver').value = approver
  $('operator-token').value = ADMIN_TOKEN
  $('sign-in-form').dispatch('submit')
  await until('the workspace', () => !$('workspace').hidden && $('pending-list').textContent !== '' && $('grants-list').textContent !== '')
}

t.test("an approver's session in the page: sign in, open, approve with TOTP, revoke, an error, sign out", async (t) => {
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: RESOURCES + principalsYaml(w), upstream: upstream.url, env: w.env, config: w.config })
  const created = await api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, { resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration: '1h', reason: HOSTILE })
  const id = created.json.id as string

  const { doc, calls, $, errorText } = await openPage(t, g.controlUrl)
  t.equal($('sign-in').hidden, false, 'the sign-in form first')
  t.equal($('workspace').hidden, true)
  t.equal($('local-fields').hidden, true, 'ID token sign-in by default')

  // Sign in as alice, a local approver.
  ;(doc.querySelector('input[value=local]') as FakeElement).checked = true
  ;(doc.querySelector('input[value=oidc]') as FakeElement).checked = false
  $('sign-in-form').dispatch('change')
  t.equal($('local-fields').hidden, false)
  t.equal($('oidc-fields').hidden, true)
  $('approver').value = 'alice'
  $('operator-token').value = ADMIN_TOKEN
  t.ok($('sign-in-form').dispatch('submit').defaultPrevented, 'the form is never submitted natively')
  t.equal($('operator-token').value, '', 'the token leaves the input at once')
  await until('the workspace', () => !$('workspace').hidden && $('pending-list').textContent !== '' && $('grants-list').textContent !== '')
  t.equal(errorText(), '')
  t.equal($('sign-in').hidden, true)
  t.match($('who-text').textContent, 'Signed in as alice (local approver)')
  t.ok(doc.querySelectorAll('.totp').every((e) => !e.hidden), 'the TOTP fields are shown')

  // The pending request, with the requester's reason as text.
  const row = $('pending-list').querySelectorAll('tr').find((r) => r.getAttribute('data-request-id') === id)
  t.ok(row, 'the pending request is listed')
  t.ok(row?.texts().includes(HOSTILE), 'its reason is a text node')
  t.notOk(doc.created.includes('img') || doc.created.includes('script'), 'no element came from data')
  t.equal($('grants-list').textContent, 'No active grant that you may revoke.')

  // Open it; approving without a code is refused before anything is sent.
  row?.querySelector('button')?.click()
  await until('the request', () => !$('detail').hidden)
  t.ok($('detail-body').textContent.includes(id))
  t.equal($('decide-form').hidden, false)
  const sent = calls.length
  $('decide-form').dispatch('submit', { value: 'approve' })
  await until('the error', () => errorText() !== '')
  t.match(errorText(), /^invalid_input: Enter the 6-digit code/)
  t.equal(calls.length, sent, 'nothing was sent')

  // Approve stage 1 with a comment and alice's code.
  $('decide-comment').value = 'ok <b>'
  $('decide-totp').value = w.alice.code()
  $('decide-form').dispatch('submit', { value: 'approve' })
  t.equal($('decide-totp').value, '', 'the code leaves the input at once')
  await until('the notice', () => !$('notice').hidden)
  t.equal($('notice').textContent, 'Approval recorded; the request waits for its next stage.')
  t.equal(errorText(), '', 'the earlier error is gone')
  t.ok($('detail-body').textContent.includes('alice at'), 'the detail shows the approval')
  t.ok($('detail-body').texts().includes('ok <b>'), 'and its comment, as text')

  // Stage 2 elsewhere (an OIDC approver); Refresh shows the grant.
  t.equal((await api(g.controlUrl, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })).json.status, 'approved')
  const token = (await api(g.controlUrl, 'GET', `/v1/requests/${id}`, { bearer: await w.acme.assertion() })).json.token as string
  $('refresh').click()
  await until('the grant', () => $('grants-list').querySelectorAll('tr').length === 2)
  t.equal($('pending-list').textContent, 'No request is waiting for a decision.')
  const grantRow = $('grants-list').querySelectorAll('tr')[1] as FakeElement
  t.equal(grantRow.getAttribute('data-grant-id'), `g_${id.slice(2)}`)

  // The grant names the request it came out of: its Request button shows that request.
  const buttonIn = (row: FakeElement | undefined, label: string) => row?.querySelectorAll('button').find((b) => b.textContent === label)
  $('detail').hidden = true
  buttonIn(grantRow, 'Request')?.click()
  await until('the request again', () => !$('detail').hidden)
  t.ok($('detail-body').textContent.includes(id), 'the Request button opens the request the grant came out of')
  t.equal($('decide-form').hidden, true, 'decided already: nothing to approve')

  // Revoke: without a reason an error, then with a reason and alice's next code (this one is used).
  buttonIn(grantRow, 'Revoke…')?.click()
  t.equal($('revoke').hidden, false)
  t.ok($('revoke-reason').focused)
  t.ok($('revoke-summary').textContent.includes(`g_${id.slice(2)}`))
  $('revoke-form').dispatch('submit')
  await until('the error', () => errorText() !== '')
  t.match(errorText(), /^invalid_input: A revocation needs a reason/)
  $('revoke-reason').value = 'vendor offboarded'
  const revokeCode = w.alice.code(Date.now() + 30_000)
  $('revoke-totp').value = revokeCode
  $('revoke-form').dispatch('submit')
  await until('the notice', () => !$('notice').hidden)
  t.equal($('notice').textContent, `Revoked grant g_${id.slice(2)}.`)
  t.equal($('revoke').hidden, true)
  await until('the empty list', () => $('grants-list').textContent === 'No active grant that you may revoke.')
  t.match(await call(`${g.dataUrl}/crm/customers/1`, { token }), { status: 403, json: { error: { code: 'grant_revoked' } } })

  // An API refusal shows its code, message and request id: a code that was already used.
  const second = await api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, { resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration: '1h', reason: 'again' })
  $('refresh').click()
  await until('the second request', () => $('pending-list').querySelectorAll('tr').length === 2)
  $('pending-list').querySelectorAll('tr')[1]?.querySelector('button')?.click()
  await until('the request', () => $('detail-body').textContent.includes(second.json.id as string))
  $('decide-totp').value = revokeCode
  $('decide-form').dispatch('submit', { value: 'deny' })
  await until('the error', () => errorText() !== '')
  t.match(errorText(), /^mfa_invalid \(HTTP 403\): The TOTP code is wrong, out of its time window, or already used\..*request id [0-9a-f-]{36}$/)

  // Sign out: nothing of the session stays on the page.
  $('sign-out').click()
  t.equal($('workspace').hidden, true)
  t.equal($('sign-in').hidden, false)
  t.equal($('who').hidden, true)
  for (const list of ['pending-list', 'grants-list', 'detail-body', 'who-text']) t.equal($(list).textContent, '', `${list} emptied`)

  t.ok(calls.every((c) => / \/v1\/requests/.test(c) || c === 'GET /v1/grants' || /^DELETE \/v1\/grants\//.test(c)), 'the page only ever called the access-request API, the grant list, and revoke')
  t.ok(calls.some((c) => /^DELETE \/v1\/grants\/g_/.test(c)), 'it revoked through DELETE /v1/grants/{id}')
})

t.test('the grant list in the page: operator-issued and request-born grants from one call, revoke from the list, errors shown', async (t) => {
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: RESOURCES + principalsYaml(w), upstream: upstream.url, env: w.env, config: w.config })
  const u = g.controlUrl
  // A grant from an access request (bob, then carol, with ID tokens)...
  const id = (await api(u, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, { resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration: '1h', reason: HOSTILE })).json.id as string
  await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('bob') })
  t.equal((await api(u, 'POST', `/v1/requests/${id}/approve`, { bearer: await w.idToken('00u-carol') })).json.status, 'approved')
  const fromRequest = `g_${id.slice(2)}`
  // ...and one an operator issued directly, with no request behind it.
  const issued = await request(`${u}/v1/grants`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'x-jitgate-actor': 'dana', 'content-type': 'application/json' },
    body: JSON.stringify({ subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/tickets/**'], ttl: '10m', reason: 'INC-7 hotfix' }),
  })
  t.equal(issued.statusCode, 201)
  const direct = (await issued.body.json()) as { id: string; token: string }

  const page = await openPage(t, u)
  const { calls, faults, $, errorText } = page
  await signInLocal(page, 'alice')
  t.equal(errorText(), '')
  const rows = () => $('grants-list').querySelectorAll('tr').slice(1)
  const cells = (row: FakeElement | undefined) => (row?.children ?? []).map((c) => c.textContent)
  t.same(rows().map((r) => r.getAttribute('data-grant-id')), [direct.id, fromRequest], 'both grants, soonest expiry first')
  const [operatorRow, requestRow] = rows()
  t.match(cells(operatorRow), ['acme', 'crm-api', 'GET /crm/tickets/**', 'INC-7 hotfix', 'operator:dana', /^in (10m(\d+s)?|9m\d+s)$/, direct.id, 'Revoke…'], 'the operator-issued grant')
  t.match(cells(requestRow), ['acme', 'crm-api', 'GET /crm/customers/*', HOSTILE, '00u-carol', /^in (1h(\d+s)?|59m(\d+s)?)$/, fromRequest, 'RequestRevoke…'], 'the request-born grant')
  t.ok(requestRow?.texts().includes(HOSTILE), "the requester's reason is a text node")
  t.same(calls.filter((c) => c.includes('/v1/grants') || c.includes('status=approved') || /\/v1\/requests\/r_/.test(c)), ['GET /v1/grants'], 'the list is one call, and no request is read for it')

  // Revoke the operator's grant from the list, with alice's code.
  t.equal(operatorRow?.querySelectorAll('button').length, 1, 'an operator-issued grant names no request')
  operatorRow?.querySelector('button')?.click()
  t.equal($('revoke').hidden, false)
  t.equal($('revoke-summary').textContent, `Grant ${direct.id} of acme on crm-api, issued by operator:dana: the next request with its token is refused.`)
  $('revoke-reason').value = 'hotfix shipped'
  $('revoke-totp').value = w.alice.code()
  $('revoke-form').dispatch('submit')
  await until('the notice', () => !$('notice').hidden)
  t.equal($('notice').textContent, `Revoked grant ${direct.id}.`)
  await until('the shorter list', () => rows().length === 1)
  t.same(rows().map((r) => r.getAttribute('data-grant-id')), [fromRequest])
  t.ok(calls.includes(`DELETE /v1/grants/${direct.id}`))
  t.match(await call(`${g.dataUrl}/crm/tickets/1`, { token: direct.token }), { status: 403, json: { error: { code: 'grant_revoked' } } })
  t.match(g.audit.find((e) => e.event === 'grant.revoked' && e.grant_id === direct.id), { actor: 'alice', reason: 'hotfix shipped' })

  // An API refusal from the list: the grant was revoked elsewhere while the form was open.
  rows()[0]?.querySelectorAll('button').find((b) => b.textContent === 'Revoke…')?.click()
  t.equal(await g.revoke(fromRequest, 'closed elsewhere'), 204)
  $('revoke-reason').value = 'done'
  $('revoke-totp').value = w.alice.code(Date.now() + 30_000)
  $('revoke-form').dispatch('submit')
  await until('the error', () => errorText() !== '')
  t.match(errorText(), /^grant_already_revoked \(HTTP 409\): .*revoked by operator at \S+: closed elsewhere.*request id [0-9a-f-]{36}$/)
  t.equal($('revoke').hidden, false, 'the form stays open with the refusal')
  $('cancel-revoke').click()

  // Answers that are not the API's: the grant list is emptied rather than left stale, the pending list still shown.
  faults.push({ match: 'GET /v1/grants', answer: async () => new Response('<html>Bad gateway</html>', { status: 502, headers: { 'content-type': 'text/html' } }) })
  $('refresh').click()
  await until('the error', () => errorText() !== '')
  t.equal(errorText(), 'bad_response (HTTP 502): HTTP 502 without an API error body.')
  t.equal($('grants-list').textContent, 'The grants could not be read: see the error above.')
  t.equal($('pending-list').textContent, 'No request is waiting for a decision.')
  await until('the buttons', () => !$('refresh').disabled)
  faults.push({ match: 'GET /v1/grants', answer: () => Promise.reject(new TypeError('fetch failed')) })
  $('refresh').click()
  await until('the error', () => errorText() !== '')
  t.equal(errorText(), 'network_error: The control plane could not be reached.')
  await until('the buttons', () => !$('refresh').disabled)
  $('refresh').click()
  await until('the list', () => $('grants-list').textContent === 'No active grant that you may revoke.')
  t.equal(errorText(), '', 'a good answer clears the error')
})

/**
 * The console page as a whole: index.html built into a DOM stand-in (fake-dom.ts), app.js run on
 * it as the browser would (with `document` and `fetch` as globals, fetch going to a real
 * gateway), and an approver's session driven through its forms and buttons: sign in as a local
 * approver, read the pending request, open it, approve with a TOTP code, see the grant, revoke it,
 * meet an error, sign out. This checks the wiring between the page and its scripts; the calls
 * themselves are checked exactly in api-client.test.ts.
 */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { fetch as undiciFetch } from 'undici'
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

t.test("an approver's session in the page: sign in, open, approve with TOTP, revoke, an error, sign out", async (t) => {
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: RESOURCES + principalsYaml(w), upstream: upstream.url, env: w.env, config: w.config })
  const created = await api(g.controlUrl, 'POST', '/v1/requests', { bearer: await w.acme.assertion() }, { resource: 'crm-api', scopes: ['GET /crm/customers/*'], duration: '1h', reason: HOSTILE })
  const id = created.json.id as string

  const doc = new FakeDocument(readFileSync(`${CONSOLE_STATIC_DIR}index.html`, 'utf8'))
  const calls: string[] = []
  const globals = globalThis as unknown as Record<string, unknown>
  const saved = { document: globals.document, fetch: globals.fetch }
  t.teardown(() => Object.assign(globals, saved))
  globals.document = doc
  // The page's calls are relative to its origin: here, the control plane's. The gateway runs in
  // this process too and fetches the IdP's JWKS with absolute URLs: those pass through.
  const nodeFetch = saved.fetch as typeof undiciFetch
  globals.fetch = (url: string | URL, init: Parameters<typeof undiciFetch>[1]) => {
    if (typeof url !== 'string' || !url.startsWith('/')) return nodeFetch(url, init)
    calls.push(`${init?.method} ${url}`)
    return undiciFetch(`${g.controlUrl}${url}`, init)
  }
  const $ = (id: string) => doc.getElementById(id) as FakeElement
  const errorText = () => ($('error').hidden ? '' : $('error').textContent)

  await import(pathToFileURL(`${CONSOLE_STATIC_DIR}app.js`).href)
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
  t.equal($('grants-list').textContent, 'No active grant from an access request.')

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

  // Revoke: without a reason an error, then with a reason and alice's next code (this one is used).
  grantRow.querySelector('button')?.click()
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
  await until('the empty list', () => $('grants-list').textContent === 'No active grant from an access request.')
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

  t.ok(calls.every((c) => / \/v1\/requests/.test(c) || /^DELETE \/v1\/grants\//.test(c)), 'the page only ever called the access-request API, and revoke')
  t.ok(calls.some((c) => /^DELETE \/v1\/grants\/g_/.test(c)), 'it revoked through DELETE /v1/grants/{id}')
})

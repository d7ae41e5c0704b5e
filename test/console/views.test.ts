/**
 * The console's views (src/console/static/views.js, as the browser runs it) on a small stand-in
 * for the DOM that has no HTML parser at all (fake-dom.ts): values a requester controls come out as text nodes,
 * every element is one the view chose, and the formatters say what approvers read.
 */
import t, { type Test } from 'tap'
import { FakeDocument, type FakeElement } from './fake-dom.js'
import { el, errorView, formatAge, formatDuration, formatProgress, formatRemaining, grantsTable, pendingTable, requestDetail, type ViewDocument } from '../../src/console/static/views.js'

const doc = new FakeDocument('') satisfies ViewDocument

const HOSTILE = `<img src=x onerror="alert(1)"></td><script>alert(2)</script>`
const NOW = Date.parse('2026-12-03T12:00:00Z')
const ago = (ms: number) => new Date(NOW - ms).toISOString()

const REQUEST = {
  id: 'r_AAAAAAAAAAAAAAAAAAAAAA',
  kind: 'access',
  status: 'pending',
  subject: 'acme',
  resource: 'crm-api',
  scopes: ['GET /crm/customers/*', HOSTILE],
  duration_s: 5400,
  reason: HOSTILE,
  ticket: `T-1"><svg onload=alert(3)>`,
  approval_policy: 'two-stage',
  stages: [
    { group: 'crm-owners', approvals_required: 1, approvals: [{ approver: 'alice', at: ago(60_000), comment: HOSTILE }] },
    { group: 'security', approvals_required: 2, approvals: [] },
  ],
  created_at: ago(25 * 60_000),
  expires_at: new Date(NOW + 35 * 60_000).toISOString(),
  grant_id: 'g_AAAAAAAAAAAAAAAAAAAAAA',
}

/** The tags and attribute names the views may create: nothing from data. */
const TAGS = new Set(['table', 'thead', 'tbody', 'tr', 'th', 'td', 'ul', 'ol', 'li', 'code', 'button', 'span', 'p', 'div', 'dl', 'dt', 'dd', 'strong', 'q'])
const ATTRIBUTES = new Set(['class', 'type', 'scope', 'title', 'data-request-id', 'data-grant-id'])

function checkInert(t: Test, root: FakeElement, what: string): void {
  const elements = root.all()
  t.same(elements.filter((e) => !TAGS.has(e.tagName)).map((e) => e.tagName), [], `${what}: only the views' own elements`)
  t.same(elements.flatMap((e) => [...e.attributes.keys()]).filter((a) => !ATTRIBUTES.has(a)), [], `${what}: only the views' own attributes`)
}

t.test('a pending request: every field shown, hostile values as text, Open calls back with the id', async (t) => {
  const opened: string[] = []
  const table = pendingTable(doc, [REQUEST], NOW, { onOpen: (id) => opened.push(id) }) as unknown as FakeElement
  checkInert(t, table, 'pending table')
  t.equal(table.tagName, 'table')
  const row = table.all().find((e) => e.tagName === 'tr' && e.attributes.has('data-request-id')) as FakeElement
  t.equal(row.attributes.get('data-request-id'), REQUEST.id)
  const cells = row.children.map((c) => c.textContent)
  t.same(cells, ['acme', 'crm-api', `GET /crm/customers/*${HOSTILE}`, '1h30m', HOSTILE, REQUEST.ticket, 'stage 2 of 2: security 0/2', '25m ago', 'Open'])
  t.ok(table.texts().includes(HOSTILE), 'the reason is one text node holding exactly what the requester wrote')
  table.all().find((e) => e.tagName === 'button')?.click()
  t.same(opened, [REQUEST.id])

  const others = pendingTable(doc, [{ ...REQUEST, kind: 'break_glass' }], NOW, { onOpen: () => {} }) as unknown as FakeElement
  t.match(others.all().find((e) => e.attributes.get('class') === 'tag')?.textContent, 'break-glass', 'the kind is shown when it is not a plain access request')
  t.equal((pendingTable(doc, [], NOW, { onOpen: () => {} }) as unknown as FakeElement).textContent, 'No request is waiting for a decision.')
})

t.test('one request in full: stages, approvals and their comments, all as text', async (t) => {
  const view = requestDetail(doc, REQUEST, NOW) as unknown as FakeElement
  checkInert(t, view, 'request detail')
  const text = view.textContent
  for (const part of ['acme', 'crm-api', '1h30m', 'two-stage', 'stage 2 of 2: security 0/2', 'Stage 1: crm-owners', '1 of 1 approvals', 'Stage 2: security', '0 of 2 approvals', 'in 35m', '25m ago']) {
    t.ok(text.includes(part), `shows ${part}`)
  }
  const comment = view.all().find((e) => e.tagName === 'q') as FakeElement
  t.same(comment.texts(), [HOSTILE], "an approver's comment is text")
})

t.test('active grants: rows for an operator-issued grant and a request-born one, the Revoke button calling back with the grant, the Request button with its request', async (t) => {
  // As GET /v1/grants shows them (src/control/server.ts, grantView).
  const direct = { id: 'g_OP', subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/**'], status: 'active', starts_at: ago(0), expires_at: new Date(NOW + 600_000).toISOString(), issued_by: 'operator:dana', reason: 'INC-7 hotfix' }
  const fromRequest = { id: 'g_B', subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/**'], status: 'active', starts_at: ago(0), expires_at: new Date(NOW + 3_600_000).toISOString(), issued_by: 'carol', reason: HOSTILE, policy_version: 'v1', access_request_id: 'r_B' }
  const revoked: unknown[] = []
  const opened: string[] = []
  const table = grantsTable(doc, [direct, fromRequest], NOW, { onRevoke: (g) => revoked.push(g), onOpenRequest: (id) => opened.push(id) }) as unknown as FakeElement
  checkInert(t, table, 'grants table')
  t.same(
    table.all().find((e) => e.tagName === 'thead')?.all().filter((e) => e.tagName === 'th').map((e) => e.textContent),
    ['Sub-processor', 'Resource', 'Scopes', 'Reason', 'Issued by', 'Expires', 'Grant', ''],
  )
  const row = (id: string) => table.all().find((e) => e.attributes.get('data-grant-id') === id) as FakeElement
  t.same(row('g_OP').children.map((c) => c.textContent), ['acme', 'crm-api', 'GET /crm/**', 'INC-7 hotfix', 'operator:dana', 'in 10m', 'g_OP', 'Revoke…'])
  t.same(row('g_B').children.map((c) => c.textContent), ['acme', 'crm-api', 'GET /crm/**', HOSTILE, 'carol', 'in 1h', 'g_B', 'RequestRevoke…'])
  t.ok(row('g_B').texts().includes(HOSTILE), 'the reason is one text node')
  const button = (id: string, label: string) => row(id).all().find((e) => e.tagName === 'button' && e.textContent === label) as FakeElement
  button('g_B', 'Revoke…').click()
  button('g_OP', 'Revoke…').click()
  t.same(revoked, [fromRequest, direct])
  t.equal(button('g_OP', 'Request'), undefined, 'an operator-issued grant names no request')
  button('g_B', 'Request').click()
  t.same(opened, ['r_B'], 'a request-born grant opens its request')
  t.same(revoked, [fromRequest, direct], 'without revoking anything')

  const noReason = grantsTable(doc, [{ ...direct, reason: undefined }], NOW, { onRevoke: () => {} }) as unknown as FakeElement
  t.equal(noReason.all().find((e) => e.attributes.get('class') === 'reason')?.textContent, '', 'an operator grant without a reason')
  t.equal((grantsTable(doc, [], NOW, { onRevoke: () => {} }) as unknown as FakeElement).textContent, 'No active grant that you may revoke.')
})

t.test('an unclaimed grant (claim-by window) says so next to its expiry', async (t) => {
  const claimBy = new Date(NOW + 20 * 60_000).toISOString()
  const grant = { id: 'g_C', subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/**'], status: 'active', starts_at: ago(0), expires_at: claimBy, issued_by: 'carol', claim: { status: 'unclaimed', claim_by: claimBy, duration_s: 3600, not_after: new Date(NOW + 80 * 60_000).toISOString() } }
  const table = grantsTable(doc, [grant], NOW, { onRevoke: () => {} }) as unknown as FakeElement
  checkInert(t, table, 'grants table')
  const tag = table.all().find((e) => e.attributes.get('class') === 'tag') as FakeElement
  t.equal(tag.textContent, 'unclaimed')
  t.equal(tag.attributes.get('title'), 'Not used yet: it ends then unless it is used first; once used, it lasts 1h.')
  t.equal(tag.parent?.textContent, 'in 20munclaimed')
  const claimed = grantsTable(doc, [{ ...grant, claim: { ...grant.claim, status: 'claimed', claimed_at: ago(0) } }], NOW, { onRevoke: () => {} }) as unknown as FakeElement
  t.notOk(claimed.all().some((e) => e.attributes.get('class') === 'tag'), 'a claimed grant has no tag')
})

t.test("an API error shows its code, status, message, details and request id", async (t) => {
  const view = errorView(doc, { code: 'invalid_request', status: 400, message: 'The request body is invalid.', details: [HOSTILE], requestId: 'req-1' }) as unknown as FakeElement
  checkInert(t, view, 'error')
  t.equal(view.textContent, `invalid_request (HTTP 400): The request body is invalid.${HOSTILE}request id req-1`)
  t.equal((errorView(doc, { code: 'network_error', status: 0, message: 'The control plane could not be reached.' }) as unknown as FakeElement).textContent, 'network_error: The control plane could not be reached.')
})

t.test('el: attributes and children', async (t) => {
  const node = el(doc, 'button', { type: 'button', disabled: true, hidden: false, title: undefined }, 'a', null, ['b', undefined]) as unknown as FakeElement
  t.same([...node.attributes], [['type', 'button'], ['disabled', '']])
  t.same(node.texts(), ['a', 'b'])
})

t.test('formatters', async (t) => {
  t.same([0, 45, 60, 5400, 86_400, 90_061, 7 * 86_400 + 5].map(formatDuration), ['0s', '45s', '1m', '1h30m', '1d', '1d1h', '7d5s'])
  t.equal(formatAge(ago(10_000), NOW), 'just now')
  t.equal(formatAge(ago(2 * 3_600_000 + 600_000), NOW), '2h10m ago')
  t.equal(formatAge('not a date', NOW), '?')
  t.equal(formatRemaining(new Date(NOW + 42 * 60_000).toISOString(), NOW), 'in 42m')
  t.equal(formatRemaining(ago(1), NOW), 'ended')
  t.equal(formatProgress({ stages: [{ group: 'a', approvals_required: 1, approvals: [{}] }, { group: 'b', approvals_required: 1, approvals: [{}] }] }), '2 of 2 stages approved')
  t.equal(formatProgress({ stages: [{ group: 'a', approvals_required: 2, approvals: [{}] }, { group: 'b', approvals_required: 1, approvals: [] }] }), 'stage 1 of 2: a 1/2')
})

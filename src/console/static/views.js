/**
 * What the console shows, built with DOM calls only: every value from the API (a requester's
 * reason, a ticket, a comment) becomes a text node or an attribute value, never markup, so a
 * reason such as `<img src=x onerror=...>` is shown as exactly those characters. No function
 * here parses HTML. `doc` is the page's document (tests pass a small stand-in).
 */

/**
 * An element: `attrs` are attributes (`class` included), `children` strings (text nodes) or
 * nodes; null and undefined are skipped.
 */
export function el(doc, tag, attrs, ...children) {
  const node = doc.createElement(tag)
  for (const [name, value] of Object.entries(attrs ?? {})) {
    if (value !== undefined && value !== null && value !== false) node.setAttribute(name, value === true ? '' : String(value))
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue
    node.append(typeof child === 'string' ? doc.createTextNode(child) : child)
  }
  return node
}

/** `5400` → `1h30m`, `86400` → `1d`, `45` → `45s`. */
export function formatDuration(seconds) {
  let s = Math.max(0, Math.round(seconds))
  if (s === 0) return '0s'
  const parts = []
  for (const [unit, size] of [['d', 86_400], ['h', 3_600], ['m', 60], ['s', 1]]) {
    if (s >= size) {
      parts.push(`${Math.floor(s / size)}${unit}`)
      s %= size
    }
  }
  return parts.slice(0, 2).join('')
}

/** How long ago an ISO instant was: `just now`, `4m ago`, `2h10m ago`. */
export function formatAge(iso, nowMs) {
  const ms = nowMs - Date.parse(iso)
  if (Number.isNaN(ms)) return '?'
  return ms < 60_000 ? 'just now' : `${formatDuration(ms / 1000)} ago`
}

/** How long until an ISO instant: `in 42m`, or `ended`. */
export function formatRemaining(iso, nowMs) {
  const ms = Date.parse(iso) - nowMs
  if (Number.isNaN(ms)) return '?'
  return ms <= 0 ? 'ended' : `in ${formatDuration(ms / 1000)}`
}

/**
 * The approval progress of a request: stages done out of all, and the stage it waits for.
 * @returns {{ done: number, total: number, current?: { index: number, group: string, have: number, need: number } }}
 */
export function stageProgress(r) {
  const stages = Array.isArray(r.stages) ? r.stages : []
  let done = 0
  let current
  for (const [i, s] of stages.entries()) {
    const have = Array.isArray(s.approvals) ? s.approvals.length : 0
    if (have >= s.approvals_required) done++
    else if (current === undefined) current = { index: i + 1, group: String(s.group), have, need: s.approvals_required }
  }
  return { done, total: stages.length, ...(current !== undefined ? { current } : {}) }
}

/** `stage 1 of 2: crm-owners 0/1`, or `2 of 2 stages approved`. */
export function formatProgress(r) {
  const p = stageProgress(r)
  if (p.current === undefined) return `${p.done} of ${p.total} stages approved`
  return `stage ${p.current.index} of ${p.total}: ${p.current.group} ${p.current.have}/${p.current.need}`
}

const scopeList = (doc, scopes) => el(doc, 'ul', { class: 'scopes' }, (Array.isArray(scopes) ? scopes : []).map((s) => el(doc, 'li', {}, el(doc, 'code', {}, String(s)))))

const text = (v) => (v === undefined || v === null ? '' : String(v))

function table(doc, headings, rows, empty) {
  if (rows.length === 0) return el(doc, 'p', { class: 'empty' }, empty)
  return el(
    doc,
    'table',
    {},
    el(doc, 'thead', {}, el(doc, 'tr', {}, headings.map((h) => el(doc, 'th', { scope: 'col' }, h)))),
    el(doc, 'tbody', {}, rows),
  )
}

/**
 * The pending requests: requester, resource, scopes, duration, reason, ticket, stage progress,
 * age, and a button that calls `onOpen(id)`.
 */
export function pendingTable(doc, requests, nowMs, { onOpen }) {
  const rows = requests.map((r) => {
    const open = el(doc, 'button', { type: 'button', class: 'secondary' }, 'Open')
    open.addEventListener('click', () => onOpen(String(r.id)))
    return el(
      doc,
      'tr',
      { 'data-request-id': text(r.id) },
      el(doc, 'td', {}, text(r.subject), r.kind !== 'access' ? el(doc, 'span', { class: 'tag' }, text(r.kind).replace('_', '-')) : null),
      el(doc, 'td', {}, text(r.resource)),
      el(doc, 'td', {}, scopeList(doc, r.scopes)),
      el(doc, 'td', {}, formatDuration(r.duration_s)),
      el(doc, 'td', { class: 'reason' }, text(r.reason)),
      el(doc, 'td', {}, text(r.ticket)),
      el(doc, 'td', {}, formatProgress(r)),
      el(doc, 'td', { title: text(r.created_at) }, formatAge(r.created_at, nowMs)),
      el(doc, 'td', {}, open),
    )
  })
  return table(doc, ['Requester', 'Resource', 'Scopes', 'Duration', 'Reason', 'Ticket', 'Progress', 'Age', ''], rows, 'No request is waiting for a decision.')
}

function field(doc, label, ...value) {
  return [el(doc, 'dt', {}, label), el(doc, 'dd', {}, ...value)]
}

/** One request in full: its fields, and each stage with the approvals it has. */
export function requestDetail(doc, r, nowMs) {
  const stages = (Array.isArray(r.stages) ? r.stages : []).map((s, i) =>
    el(
      doc,
      'li',
      {},
      el(doc, 'strong', {}, `Stage ${i + 1}: ${text(s.group)}`),
      ` ${Array.isArray(s.approvals) ? s.approvals.length : 0} of ${text(s.approvals_required)} approvals`,
      el(
        doc,
        'ul',
        {},
        (Array.isArray(s.approvals) ? s.approvals : []).map((a) =>
          el(doc, 'li', {}, `${text(a.approver)} at ${text(a.at)}`, a.comment !== undefined ? el(doc, 'q', {}, text(a.comment)) : null),
        ),
      ),
    ),
  )
  return el(
    doc,
    'div',
    { class: 'request' },
    el(
      doc,
      'dl',
      {},
      field(doc, 'Request', el(doc, 'code', {}, text(r.id)), ` (${text(r.kind)}, ${text(r.status)})`),
      field(doc, 'Requester', text(r.subject)),
      field(doc, 'Resource', text(r.resource)),
      field(doc, 'Scopes', scopeList(doc, r.scopes)),
      field(doc, 'Duration', formatDuration(r.duration_s)),
      field(doc, 'Reason', el(doc, 'span', { class: 'reason' }, text(r.reason))),
      field(doc, 'Ticket', text(r.ticket) || '—'),
      r.extends !== undefined ? field(doc, 'Extends', el(doc, 'code', {}, text(r.extends))) : null,
      field(doc, 'Asked', `${text(r.created_at)} (${formatAge(r.created_at, nowMs)})`),
      field(doc, 'Decide by', `${text(r.expires_at)} (${formatRemaining(r.expires_at, nowMs)})`),
      r.escalated_at !== undefined ? field(doc, 'Escalated', text(r.escalated_at)) : null,
      field(doc, 'Approval policy', text(r.approval_policy), ` — ${formatProgress(r)}`),
      r.decided_by !== undefined ? field(doc, 'Decided by', `${text(r.decided_by)} at ${text(r.decided_at)}`) : null,
      r.comment !== undefined ? field(doc, 'Comment', el(doc, 'q', {}, text(r.comment))) : null,
    ),
    el(doc, 'ol', { class: 'stages' }, stages),
  )
}

/**
 * When a grant ends: `in 42m`, and for a grant not used yet (claim-by window) an `unclaimed` tag
 * saying that `expires_at` is then the instant it ends unless it is used first.
 */
function grantExpiry(doc, g, nowMs) {
  const claim = g.claim !== null && typeof g.claim === 'object' ? g.claim : undefined
  if (claim === undefined || claim.status !== 'unclaimed') return [formatRemaining(g.expires_at, nowMs)]
  const lasts = typeof claim.duration_s === 'number' ? `; once used, it lasts ${formatDuration(claim.duration_s)}` : ''
  return [formatRemaining(g.expires_at, nowMs), el(doc, 'span', { class: 'tag', title: `Not used yet: it ends then unless it is used first${lasts}.` }, 'unclaimed')]
}

/**
 * The active grants the approver may revoke, soonest expiry first, whether an operator issued
 * them or they came out of access requests: sub-processor, resource, scopes, reason, who issued
 * it, expiry and id, each with a button that calls `onRevoke(grant)`. A grant that came out of an
 * access request names it, with a button that calls `onOpenRequest(id)` to show it.
 */
export function grantsTable(doc, grants, nowMs, { onRevoke, onOpenRequest }) {
  const rows = grants.map((g) => {
    const revoke = el(doc, 'button', { type: 'button', class: 'danger' }, 'Revoke…')
    revoke.addEventListener('click', () => onRevoke(g))
    let request = null
    if (typeof g.access_request_id === 'string' && onOpenRequest !== undefined) {
      const id = g.access_request_id
      request = el(doc, 'button', { type: 'button', class: 'secondary', title: `Show access request ${id}` }, 'Request')
      request.addEventListener('click', () => onOpenRequest(id))
    }
    return el(
      doc,
      'tr',
      { 'data-grant-id': text(g.id) },
      el(doc, 'td', {}, text(g.subject)),
      el(doc, 'td', {}, text(g.resource)),
      el(doc, 'td', {}, scopeList(doc, g.scopes)),
      el(doc, 'td', { class: 'reason' }, text(g.reason)),
      el(doc, 'td', {}, text(g.issued_by)),
      el(doc, 'td', { title: text(g.expires_at) }, grantExpiry(doc, g, nowMs)),
      el(doc, 'td', {}, el(doc, 'code', {}, text(g.id))),
      el(doc, 'td', {}, request, revoke),
    )
  })
  return table(doc, ['Sub-processor', 'Resource', 'Scopes', 'Reason', 'Issued by', 'Expires', 'Grant', ''], rows, 'No active grant that you may revoke.')
}

/** An API error as the console shows it: its code, its message, its details and request id. */
export function errorView(doc, err) {
  const details = Array.isArray(err.details) ? err.details : []
  return el(
    doc,
    'div',
    {},
    el(doc, 'strong', {}, el(doc, 'code', {}, text(err.code ?? 'error'))),
    err.status ? ` (HTTP ${text(err.status)})` : '',
    ': ',
    text(err.message),
    details.length > 0 ? el(doc, 'ul', {}, details.map((d) => el(doc, 'li', {}, text(d)))) : null,
    err.requestId !== undefined ? el(doc, 'p', { class: 'muted' }, 'request id ', el(doc, 'code', {}, text(err.requestId))) : null,
  )
}

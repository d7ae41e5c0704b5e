/**
 * The approvers' console in the browser: signs in with the approver's own credential, lists
 * pending requests and active grants, approves, denies and revokes through api.js, and shows
 * what comes back with views.js. The credential is held by the API client's closure and nowhere
 * else: the input fields are emptied at sign-in, nothing is written to storage, and nothing is
 * logged.
 */
import { createApiClient, ConsoleApiError } from './api.js'
import { el, errorView, grantsTable, pendingTable, requestDetail } from './views.js'

const $ = (id) => {
  const node = document.getElementById(id)
  if (node === null) throw new Error(`missing #${id}`)
  return node
}

/** The signed-in API client, or undefined. */
let client
/** The request open in the detail view. */
let openRequestId
/** The grant whose revocation is being confirmed. */
let revoking

function clearMessages() {
  $('error').hidden = true
  $('error').replaceChildren()
  $('notice').hidden = true
  $('notice').replaceChildren()
}

function showError(err) {
  const shown = err instanceof ConsoleApiError ? err : { code: 'console_error', message: String(err && err.message ? err.message : err) }
  $('error').replaceChildren(errorView(document, shown))
  $('error').hidden = false
}

function showNotice(message) {
  $('notice').replaceChildren(message)
  $('notice').hidden = false
}

/** Disables a form's buttons while its call runs, so one click is one call (and one TOTP code). */
async function busy(form, fn) {
  const buttons = [...form.querySelectorAll('button')]
  for (const b of buttons) b.disabled = true
  try {
    await fn()
  } catch (err) {
    showError(err)
  } finally {
    for (const b of buttons) b.disabled = false
  }
}

function showKindFields() {
  const kind = $('sign-in-form').elements.namedItem('kind').value
  $('oidc-fields').hidden = kind !== 'oidc'
  $('local-fields').hidden = kind !== 'local'
}

function signedIn(next) {
  client = next
  const who = client.identity
  const expiry = who.expiresAt !== undefined ? `, ID token valid until ${new Date(who.expiresAt).toLocaleTimeString()}` : ''
  $('who-text').replaceChildren('Signed in as ', el(document, 'strong', {}, who.name), who.kind === 'local' ? ' (local approver)' : expiry)
  for (const box of document.querySelectorAll('.totp')) box.hidden = !client.needsTotp
  $('who').hidden = false
  $('sign-in').hidden = true
  $('workspace').hidden = false
}

function signOut() {
  client = undefined
  openRequestId = undefined
  revoking = undefined
  for (const id of ['pending-list', 'grants-list', 'detail-body', 'revoke-summary', 'who-text']) $(id).replaceChildren()
  for (const id of ['decide-comment', 'decide-totp', 'revoke-reason', 'revoke-totp']) $(id).value = ''
  $('detail').hidden = true
  $('revoke').hidden = true
  $('workspace').hidden = true
  $('who').hidden = true
  $('sign-in').hidden = false
  clearMessages()
}

/**
 * Reads the pending requests and the grants (`GET /v1/grants`: those this approver may revoke)
 * and shows them. A list that could not be read is emptied rather than left stale (a grant shown
 * there might have ended), and the refusal is thrown for the caller to show.
 */
async function refresh() {
  if (client === undefined) return
  const [pending, grants] = await Promise.allSettled([client.listPending(), client.listActiveGrants()])
  const now = client.serverNow()
  const unread = (what) => el(document, 'p', { class: 'empty' }, `The ${what} could not be read: see the error above.`)
  $('pending-list').replaceChildren(pending.status === 'fulfilled' ? pendingTable(document, pending.value, now, { onOpen: (id) => void openRequest(id) }) : unread('pending requests'))
  $('grants-list').replaceChildren(grants.status === 'fulfilled' ? grantsTable(document, grants.value, now, { onRevoke: startRevoke, onOpenRequest: (id) => void openRequest(id) }) : unread('grants'))
  for (const read of [pending, grants]) if (read.status === 'rejected') throw read.reason
}

function showRequest(r) {
  openRequestId = r.id
  $('detail-body').replaceChildren(requestDetail(document, r, client.serverNow()))
  $('decide-form').hidden = r.status !== 'pending'
  $('detail').hidden = false
}

async function openRequest(id) {
  clearMessages()
  try {
    showRequest(await client.getRequest(id))
    $('detail').scrollIntoView({ block: 'nearest' })
  } catch (err) {
    showError(err)
  }
}

function startRevoke(grant) {
  clearMessages()
  revoking = grant
  $('revoke-summary').replaceChildren(
    el(document, 'p', {}, 'Grant ', el(document, 'code', {}, grant.id), ` of ${grant.subject} on ${grant.resource}${typeof grant.issued_by === 'string' ? `, issued by ${grant.issued_by}` : ''}: the next request with its token is refused.`),
  )
  $('revoke').hidden = false
  $('revoke-reason').focus()
}

$('sign-in-form').addEventListener('change', showKindFields)
$('sign-in-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  clearMessages()
  const form = $('sign-in-form')
  const kind = form.elements.namedItem('kind').value
  const idToken = $('id-token')
  const operatorToken = $('operator-token')
  void busy(form, async () => {
    let next
    try {
      next =
        kind === 'oidc'
          ? createApiClient({ credential: { kind: 'oidc', idToken: idToken.value } })
          : createApiClient({ credential: { kind: 'local', approver: $('approver').value, operatorToken: operatorToken.value } })
    } finally {
      // The client's closure is the only copy of the credential from here on.
      idToken.value = ''
      operatorToken.value = ''
    }
    await next.listPending() // the credential works, and reads requests, before the workspace opens
    signedIn(next)
    await refresh()
  })
})

$('sign-out').addEventListener('click', signOut)
$('refresh').addEventListener('click', () => {
  clearMessages()
  void busy($('pending'), refresh)
})
$('close-detail').addEventListener('click', () => {
  openRequestId = undefined
  $('detail').hidden = true
})

$('decide-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  clearMessages()
  const deny = ev.submitter !== null && ev.submitter.value === 'deny'
  const id = openRequestId
  if (id === undefined || client === undefined) return
  const input = { comment: $('decide-comment').value, totp: $('decide-totp').value }
  $('decide-totp').value = ''
  void busy($('decide-form'), async () => {
    const r = deny ? await client.deny(id, input) : await client.approve(id, input)
    $('decide-comment').value = ''
    showNotice(deny ? 'Denied.' : r.status === 'approved' ? 'Approved: the grant is issued.' : 'Approval recorded; the request waits for its next stage.')
    showRequest(r)
    await refresh()
  })
})

$('revoke-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  clearMessages()
  const grant = revoking
  if (grant === undefined || client === undefined) return
  const input = { reason: $('revoke-reason').value, totp: $('revoke-totp').value }
  $('revoke-totp').value = ''
  void busy($('revoke-form'), async () => {
    await client.revokeGrant(grant, input)
    revoking = undefined
    $('revoke-reason').value = ''
    $('revoke').hidden = true
    showNotice(`Revoked grant ${grant.id}.`)
    await refresh()
  })
})
$('cancel-revoke').addEventListener('click', () => {
  revoking = undefined
  $('revoke').hidden = true
})

showKindFields()

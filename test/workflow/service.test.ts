/**
 * The workflow service against the memory stores, with principals built directly and an injected
 * clock (expiry, escalation and contract ends are moved to, never waited for). The same flows over
 * HTTP, on Redis and across replicas, are in requests-api.test.ts and replicas.test.ts.
 */
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { ApiError } from '../../src/control/errors.js'
import { StoreUnavailableError } from '../../src/grants/types.js'
import { RECONCILE_EVERY_MS } from '../../src/control/grant-service.js'
import type { AccessRequest, RequestFilter, RequestStore } from '../../src/workflow/request-store.js'
import { localApprover } from '../../src/workflow/auth/approvers.js'
import { HOUR, MINUTE, approvalPolicy, entitlement, harness, principals, subprocessor, window } from './fixtures.js'

const ctx = { requestId: 'http-1' }
const alice = localApprover('alice', true)
const bob = localApprover('bob', true)
const carol = localApprover('carol', true)
const dave = localApprover('dave', true)
const erin = localApprover('erin', true)
const ask = { resource: 'crm-api', scopes: ['GET /crm/customers/*'], durationMs: HOUR, reason: 'SUP-1: export broken' }

/** Asserts that `p` rejects with ApiError `code`. */
async function refused(t: Test, p: Promise<unknown>, code: string, message?: string): Promise<void> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  )
  t.equal(err instanceof ApiError ? err.code : err, code, message ?? code)
}

t.test('two-stage approval end to end: pending, stage 1, stage 2, grant', async (t) => {
  const h = await harness(t)
  const r = await h.service.create('acme', { ...ask, ticket: 'SUP-1' }, ctx)
  t.match(r, { status: 'pending', kind: 'access', subject: 'acme', version: 1, approvalPolicy: 'two-stage' })
  t.match(r.id, /^r_[A-Za-z0-9_-]{22}$/)
  t.equal(r.grantId, `g_${r.id.slice(2)}`, 'the grant id is derived from the request id')
  t.match(h.notifications, [{ event: 'request.created', actor: 'acme' }])

  const afterOne = await h.service.approve(r.id, alice, 'looks fine', ctx)
  t.match(afterOne, { status: 'pending', approvals: [{ approver: 'alice', stage: 0, comment: 'looks fine' }] })
  t.equal((await h.grantStore.get(r.grantId)).status, 'not_found', 'no grant before the last stage')

  h.advance(5 * MINUTE)
  const done = await h.service.approve(r.id, carol, undefined, ctx)
  t.match(done, { status: 'approved', decidedBy: 'carol', approvals: [{ approver: 'alice' }, { approver: 'carol', stage: 1 }] })
  t.equal(done.grantStartsAt, h.now())
  t.equal(done.grantExpiresAt, Math.floor((h.now() + HOUR) / 1000) * 1000)
  const lookup = await h.grantStore.get(r.grantId)
  t.match(lookup, { status: 'active', grant: { id: r.grantId, subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/customers/*'], issuedBy: 'carol', accessRequestId: r.id } })

  t.same(
    h.audit.map((e) => e.event),
    ['request.created', 'request.approval_recorded', 'request.approval_recorded', 'request.approved', 'grant.issued'],
  )
  t.match(h.events('request.approval_recorded'), [{ actor: 'alice', stage: 1, comment: 'looks fine' }, { actor: 'carol', stage: 2 }])
  t.match(h.events('grant.issued'), [{ actor: 'carol', grant_id: r.grantId, access_request_id: r.id, request_id: 'http-1' }])
  t.match(h.notifications.map((n) => n.event), ['request.created', 'request.approved'])
  const metrics = await h.metrics.registry.getSingleMetricAsString('jitgate_access_request_approval_seconds')
  t.match(metrics, /jitgate_access_request_approval_seconds_count 1/)
  t.match(metrics, /le="300"} 1/, 'approved five minutes after the request')

  const state = await h.service.grantState(done, ctx)
  t.equal(state.status, 'active')
})

t.test('the requester can never approve; MFA is required; one person counts once; only the stage group', async (t) => {
  const h = await harness(t)
  const r = await h.service.create('acme', ask, ctx)
  await refused(t, h.service.approve(r.id, localApprover('acme', true), undefined, ctx), 'self_approval')
  await refused(t, h.service.approve(r.id, localApprover('alice', false), undefined, ctx), 'mfa_required')
  await refused(t, h.service.approve(r.id, carol, undefined, ctx), 'not_an_approver', 'carol is not in stage 1')
  await h.service.approve(r.id, alice, undefined, ctx)
  await refused(t, h.service.approve(r.id, alice, undefined, ctx), 'already_approved', 'alice is also in security, but counts once')
  await refused(t, h.service.approve(r.id, bob, undefined, ctx), 'not_an_approver', 'stage 1 is done; bob is not in security')
  await refused(t, h.service.deny(r.id, localApprover('acme', true), undefined, ctx), 'self_approval')
  t.equal((await h.service.get(r.id)).status, 'pending', 'no refusal changed anything')
  await refused(t, h.service.approve('r_nope', alice, undefined, ctx), 'request_not_found')
})

t.test('a denial ends the request', async (t) => {
  const h = await harness(t)
  const r = await h.service.create('acme', ask, ctx)
  await h.service.approve(r.id, alice, undefined, ctx)
  const denied = await h.service.deny(r.id, dave, 'not during the freeze', ctx)
  t.match(denied, { status: 'denied', decidedBy: 'dave', comment: 'not during the freeze' })
  await refused(t, h.service.approve(r.id, carol, undefined, ctx), 'wrong_state')
  await refused(t, h.service.cancel(r.id, 'acme', ctx), 'wrong_state')
  t.match(h.events('request.denied'), [{ actor: 'dave', comment: 'not during the freeze', access_request_id: r.id }])
  t.match(h.notifications.at(-1), { event: 'request.denied', actor: 'dave' })
})

t.test('entitlement checks: each refusal with its code', async (t) => {
  const sp = subprocessor({
    entitlements: [entitlement({ window: window(false), requireTicket: true }), entitlement({ resource: 'billing', scopes: ['GET /billing/**'], maxDurationMs: 4 * HOUR })],
  })
  const h = await harness(t, { principals: principals({ subprocessors: [sp, subprocessor({ id: 'gone', contractEndsAt: Date.now() - 1 })] }) })
  const c = (subject: string, input: Partial<typeof ask> & { ticket?: string; breakGlass?: boolean }) => h.service.create(subject, { ...ask, ticket: 'T-1', ...input }, ctx)
  await refused(t, c('acme', { scopes: ['GET /crm/**'] }), 'scope_not_entitled')
  await refused(t, c('acme', { scopes: ['DELETE /crm/tickets/1'] }), 'scope_not_entitled')
  await refused(t, c('acme', { scopes: ['GET /crm/*.json'] }), 'invalid_scope')
  await refused(t, c('acme', { durationMs: 5 * HOUR }), 'duration_exceeds_max')
  await refused(t, c('acme', {}), 'outside_window')
  await refused(t, c('acme', { resource: 'nope' }), 'unknown_resource')
  await refused(t, c('globex', {}), 'not_entitled', 'no sub-processor of that id')
  await refused(t, c('gone', {}), 'after_contract_end')
  await refused(t, c('acme', { resource: 'billing', scopes: ['GET /billing/x'], durationMs: 3 * HOUR }), 'duration_exceeds_max', "capped by the resource's max_ttl too")
  await refused(t, c('acme', { breakGlass: true }), 'break_glass_not_allowed')
  const err = await c('acme', { scopes: ['GET /crm/admin'] }).catch((e: ApiError) => e)
  t.match((err as ApiError).details, [/"GET \/crm\/admin" is not within/])

  h.setPolicy(principals({ subprocessors: [subprocessor({ entitlements: [entitlement({ requireTicket: true })] })] }))
  await refused(t, h.service.create('acme', ask, ctx), 'ticket_required')
  t.equal(h.audit.length, 0, 'a refused request leaves no trace but the API error')
})

t.test('several entitlements for one resource: the first that fits is used', async (t) => {
  const sp = subprocessor({
    entitlements: [
      entitlement({ scopes: ['GET /crm/customers/**'], maxDurationMs: HOUR, approval: 'two-stage' }),
      entitlement({ scopes: ['* /crm/**'], maxDurationMs: 4 * HOUR, approval: 'one-stage' }),
    ],
  })
  const h = await harness(t, { principals: principals({ subprocessors: [sp], policies: [approvalPolicy(), approvalPolicy({ id: 'one-stage', stages: [{ group: 'security', approvals: 1 }] })] }) })
  t.equal((await h.service.create('acme', ask, ctx)).approvalPolicy, 'two-stage')
  t.equal((await h.service.create('acme', { ...ask, durationMs: 2 * HOUR }, ctx)).approvalPolicy, 'one-stage')
  t.equal((await h.service.create('acme', { ...ask, scopes: ['DELETE /crm/x'] }, ctx)).approvalPolicy, 'one-stage')
})

t.test('the grant never outlives the contract: duration capped at the contract end', async (t) => {
  const contractEndsAt = Date.now() + 30 * MINUTE
  const h = await harness(t, { principals: principals({ subprocessors: [subprocessor({ contractEndsAt })] }) })
  const r = await h.service.create('acme', { ...ask, durationMs: 2 * HOUR }, ctx)
  await h.service.approve(r.id, alice, undefined, ctx)
  const done = await h.service.approve(r.id, carol, undefined, ctx)
  t.equal(done.grantExpiresAt, Math.floor(contractEndsAt / 1000) * 1000)
  t.match(await h.grantStore.get(r.grantId), { status: 'active', grant: { expiresAt: done.grantExpiresAt } })

  const late = await h.service.create('acme', ask, ctx)
  await h.service.approve(late.id, alice, undefined, ctx)
  h.advance(31 * MINUTE)
  await refused(t, h.service.approve(late.id, carol, undefined, ctx), 'after_contract_end', 'no grant can start after the contract end')
  await refused(t, h.service.create('acme', ask, ctx), 'after_contract_end')
})

t.test('auto-approval: a request that fits the rule is approved at once; others go through the stages', async (t) => {
  const sp = subprocessor({ entitlements: [entitlement({ autoApprove: { maxDurationMs: 30 * MINUTE, scopes: ['GET /crm/customers/**'] } })] })
  const h = await harness(t, { principals: principals({ subprocessors: [sp] }) })
  const auto = await h.service.create('acme', { ...ask, durationMs: 15 * MINUTE }, ctx)
  t.match(auto, { status: 'approved', decidedBy: 'auto-approval' })
  t.match(await h.grantStore.get(auto.grantId), { status: 'active', grant: { issuedBy: 'auto-approval' } })
  t.same(h.audit.map((e) => e.event), ['request.created', 'request.approved', 'grant.issued'])
  t.equal((await h.service.create('acme', { ...ask, durationMs: HOUR }, ctx)).status, 'pending', 'longer than the rule allows')
  t.equal((await h.service.create('acme', { ...ask, durationMs: 15 * MINUTE, scopes: ['GET /crm/tickets/1'] }, ctx)).status, 'pending', 'a scope the rule does not cover')
  t.match(await h.metrics.registry.getSingleMetricAsString('jitgate_access_requests_total'), /outcome="auto_approved"} 1/)
})

t.test('pending expiry: the sweep expires an overdue request once; actions are refused with request_expired', async (t) => {
  const h = await harness(t, { principals: principals({ policies: [approvalPolicy({ requestTtlMs: HOUR, escalateAfterMs: undefined })] }) })
  const r = await h.service.create('acme', ask, ctx)
  const other = await h.service.create('acme', ask, ctx)
  h.advance(HOUR - 1)
  await h.service.sweep()
  t.equal((await h.service.get(r.id)).status, 'pending', 'not yet')
  h.advance(1)
  await Promise.all([h.service.sweep(), h.service.sweep()])
  t.match(await h.requests.get(r.id), { status: 'expired', decidedBy: 'system' })
  t.equal(h.events('request.expired').length, 2, 'one event per request, however many sweeps ran')
  await refused(t, h.service.approve(r.id, alice, undefined, ctx), 'wrong_state')
  t.match(h.notifications.filter((n) => n.event === 'request.expired').length, 2)

  // Acting on an overdue request before any sweep: refused, and expired on the spot.
  const third = await h.service.create('acme', ask, ctx)
  h.advance(HOUR)
  await refused(t, h.service.approve(third.id, alice, undefined, ctx), 'request_expired')
  t.equal((await h.requests.get(third.id))?.status, 'expired')
  t.equal(other.status, 'pending')
})

t.test('escalation: once after the delay; with escalation_admits the group may approve', async (t) => {
  const h = await harness(t, { principals: principals({ policies: [approvalPolicy({ escalateAfterMs: 30 * MINUTE, escalationAdmits: true })] }) })
  const r = await h.service.create('acme', ask, ctx)
  await refused(t, h.service.approve(r.id, erin, undefined, ctx), 'not_an_approver', 'not before the escalation')
  h.advance(30 * MINUTE)
  await Promise.all([h.service.sweep(), h.service.sweep()])
  await h.service.sweep()
  t.match(h.events('request.escalated'), [{ access_request_id: r.id, stage: 1 }])
  t.match(h.notifications.filter((n) => n.event === 'request.escalated'), [{ escalationGroup: 'oncall' }])
  const afterErin = await h.service.approve(r.id, erin, 'on call', ctx)
  t.match(afterErin.approvals, [{ approver: 'erin', stage: 0 }])
})

t.test('cancel: the requester withdraws its pending request; nobody else sees it', async (t) => {
  const h = await harness(t)
  const r = await h.service.create('acme', ask, ctx)
  await refused(t, h.service.cancel(r.id, 'globex', ctx), 'request_not_found')
  t.match(await h.service.cancel(r.id, 'acme', ctx), { status: 'cancelled', decidedBy: 'acme' })
  t.match(h.events('request.cancelled'), [{ actor: 'acme' }])
  await refused(t, h.service.cancel(r.id, 'acme', ctx), 'wrong_state')
})

t.test('break-glass: approved at once, loudly; the review stays open until an approver closes it', async (t) => {
  const sp = subprocessor({ entitlements: [entitlement({ scopes: ['* /crm/**'], approval: 'two-stage', breakGlass: { maxDurationMs: HOUR }, window: window(false) })] })
  const h = await harness(t, { principals: principals({ subprocessors: [sp] }) })
  await refused(t, h.service.create('acme', { ...ask, durationMs: 2 * HOUR, breakGlass: true }, ctx), 'duration_exceeds_max')
  const r = await h.service.create('acme', { ...ask, scopes: ['DELETE /crm/customers/7'], breakGlass: true }, ctx)
  t.match(r, { kind: 'break_glass', status: 'approved', decidedBy: 'acme', review: { status: 'open' } })
  t.equal((await h.grantStore.get(r.grantId)).status, 'active', 'even outside the time window')
  t.same(h.audit.map((e) => e.event), ['request.created', 'breakglass.used', 'request.approved', 'grant.issued'])
  t.match(h.events('breakglass.used'), [{ actor: 'acme', grant_id: r.grantId, reason: ask.reason }])
  t.match(h.notifications, [{ event: 'breakglass.used' }])
  t.match(await h.metrics.registry.getSingleMetricAsString('jitgate_breakglass_unreviewed'), /jitgate_breakglass_unreviewed 1/)

  await refused(t, h.service.review(r.id, localApprover('acme', true), undefined, ctx), 'self_approval')
  await refused(t, h.service.review(r.id, localApprover('carol', false), undefined, ctx), 'mfa_required')
  await refused(t, h.service.review(r.id, localApprover('zed', true), undefined, ctx), 'not_an_approver')
  await refused(t, h.service.extend(r.id, 'acme', { durationMs: HOUR, reason: 'more' }, ctx), 'wrong_state')
  const reviewed = await h.service.review(r.id, carol, 'incident INC-9, justified', ctx)
  t.match(reviewed.review, { status: 'closed', reviewedBy: 'carol', comment: 'incident INC-9, justified' })
  t.match(h.events('breakglass.reviewed'), [{ actor: 'carol', grant_id: r.grantId }])
  t.match(await h.metrics.registry.getSingleMetricAsString('jitgate_breakglass_unreviewed'), /jitgate_breakglass_unreviewed 0/)
  await refused(t, h.service.review(r.id, dave, undefined, ctx), 'wrong_state', 'reviewed once')
})

t.test('extend: a new approval moves the grant expiry, capped by the contract end', async (t) => {
  const contractEndsAt = Date.now() + 3 * HOUR
  const h = await harness(t, { principals: principals({ subprocessors: [subprocessor({ contractEndsAt })] }) })
  const r = await h.service.create('acme', ask, ctx)
  await h.service.approve(r.id, alice, undefined, ctx)
  const approved = await h.service.approve(r.id, carol, undefined, ctx)
  await refused(t, h.service.extend(r.id, 'globex', { durationMs: HOUR, reason: 'x' }, ctx), 'request_not_found')
  await refused(t, h.service.extend(r.id, 'acme', { durationMs: 5 * HOUR, reason: 'x' }, ctx), 'duration_exceeds_max')
  const ext = await h.service.extend(r.id, 'acme', { durationMs: HOUR, reason: 'export still running' }, ctx)
  t.match(ext, { kind: 'extension', status: 'pending', extends: r.id, grantId: r.grantId })
  await h.service.approve(ext.id, bob, undefined, ctx)
  const done = await h.service.approve(ext.id, dave, undefined, ctx)
  t.equal(done.grantExpiresAt, (approved.grantExpiresAt as number) + HOUR)
  t.match(await h.grantStore.get(r.grantId), { status: 'active', grant: { expiresAt: done.grantExpiresAt } })
  t.match(h.events('grant.extended'), [{ actor: 'dave', grant_id: r.grantId, previous_expires_at: new Date(approved.grantExpiresAt as number).toISOString() }])

  const capped = await h.service.extend(r.id, 'acme', { durationMs: 2 * HOUR, reason: 'more' }, ctx)
  await h.service.approve(capped.id, bob, undefined, ctx)
  const cappedDone = await h.service.approve(capped.id, dave, undefined, ctx)
  t.equal(cappedDone.grantExpiresAt, Math.floor(contractEndsAt / 1000) * 1000, 'capped at the contract end')
})

t.test('relinquish and revoke end the grant', async (t) => {
  const h = await harness(t)
  const approve = async () => {
    const r = await h.service.create('acme', ask, ctx)
    await h.service.approve(r.id, alice, undefined, ctx)
    return h.service.approve(r.id, carol, undefined, ctx)
  }
  const mine = await approve()
  await refused(t, h.service.relinquish(mine.id, 'globex', ctx), 'request_not_found')
  await h.service.relinquish(mine.id, 'acme', ctx)
  t.match(await h.grantStore.get(mine.grantId), { status: 'revoked', revocation: { revokedBy: 'acme', reason: 'relinquished by the requester' } })
  await refused(t, h.service.relinquish(mine.id, 'acme', ctx), 'grant_already_revoked', 'once')

  const theirs = await approve()
  await refused(t, h.service.revoke(theirs.id, localApprover('carol', false), 'x', ctx), 'mfa_required')
  await refused(t, h.service.revoke(theirs.id, erin, 'x', ctx), 'not_an_approver', 'the escalation group is not admitted by this policy')
  await h.service.revoke(theirs.id, dave, 'vendor offboarded', ctx)
  t.match(await h.grantStore.get(theirs.grantId), { status: 'revoked', revocation: { revokedBy: 'dave' } })
  const third = await approve()
  await h.service.revoke(third.id, 'operator:ops', 'maintenance', ctx)
  t.match(h.events('grant.revoked').map((e) => e.actor), ['acme', 'dave', 'operator:ops'])
  t.equal((await h.service.grantState(third, ctx)).status, 'revoked', 'and a revoked grant is never issued again')
})

t.test('a grant whose issue failed after the approval is issued on the next read, exactly once', async (t) => {
  let failures = 1
  const h = await harness(t, {
    wrapGrants: (g) => ({
      ...g,
      issueApproved: async (grant, c) => {
        if (failures-- > 0) throw new ApiError('store_unavailable')
        return g.issueApproved(grant, c)
      },
    }),
  })
  const r = await h.service.create('acme', ask, ctx)
  await h.service.approve(r.id, alice, undefined, ctx)
  const done = await h.service.approve(r.id, carol, undefined, ctx)
  t.equal(done.status, 'approved', 'the decision stands')
  t.equal((await h.grantStore.get(r.grantId)).status, 'not_found')
  const [a, b] = await Promise.all([h.service.grantState(done, ctx), h.service.grantState(done, ctx)])
  t.equal(a.status, 'active')
  t.equal(b.status, 'active')
  t.equal(h.events('grant.issued').length, 1, 'one grant, whoever retried')
  t.match(h.events('grant.issued'), [{ actor: 'carol', grant_id: r.grantId }])
})

t.test('claim-by window: the approval issues an unclaimed grant; its clock starts at the first use', async (t) => {
  const sp = subprocessor({ entitlements: [entitlement({ claimWithinMs: HOUR, breakGlass: { maxDurationMs: HOUR } })] })
  const h = await harness(t, { principals: principals({ subprocessors: [sp] }) })
  const r = await h.service.create('acme', { ...ask, durationMs: 2 * HOUR }, ctx)
  t.equal(r.claimWithinMs, HOUR, 'the window is recorded as judged')
  await h.service.approve(r.id, alice, undefined, ctx)
  h.advance(1234)
  const done = await h.service.approve(r.id, carol, undefined, ctx)
  const claimBy = Math.floor((h.now() + HOUR) / 1000) * 1000
  const notAfter = claimBy + 2 * HOUR
  t.match(done, { status: 'approved', grantStartsAt: h.now(), grantClaimBy: claimBy, grantExpiresAt: notAfter })
  const lookup = await h.grantStore.get(r.grantId)
  t.strictSame(lookup.status === 'active' && lookup.grant.claim, { by: claimBy, durationMs: 2 * HOUR, notAfter })
  t.equal(lookup.status === 'active' && lookup.grant.expiresAt, claimBy, 'unclaimed, it lives until its claim-by time')
  t.match(h.events('grant.issued'), [{ grant_id: r.grantId, expires_at: new Date(claimBy).toISOString(), claim_by: new Date(claimBy).toISOString() }])
  const state = await h.service.grantState(done, ctx)
  const token = await h.service.token((state as { grant: import('../../src/grants/types.js').Grant }).grant)
  t.equal(JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).exp, notAfter / 1000, "the token's exp allows a first use late in the window plus the full duration")
  await refused(t, h.service.extend(r.id, 'acme', { durationMs: HOUR, reason: 'more' }, ctx), 'wrong_state', 'an unclaimed grant has nothing to extend yet')

  // The first use (the data plane calls this) starts the clock; then an extension moves it as usual.
  h.advance(20 * MINUTE)
  const claimed = await h.grantStore.claim((lookup as { grant: import('../../src/grants/types.js').Grant }).grant, h.now())
  t.equal(claimed?.grant.expiresAt, Math.floor((h.now() + 2 * HOUR) / 1000) * 1000)
  const ext = await h.service.extend(r.id, 'acme', { durationMs: HOUR, reason: 'more' }, ctx)
  t.equal(ext.claimWithinMs, undefined, 'an extension has no window of its own')
  await h.service.approve(ext.id, bob, undefined, ctx)
  const extended = await h.service.approve(ext.id, dave, undefined, ctx)
  t.equal(extended.grantExpiresAt, (claimed?.grant.expiresAt as number) + HOUR)

  const bg = await h.service.create('acme', { ...ask, breakGlass: true }, ctx)
  t.equal(bg.claimWithinMs, undefined, 'break-glass grants start at once')
  t.match(await h.grantStore.get(bg.grantId), { status: 'active', grant: { expiresAt: Math.floor((h.now() + HOUR) / 1000) * 1000 } })
  t.notOk((await h.grantStore.get(bg.grantId) as { grant: { claim?: unknown } }).grant.claim)
})

t.test('claim-by window: a grant whose issue failed is issued on a later read only while it cannot have been used and ended', async (t) => {
  let failing = true
  const sp = subprocessor({ entitlements: [entitlement({ claimWithinMs: HOUR })] })
  const h = await harness(t, {
    principals: principals({ subprocessors: [sp] }),
    wrapGrants: (g) => ({
      ...g,
      issueApproved: async (grant, c) => {
        if (failing) throw new ApiError('store_unavailable')
        return g.issueApproved(grant, c)
      },
    }),
  })
  const approve = async () => {
    const r = await h.service.create('acme', { ...ask, durationMs: 10 * MINUTE }, ctx)
    await h.service.approve(r.id, alice, undefined, ctx)
    return h.service.approve(r.id, carol, undefined, ctx)
  }
  const early = await approve()
  const late = await approve()
  failing = false
  h.advance(9 * MINUTE)
  t.equal((await h.service.grantState(early, ctx)).status, 'active', 'within its duration of the approval: never issued, so issued now')
  t.match(await h.grantStore.get(early.grantId), { status: 'active', grant: { claim: { by: early.grantClaimBy } } })

  h.advance(2 * MINUTE)
  // Claimed at its approval, it would have ended by now: missing can mean used up, so never re-issued.
  t.equal((await h.service.grantState(late, ctx)).status, 'expired')
  t.equal((await h.grantStore.get(late.grantId)).status, 'not_found')
})

t.test('a write the store confirms too late: the caller gets store_unavailable, the change that landed is audited and acted on', async (t) => {
  // What a hung Redis does: it runs the write when it wakes, after the caller's deadline. Here the
  // (real) memory store applies it and the answer is lost on the way back.
  let loseReply = false
  const h = await harness(t, {
    wrapRequests: (store) =>
      Object.assign(Object.create(store) as RequestStore, {
        create: async (r: AccessRequest) => {
          await store.create(r)
          if (loseReply) throw new StoreUnavailableError('redis create: no answer within 250 ms')
        },
        update: async (r: AccessRequest) => {
          const ok = await store.update(r)
          if (loseReply) throw new StoreUnavailableError('redis update: no answer within 250 ms')
          return ok
        },
      }),
  })
  const settle = () => new Promise((r) => setTimeout(r, 50))

  loseReply = true
  await refused(t, h.service.create('acme', ask, ctx), 'store_unavailable', 'the create is answered 503')
  await settle()
  const created = h.events('request.created')
  t.equal(created.length, 1, 'the create landed: request.created on record')
  const id = created[0]?.access_request_id as string
  loseReply = false

  await h.service.approve(id, alice, undefined, ctx)
  loseReply = true
  await refused(t, h.service.approve(id, carol, undefined, ctx), 'store_unavailable', 'the final approval is answered 503')
  loseReply = false
  await settle()
  t.match(h.events('request.approval_recorded'), [{ actor: 'alice' }, { actor: 'carol' }])
  t.match(h.events('request.approved'), [{ access_request_id: id, actor: 'carol' }])
  const issued = h.events('grant.issued')
  t.equal(issued.length, 1, 'and the grant was issued, once')
  t.match(await h.grantStore.get(issued[0]?.grant_id as string), { status: 'active' })

  // A write that never ran (the store refused it outright) leaves nothing to audit.
  let refuse = false
  const g = await harness(t, {
    wrapRequests: (store) =>
      Object.assign(Object.create(store) as RequestStore, {
        update: async (r: AccessRequest) => {
          if (refuse) throw new StoreUnavailableError('redis update: connection refused')
          return store.update(r)
        },
      }),
  })
  const pending = await g.service.create('acme', ask, ctx)
  refuse = true
  await refused(t, g.service.deny(pending.id, carol, 'no', ctx), 'store_unavailable')
  await settle()
  t.equal(g.events('request.denied').length, 0, 'nothing landed, nothing audited')
  t.match(await g.requests.get(pending.id), { status: 'pending' })
})

/**
 * A request store that hangs as a stopped Redis does: while hung, every call fails at its deadline
 * (at once, here), and the writes among them run when it wakes up, in the order they were sent, as
 * Redis runs what is waiting on its sockets. The caller's reads behind a hung write fail as well.
 */
function hangingStore() {
  let hung = false
  let hangAtNextWrite = false
  const sent: (() => Promise<unknown>)[] = []
  const stats = { writesSent: 0, readsRefused: 0 }
  const timedOut = (what: string) => new StoreUnavailableError(`redis ${what}: no answer within 250 ms`)
  /** A write: run now, or (hung) kept to run at wake-up while its caller is told it timed out. */
  const write = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
    if (hangAtNextWrite) [hung, hangAtNextWrite] = [true, false]
    if (!hung) return run()
    stats.writesSent++
    sent.push(run)
    throw timedOut(what)
  }
  const read = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
    if (!hung) return run()
    stats.readsRefused++
    throw timedOut(what)
  }
  return {
    stats,
    wrap: (inner: RequestStore): RequestStore =>
      Object.assign(Object.create(inner) as RequestStore, {
        create: (r: AccessRequest) => write('create', () => inner.create(r)),
        update: (r: AccessRequest) => write('update', () => inner.update(r)),
        get: (id: string) => read('get', () => inner.get(id)),
        list: (filter?: RequestFilter) => read('list', () => inner.list(filter)),
        listOpen: () => read('listOpen', () => inner.listOpen()),
      }),
    /** Hangs as the next write is sent: the reads before it were answered. */
    hangAtNextWrite: () => void (hangAtNextWrite = true),
    async wake(): Promise<void> {
      hung = false
      for (const run of sent.splice(0)) await run().catch(() => {})
    },
  }
}

t.test('an approval that lands after its deadline and is then built on by a later approval is audited, once', async (t) => {
  const hang = hangingStore()
  const h = await harness(t, { wrapRequests: hang.wrap })
  const r = await h.service.create('acme', ask, ctx)

  hang.hangAtNextWrite()
  await refused(t, h.service.approve(r.id, alice, 'stage 1 ok', ctx), 'store_unavailable', "alice's approval is answered 503")
  await sleep(50)
  t.ok(hang.stats.readsRefused >= 1, 'the read behind the write found the store hung: the next one is a while away')
  await hang.wake()
  t.match(await h.requests.get(r.id), { version: 2, approvals: [{ approver: 'alice' }] }, "alice's write ran when the store woke up")

  // Before the gateway reads behind alice's write again, carol's approval builds on it.
  const done = await h.service.approve(r.id, carol, undefined, ctx)
  t.match(done, { status: 'approved', version: 3, approvals: [{ approver: 'alice', stage: 0 }, { approver: 'carol', stage: 1 }] })
  await sleep(RECONCILE_EVERY_MS + 300)
  t.match(h.events('request.approval_recorded'), [{ actor: 'carol', stage: 2 }, { actor: 'alice', stage: 1, comment: 'stage 1 ok', request_id: 'http-1', access_request_id: r.id }])
  t.equal(h.events('request.approval_recorded').length, 2, 'both approvals on record, each once')
  t.match(h.events('request.approved'), [{ actor: 'carol' }])
  t.equal(h.events('grant.issued').length, 1, 'one grant, issued by the final approval')
  await sleep(RECONCILE_EVERY_MS + 100)
  t.equal(h.audit.length, 5, 'and nothing more later')
})

t.test('stopping while a write is still of unknown outcome: a warning names the request', async (t) => {
  const logs: { level: number; msg: string; unconfirmed?: { access_request_id: string }[] }[] = []
  const sink = new Writable({ write: (c: Buffer, _e: BufferEncoding, cb: () => void) => (logs.push(JSON.parse(c.toString())), cb()) })
  const hang = hangingStore()
  const h = await harness(t, { wrapRequests: hang.wrap, log: pino({ level: 'info' }, sink) })
  const r = await h.service.create('acme', ask, ctx)
  hang.hangAtNextWrite()
  await refused(t, h.service.approve(r.id, alice, undefined, ctx), 'store_unavailable', 'answered 503')
  await sleep(50)
  await h.service.stop()
  const warned = logs.find((l) => l.msg.startsWith('stopping with request store writes whose outcome is unknown'))
  t.match(warned?.unconfirmed, [{ access_request_id: r.id }])
  await hang.wake()
})

t.test('two callers expiring one request while the store hangs: the same record either way, audited once', async (t) => {
  const hang = hangingStore()
  const h = await harness(t, { wrapRequests: hang.wrap })
  const r = await h.service.create('acme', ask, ctx)
  h.advance(24 * HOUR)

  // Both read the overdue request; both expiries are sent into the hang and land in turn.
  hang.hangAtNextWrite()
  await Promise.all([refused(t, h.service.get(r.id), 'store_unavailable'), refused(t, h.service.get(r.id), 'store_unavailable')])
  t.equal(hang.stats.writesSent, 2, 'both expiries were sent')
  await sleep(50)
  await hang.wake()
  t.match(await h.requests.get(r.id), { status: 'expired', version: 2 }, 'the first ran; the second lost its compare-and-set')
  await sleep(RECONCILE_EVERY_MS + 300)
  t.equal(h.events('request.expired').length, 1, 'one request.expired, from the write that landed')
})

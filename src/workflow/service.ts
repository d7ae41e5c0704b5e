/**
 * The just-in-time workflow: a sub-processor asks, approvers who proved MFA decide under policy,
 * and a grant comes out, with every transition audited, counted and (where it matters) notified.
 *
 * Judging a request (`create`, `extend`), against the requester's entitlements for the resource:
 * - the contract must not have ended (`after_contract_end`);
 * - every requested scope must be covered by an entitled scope (coverage.ts; `scope_not_entitled`);
 * - the duration must not exceed the entitlement's `max_duration` nor the resource's `max_ttl`
 *   (`duration_exceeds_max`);
 * - now must be inside the entitlement's time window, if it has one (`outside_window`);
 * - a ticket must be given where the entitlement requires one (`ticket_required`).
 * With several entitlements for the resource, the first (in policy order) that passes every check
 * is used; when none does, the refusal is the one of the entitlement that got furthest.
 * Break-glass requests are judged against the entitlement's `break_glass.max_duration` instead,
 * and neither the time window nor the ticket applies: an emergency does not wait for office hours.
 *
 * Approval: the stages of the request's approval policy, as they were when it was judged, in order.
 * An approval counts toward the current stage (the first one still short of approvals) when the
 * approver is a member of that stage's group (or, once the request is escalated and the policy
 * says `escalation_admits`, of the escalation group). One person counts once across all stages.
 * The requester never approves. Membership is read from the policy in force at the time of the
 * approval, so removing someone from a group takes effect at once.
 *
 * Auto-approval: when the entitlement has `auto_approve` and the request fits it (duration at most
 * its `max_duration`, every scope covered by its scopes), the request is approved at once by
 * `auto-approval`; otherwise it goes through the stages as usual.
 *
 * The grant: on the approving transition (exactly one caller wins it: request-store.ts) the grant's
 * start and expiry are fixed in the request (the expiry capped by the contract end, on a whole
 * second as the token's `exp` is), and the grant is issued with an id derived from the request id.
 * Issuing is therefore idempotent: if the winner fails between the transition and the grant (a
 * crash, a store blip), the requester's next read issues the very same grant, never a second one.
 *
 * Claim-by window (entitlement `claim_within`, access requests only): the grant is issued unclaimed,
 * living until approval + the window; its first use on the data plane starts its clock
 * (decision/decide.ts, GrantStore.claim). The request records the window as judged.
 */
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Grant, GrantStore } from '../grants/types.js'
import { isUnclaimed, StoreUnavailableError } from '../grants/types.js'
import type { Policy } from '../policy/policy.js'
import type { ApprovalPolicy, Entitlement, Principals, Subprocessor } from '../policy/principals.js'
import type { TokenIssuer } from '../authn/token.js'
import type { AuditLog } from '../audit/audit-log.js'
import type { GrantService } from '../control/grant-service.js'
import { ApiError, type ApiErrorCode } from '../control/errors.js'
import { formatDuration } from '../util/duration.js'
import { checkCoverage } from './coverage.js'
import { isMember, isRequester, type Approver } from './auth/approvers.js'
import type { AccessRequest, RequestFilter, RequestKind, RequestStore } from './request-store.js'
import type { WorkflowMetrics } from './metrics.js'
import { RECONCILE_EVERY_MS, RECONCILE_FOR_MS } from '../control/grant-service.js'
import type { Notifier } from './notify.js'

/** The actor of transitions the gateway makes by itself (expiry, escalation). */
export const SYSTEM_ACTOR = 'system'
export const AUTO_APPROVAL_ACTOR = 'auto-approval'

/** Why an unclaimed grant cannot be extended. */
const UNCLAIMED = 'the grant has not been used yet: its clock starts at its first use, so there is nothing to extend'

/** Compare-and-set rounds before giving up on a request that keeps changing under us. */
const MAX_ROUNDS = 8

/** Names one write of a request (AccessRequest.writes): 72 random bits. */
const writeId = (): string => randomBytes(9).toString('base64url')

export interface CreateRequestInput {
  readonly resource: string
  readonly scopes: readonly string[]
  readonly durationMs: number
  readonly reason: string
  readonly ticket?: string
  readonly breakGlass?: boolean
}

export interface ExtendRequestInput {
  readonly durationMs: number
  readonly reason: string
  readonly ticket?: string
}

/** The HTTP request an action came in (audited as `request_id`). */
export interface CallContext {
  readonly requestId: string
}

export interface WorkflowDeps {
  readonly requests: RequestStore
  readonly grantStore: GrantStore
  readonly grants: GrantService
  readonly policy: () => Policy
  readonly tokens: () => TokenIssuer
  readonly audit: AuditLog
  readonly metrics: WorkflowMetrics
  readonly notifier: Notifier
  readonly log: Logger
  readonly now?: () => number
}

/** The state of a request's grant, as the API shows it. */
export type GrantState =
  | { readonly status: 'active'; readonly grant: Grant }
  | { readonly status: 'revoked' | 'expired' | 'not_issued' }

export interface WorkflowService {
  /** Judges and stores a new request (approved at once when auto-approval or break-glass applies). */
  create(subject: string, input: CreateRequestInput, ctx: CallContext): Promise<AccessRequest>
  /** A request, with a pending one past its deadline moved to `expired` first. */
  get(id: string): Promise<AccessRequest>
  list(filter?: RequestFilter): Promise<AccessRequest[]>
  approve(id: string, approver: Approver, comment: string | undefined, ctx: CallContext): Promise<AccessRequest>
  deny(id: string, approver: Approver, comment: string | undefined, ctx: CallContext): Promise<AccessRequest>
  cancel(id: string, subject: string, ctx: CallContext): Promise<AccessRequest>
  /** The requester ends its own grant early. */
  relinquish(id: string, subject: string, ctx: CallContext): Promise<void>
  /** An approver (with MFA) or an operator revokes the request's grant. */
  revoke(id: string, by: Approver | string, reason: string, ctx: CallContext): Promise<void>
  /**
   * An approver (with MFA) or an operator revokes a grant by its id (`DELETE /v1/grants/{id}`).
   * An approver may revoke a grant when it may decide the access request the grant came from (a
   * member of one of its stage groups, or of its admitted escalation group), or when it is a member
   * of a stage group (or admitted escalation group) of the approval policy of one of the grant's
   * sub-processor's entitlements for the grant's resource, in the policy in force: whoever could
   * approve such a grant may end it, whether it came from a request or from an operator.
   */
  revokeGrant(grantId: string, by: Approver | string, reason: string, ctx: CallContext): Promise<void>
  /** The active grants this approver may revoke (the ones `revokeGrant` would let it end). */
  grantsFor(approver: Approver): Promise<Grant[]>
  /** Asks to move the expiry of the grant of approved request `id`: a new request of kind `extension`. */
  extend(id: string, subject: string, input: ExtendRequestInput, ctx: CallContext): Promise<AccessRequest>
  /** Closes the after-the-fact review of a break-glass request. */
  review(id: string, approver: Approver, comment: string | undefined, ctx: CallContext): Promise<AccessRequest>
  /** The grant of an approved request (issuing it if its issue was interrupted), for views. */
  grantState(r: AccessRequest, ctx: CallContext): Promise<GrantState>
  /** The JIT token of the request's active grant, for the requester only. */
  token(grant: Grant): Promise<string>
  /** True when the approver belongs to some approver group: who may read requests at all. */
  isApprover(approver: Approver): boolean
  /** Expires overdue pending requests and escalates due ones; run periodically on every replica. */
  sweep(): Promise<void>
  /**
   * Stops reading behind writes confirmed too late: one last read each, and a warning naming the
   * requests whose write is still of unknown outcome (they may have changed without an event).
   */
  stop(): Promise<void>
}

export function createWorkflowService(deps: WorkflowDeps): WorkflowService {
  const now = deps.now ?? Date.now
  const principals = (): Principals => deps.policy().principals
  const { audit, metrics, notifier } = deps

  /** Runs a store call, mapping an unreachable store to the API's `store_unavailable`. */
  async function stored<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      if (err instanceof StoreUnavailableError) throw new ApiError('store_unavailable')
      throw err
    }
  }

  async function load(id: string): Promise<AccessRequest> {
    const r = await stored(() => deps.requests.get(id))
    if (r === undefined) throw new ApiError('request_not_found')
    return r
  }

  /** Loads a request for its requester; another sub-processor's request does not exist for it. */
  async function loadOwn(id: string, subject: string): Promise<AccessRequest> {
    const r = await load(id)
    if (r.subject !== subject) throw new ApiError('request_not_found')
    return r
  }

  const next = (r: AccessRequest, changes: Partial<AccessRequest>): AccessRequest => ({
    ...r,
    ...changes,
    version: r.version + 1,
    writes: [...(r.writes ?? []), writeId()],
  })

  /**
   * Reads, decides and compare-and-sets until the write lands: `decide` sees the current record
   * and returns the next one (or throws a refusal). Returns the record as written, and the one it
   * replaced.
   */
  /**
   * Reads a request, decides its next version and compare-and-sets it, retrying on a concurrent
   * change; then `landed` audits and acts on the change (written, before). A write the store did
   * not confirm in time may still land (a hung Redis runs it when it wakes): the caller is told
   * `store_unavailable`, and the request is read again behind the write, in the background, so
   * a change that did land is audited and acted on all the same: no transition goes unrecorded.
   */
  async function transition(
    id: string,
    decide: (r: AccessRequest, t: number) => Promise<AccessRequest> | AccessRequest,
    landed: (written: AccessRequest, before: AccessRequest) => Promise<void> | void,
  ): Promise<[AccessRequest, AccessRequest]> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const r = await load(id)
      const written = await decide(r, now())
      let ok: boolean
      try {
        ok = await deps.requests.update(written)
      } catch (err) {
        if (err instanceof StoreUnavailableError) {
          confirmLater(written, () => landed(written, r))
          throw new ApiError('store_unavailable', [`request ${id}: the store did not answer in time; the change may still land once it does: jitgate checks, and audits it if it did`])
        }
        throw err
      }
      if (ok) {
        await landed(written, r)
        return [written, r]
      }
    }
    throw new ApiError('wrong_state', ['the request kept changing concurrently; try again'])
  }

  /**
   * Reads `written` back behind its unconfirmed write until the store answers (bounded); runs `then`
   * if it landed. The store answers one connection's commands in order, so the read comes after the
   * write: the record read is either built on it (the write's id is at its version in `writes`),
   * or the write never landed (another writer took that version, or nobody did). Later changes
   * built on it do not hide it: they keep its id, and the change it made is as real as theirs.
   */
  /** Writes being read behind, until their outcome is known; reported at stop if it never is. */
  const unconfirmed = new Set<{ readonly id: string; readonly version: number; readonly since: number; timer: NodeJS.Timeout | undefined; check(): Promise<void> }>()
  let stopped = false

  function confirmLater(written: AccessRequest, then: () => Promise<void> | void): void {
    const started = Date.now()
    const entry = { id: written.id, version: written.version, since: started, timer: undefined as NodeJS.Timeout | undefined, check }
    unconfirmed.add(entry)
    async function check(): Promise<void> {
      let current: AccessRequest | undefined
      try {
        current = await deps.requests.get(written.id)
      } catch (err) {
        if (err instanceof StoreUnavailableError && Date.now() - started < RECONCILE_FOR_MS) {
          if (!stopped) entry.timer = setTimeout(run, RECONCILE_EVERY_MS).unref()
          return
        }
        unconfirmed.delete(entry)
        deps.log.warn({ access_request_id: written.id, err: String(err) }, 'gave up confirming a request store write: its outcome is unknown')
        return
      }
      unconfirmed.delete(entry)
      const fields = { access_request_id: written.id, version: written.version, current_version: current?.version }
      if (current === undefined || !builtOn(current, written)) {
        deps.log.info(fields, 'a request store write confirmed too late did not land: nothing to audit')
        return
      }
      deps.log.info(fields, current.version === written.version ? 'a request store write confirmed too late landed: audited now' : 'a request store write confirmed too late landed, and later changes built on it: audited now')
      await then()
    }
    const run = (): void => void check().catch((err: unknown) => deps.log.warn({ access_request_id: written.id, err: String(err) }, 'confirming a request store write failed'))
    setImmediate(run)
  }


  /** True when `current` is `written` or a later version built on it: see AccessRequest.writes. */
  function builtOn(current: AccessRequest, written: AccessRequest): boolean {
    const mine = written.writes?.at(-1)
    const writes = current.writes ?? []
    return mine !== undefined && current.version >= written.version && writes[writes.length - 1 - (current.version - written.version)] === mine
  }

  const refuse = (code: ApiErrorCode, detail?: string): ApiError => new ApiError(code, detail === undefined ? undefined : [detail])

  // ---- judging -------------------------------------------------------------------------------

  interface Judged {
    readonly sp: Subprocessor
    readonly entitlement: Entitlement
    readonly approval: ApprovalPolicy
    readonly auto: boolean
  }

  function judge(subject: string, resource: string, scopes: readonly string[], durationMs: number, ticket: string | undefined, mode: RequestKind, t: number): Judged {
    const p = deps.policy()
    const sp = p.principals.subprocessors.get(subject)
    if (sp === undefined) throw refuse('not_entitled', `sub-processor "${subject}" is not in policy version ${p.version}`)
    if (t >= sp.contractEndsAt) throw refuse('after_contract_end', `the contract ended ${new Date(sp.contractEndsAt).toISOString()}`)
    const res = p.resources.get(resource)
    if (res === undefined) throw refuse('unknown_resource', `resource "${resource}" is not in policy version ${p.version}`)
    const candidates = sp.entitlements.filter((e) => e.resource === resource)
    if (candidates.length === 0) throw refuse('not_entitled', `"${subject}" has no entitlement for "${resource}"`)

    let best: { rank: number; error: ApiError } | undefined
    const fail = (rank: number, code: ApiErrorCode, details: readonly string[]): void => {
      if (best === undefined || rank > best.rank) best = { rank, error: new ApiError(code, details) }
    }
    for (const e of candidates) {
      const breakGlass = mode === 'break_glass'
      if (breakGlass && e.breakGlass === undefined) {
        fail(0, 'break_glass_not_allowed', [`the entitlement for "${resource}" has no break_glass`])
        continue
      }
      const coverage = checkCoverage(scopes, e.scopes)
      if (!coverage.ok) {
        if (coverage.invalid.length > 0) throw new ApiError('invalid_scope', coverage.invalid)
        fail(1, 'scope_not_entitled', coverage.uncovered.map((s) => `${JSON.stringify(s)} is not within [${e.scopes.join('; ')}]`))
        continue
      }
      const max = Math.min(breakGlass ? (e.breakGlass?.maxDurationMs as number) : e.maxDurationMs, res.maxTtlMs)
      if (durationMs > max) {
        fail(2, 'duration_exceeds_max', [`${formatDuration(durationMs)} > ${formatDuration(max)}`])
        continue
      }
      if (!breakGlass && e.window !== undefined && !e.window.contains(t)) {
        fail(3, 'outside_window', [`requests are accepted ${e.window.source}`])
        continue
      }
      if (!breakGlass && e.requireTicket && ticket === undefined) {
        fail(4, 'ticket_required', ['ticket: this entitlement requires a ticket reference'])
        continue
      }
      const approval = p.principals.approvalPolicies.get(e.approval)
      if (approval === undefined) {
        fail(5, 'not_entitled', [`approval policy "${e.approval}" is not in policy version ${p.version}`])
        continue
      }
      const auto =
        !breakGlass && e.autoApprove !== undefined && durationMs <= e.autoApprove.maxDurationMs && checkCoverage(scopes, e.autoApprove.scopes).ok
      return { sp, entitlement: e, approval, auto }
    }
    throw (best as { error: ApiError }).error
  }

  /** A grant expiry: on a whole second (the token's `exp`), never past the contract end. */
  function grantExpiry(wanted: number, sp: Subprocessor): number {
    return Math.floor(Math.min(wanted, sp.contractEndsAt) / 1000) * 1000
  }

  /**
   * The grant validity an approval fixes: from now for a new grant; from the current expiry on for
   * an extension (whose grant must still be active, and used: an unclaimed grant's clock has not
   * started). With a claim-by window, the unclaimed grant lives until `grantClaimBy` and at most
   * until `grantExpiresAt` (claim-by time + duration, capped by the contract end).
   */
  async function grantWindow(r: AccessRequest, t: number): Promise<{ grantStartsAt: number; grantExpiresAt: number; grantClaimBy?: number }> {
    const sp = principals().subprocessors.get(r.subject)
    if (sp === undefined) throw refuse('not_entitled', `sub-processor "${r.subject}" is no longer in policy`)
    if (r.kind === 'extension') {
      const lookup = await stored(() => deps.grantStore.get(r.grantId))
      if (lookup.status !== 'active') throw refuse('wrong_state', 'the grant to extend is no longer active')
      if (isUnclaimed(lookup.grant)) throw refuse('wrong_state', UNCLAIMED)
      const expiresAt = grantExpiry(lookup.grant.expiresAt + r.durationMs, sp)
      if (expiresAt <= lookup.grant.expiresAt) throw refuse('after_contract_end', 'the grant already lasts until the contract end')
      return { grantStartsAt: lookup.grant.startsAt, grantExpiresAt: expiresAt }
    }
    if (r.claimWithinMs !== undefined) {
      const claimBy = grantExpiry(t + r.claimWithinMs, sp)
      if (claimBy <= t) throw refuse('after_contract_end', `the contract ends ${new Date(sp.contractEndsAt).toISOString()}`)
      return { grantStartsAt: t, grantExpiresAt: grantExpiry(claimBy + r.durationMs, sp), grantClaimBy: claimBy }
    }
    const expiresAt = grantExpiry(t + r.durationMs, sp)
    if (expiresAt <= t) throw refuse('after_contract_end', `the contract ends ${new Date(sp.contractEndsAt).toISOString()}`)
    return { grantStartsAt: t, grantExpiresAt: expiresAt }
  }

  /**
   * Until when a grant found missing after the approval can only have never been issued (so
   * issuing it now is a retry, never a second grant): its expiry; with a claim-by window, the
   * earliest a claimed grant could have ended (claimed at approval at the earliest, it lasts its
   * duration or until notAfter), and never past the claim-by time.
   */
  function reissueUntil(r: AccessRequest): number {
    const expiresAt = r.grantExpiresAt as number
    if (r.grantClaimBy === undefined) return expiresAt
    const earliestEnd = Math.floor(Math.min((r.grantStartsAt as number) + r.durationMs, expiresAt) / 1000) * 1000
    return Math.min(r.grantClaimBy, earliestEnd)
  }

  /** The grant an approved access or break-glass request names: fully determined by the record. */
  function grantOf(r: AccessRequest): Grant {
    const claimBy = r.grantClaimBy
    return {
      id: r.grantId,
      subject: r.subject,
      resource: r.resource,
      scopes: r.scopes,
      startsAt: r.grantStartsAt as number,
      expiresAt: claimBy ?? (r.grantExpiresAt as number),
      createdAt: r.decidedAt as number,
      issuedBy: r.decidedBy as string,
      reason: r.reason,
      policyVersion: r.policyVersion,
      accessRequestId: r.id,
      ...(claimBy !== undefined ? { claim: { by: claimBy, durationMs: r.durationMs, notAfter: r.grantExpiresAt as number } } : {}),
    }
  }

  // ---- transitions' effects --------------------------------------------------------------------

  const base = (r: AccessRequest) => ({ access_request_id: r.id, subject: r.subject, resource: r.resource })

  /**
   * After the approving transition: audit, count, notify, then issue (or extend) the grant. A
   * failure to issue is logged and left to the requester's next read, which issues the same grant.
   */
  async function approved(r: AccessRequest, ctx: CallContext, auto: boolean): Promise<void> {
    const actor = r.decidedBy as string
    audit.emit('request.approved', { ...base(r), request_id: ctx.requestId, actor, grant_id: r.grantId, ...(r.comment !== undefined ? { comment: r.comment } : {}) })
    if (r.kind === 'break_glass') metrics.outcomes.inc({ outcome: 'break_glass' })
    else if (auto) metrics.outcomes.inc({ outcome: 'auto_approved' })
    else {
      metrics.outcomes.inc({ outcome: 'approved' })
      metrics.approvalSeconds.observe(((r.decidedAt as number) - r.createdAt) / 1000)
    }
    try {
      const gctx = { actor, requestId: ctx.requestId, accessRequestId: r.id }
      if (r.kind === 'extension') await deps.grants.extend(r.grantId, r.grantExpiresAt as number, gctx)
      else await deps.grants.issueApproved(grantOf(r), gctx)
    } catch (err) {
      deps.log.error({ err, access_request_id: r.id, grant_id: r.grantId }, 'approved, but the grant could not be issued or extended yet')
    }
    if (r.kind !== 'break_glass') notifier.notify({ event: 'request.approved', at: r.decidedAt as number, request: r, actor })
  }

  async function expire(r: AccessRequest): Promise<void> {
    try {
      await transition(
        r.id,
        (cur) => {
          if (cur.status !== 'pending') throw refuse('wrong_state')
          return next(cur, { status: 'expired', decidedAt: cur.expiresAt, decidedBy: SYSTEM_ACTOR })
        },
        (won) => {
          audit.emit('request.expired', { ...base(won), actor: SYSTEM_ACTOR, expires_at: new Date(won.expiresAt).toISOString() })
          metrics.outcomes.inc({ outcome: 'expired' })
          notifier.notify({ event: 'request.expired', at: won.expiresAt, request: won })
        },
      )
    } catch (err) {
      if (err instanceof ApiError && err.code === 'wrong_state') return // another replica or action got there first
      throw err
    }
  }

  async function escalate(r: AccessRequest, t: number): Promise<void> {
    try {
      await transition(
        r.id,
        (cur) => {
          if (cur.status !== 'pending' || cur.escalatedAt !== undefined) throw refuse('wrong_state')
          return next(cur, { escalatedAt: t })
        },
        (won) => {
          const group = principals().approvalPolicies.get(won.approvalPolicy)?.escalationGroup
          audit.emit('request.escalated', { ...base(won), actor: SYSTEM_ACTOR, stage: currentStage(won) + 1 })
          notifier.notify({ event: 'request.escalated', at: t, request: won, ...(group !== undefined ? { escalationGroup: group } : {}) })
        },
      )
    } catch (err) {
      if (err instanceof ApiError && err.code === 'wrong_state') return
      throw err
    }
  }

  /** The first stage still short of approvals (stages.length when all are complete). */
  function currentStage(r: AccessRequest): number {
    for (let i = 0; i < r.stages.length; i++) {
      const have = r.approvals.filter((a) => a.stage === i).length
      if (have < (r.stages[i]?.approvals ?? 0)) return i
    }
    return r.stages.length
  }

  /** The escalation group, when it is admitted to approve this request now. */
  function admittedEscalation(r: AccessRequest, pr: Principals): string | undefined {
    const ap = pr.approvalPolicies.get(r.approvalPolicy)
    return r.escalatedAt !== undefined && ap?.escalationAdmits === true ? ap.escalationGroup : undefined
  }

  /** May approve the given stage: a member of its group, or of an admitted escalation group. */
  function mayApprove(a: Approver, r: AccessRequest, stage: number): boolean {
    const pr = principals()
    const group = r.stages[stage]?.group
    if (group !== undefined && isMember(a, pr.approverGroups.get(group))) return true
    const escalation = admittedEscalation(r, pr)
    return escalation !== undefined && isMember(a, pr.approverGroups.get(escalation))
  }

  /**
   * May deny, revoke or review: a member of any of the request's stage groups, or of the escalation
   * group when the policy admits it (`escalation_admits`).
   */
  function mayDecide(a: Approver, r: AccessRequest): boolean {
    const pr = principals()
    if (r.stages.some((s) => isMember(a, pr.approverGroups.get(s.group)))) return true
    const ap = pr.approvalPolicies.get(r.approvalPolicy)
    return ap?.escalationAdmits === true && ap.escalationGroup !== undefined && isMember(a, pr.approverGroups.get(ap.escalationGroup))
  }

  /** A member of a stage group of `ap`, or of its escalation group when the policy admits it. */
  function inApprovalPolicy(a: Approver, ap: ApprovalPolicy | undefined, pr: Principals): boolean {
    if (ap === undefined) return false
    if (ap.stages.some((s) => isMember(a, pr.approverGroups.get(s.group)))) return true
    return ap.escalationAdmits && ap.escalationGroup !== undefined && isMember(a, pr.approverGroups.get(ap.escalationGroup))
  }

  /** May revoke `grant` by its id: see `WorkflowService.revokeGrant`. */
  async function mayRevokeGrant(a: Approver, grant: Grant): Promise<boolean> {
    const pr = principals()
    const sp = pr.subprocessors.get(grant.subject)
    for (const e of sp?.entitlements ?? []) {
      if (e.resource === grant.resource && inApprovalPolicy(a, pr.approvalPolicies.get(e.approval), pr)) return true
    }
    // The request the grant came from, judged by its own stages. (A grant stored before grants
    // named their request has an id derived from the request's.)
    const requestId = grant.accessRequestId ?? (grant.id.startsWith('g_') ? `r_${grant.id.slice(2)}` : undefined)
    if (requestId === undefined) return false
    const r = await stored(() => deps.requests.get(requestId))
    return r !== undefined && r.grantId === grant.id && r.subject === grant.subject && mayDecide(a, r)
  }

  /** Refusals shared by every approver action, in the order a caller can act on them. */
  function checkApprover(a: Approver, r: AccessRequest): void {
    if (isRequester(a, r.subject)) throw refuse('self_approval')
    if (!a.mfa) throw refuse('mfa_required')
  }

  /** A pending request past its deadline is expired now (once), and the action refused. */
  async function checkPending(r: AccessRequest, t: number): Promise<void> {
    if (r.status === 'pending' && t >= r.expiresAt) {
      await expire(r)
      throw refuse('request_expired', `the request expired at ${new Date(r.expiresAt).toISOString()}`)
    }
    if (r.status !== 'pending') throw refuse('wrong_state', `the request is ${r.status}`)
  }

  // ---- the service -----------------------------------------------------------------------------

  async function open(r: AccessRequest, auto: boolean, ctx: CallContext): Promise<AccessRequest> {
    try {
      await deps.requests.create(r)
    } catch (err) {
      if (err instanceof StoreUnavailableError) {
        // A create that lands late is a request all the same: audited (and acted on) once seen.
        confirmLater(r, () => opened(r, auto, ctx))
        throw new ApiError('store_unavailable', [`request ${r.id}: the store did not answer in time; the request may still be recorded once it does: jitgate checks, and audits it if it is`])
      }
      throw err
    }
    await opened(r, auto, ctx)
    return r
  }

  /** Audits, notifies and (when approved at once) issues a request just stored. */
  async function opened(r: AccessRequest, auto: boolean, ctx: CallContext): Promise<void> {
    metrics.outcomes.inc({ outcome: 'created' })
    audit.emit('request.created', {
      ...base(r),
      request_id: ctx.requestId,
      actor: r.subject,
      scopes: r.scopes,
      reason: r.reason,
      ...(r.ticket !== undefined ? { ticket: r.ticket } : {}),
      expires_at: new Date(r.expiresAt).toISOString(),
    })
    if (r.kind === 'break_glass') {
      audit.emit('breakglass.used', {
        request_id: ctx.requestId,
        access_request_id: r.id,
        actor: r.subject,
        subject: r.subject,
        resource: r.resource,
        grant_id: r.grantId,
        reason: r.reason,
        scopes: r.scopes,
        expires_at: new Date(r.grantExpiresAt as number).toISOString(),
        ...(r.ticket !== undefined ? { ticket: r.ticket } : {}),
      })
      notifier.notify({ event: 'breakglass.used', at: r.createdAt, request: r, actor: r.subject })
    } else if (r.status === 'pending') {
      notifier.notify({ event: 'request.created', at: r.createdAt, request: r, actor: r.subject })
    }
    if (r.status === 'approved') await approved(r, ctx, auto)
  }

  /** A new request record, approved at once when `approveAs` names the approving actor. */
  async function draft(
    fields: Pick<AccessRequest, 'kind' | 'subject' | 'resource' | 'scopes' | 'durationMs' | 'reason' | 'grantId'> & { ticket?: string | undefined; extends?: string },
    judged: Judged,
    id: string,
    t: number,
    approveAs: string | undefined,
  ): Promise<AccessRequest> {
    const { approval } = judged
    const { ticket, ...rest } = fields
    const r: AccessRequest = {
      ...rest,
      id,
      version: 1,
      writes: [writeId()],
      ...(ticket !== undefined ? { ticket } : {}),
      policyVersion: deps.policy().version,
      approvalPolicy: approval.id,
      stages: approval.stages.map((s) => ({ group: s.group, approvals: s.approvals })),
      status: 'pending',
      createdAt: t,
      expiresAt: t + approval.requestTtlMs,
      ...(approval.escalateAfterMs !== undefined ? { escalateAt: t + approval.escalateAfterMs } : {}),
      // Break-glass grants start at once (an emergency is now); an extension moves a running grant.
      ...(fields.kind === 'access' && judged.entitlement.claimWithinMs !== undefined ? { claimWithinMs: judged.entitlement.claimWithinMs } : {}),
      approvals: [],
    }
    if (approveAs === undefined) return r
    return { ...r, status: 'approved', decidedAt: t, decidedBy: approveAs, ...(await grantWindow(r, t)) }
  }

  return {
    async stop() {
      stopped = true
      for (const entry of unconfirmed) clearTimeout(entry.timer)
      // The store may have answered since the last read: one more, for every write still unknown.
      await Promise.allSettled([...unconfirmed].map((entry) => entry.check()))
      if (unconfirmed.size === 0) return
      deps.log.warn(
        { unconfirmed: [...unconfirmed].map((e) => ({ access_request_id: e.id, version: e.version, since: new Date(e.since).toISOString() })) },
        'stopping with request store writes whose outcome is unknown: they may have taken effect without being audited',
      )
      unconfirmed.clear()
    },
    async create(subject, input, ctx) {
      const t = now()
      const kind: RequestKind = input.breakGlass === true ? 'break_glass' : 'access'
      const judged = judge(subject, input.resource, input.scopes, input.durationMs, input.ticket, kind, t)
      const rand = randomBytes(16).toString('base64url')
      const approveAs = kind === 'break_glass' ? subject : judged.auto ? AUTO_APPROVAL_ACTOR : undefined
      let r = await draft(
        { kind, subject, resource: input.resource, scopes: [...input.scopes], durationMs: input.durationMs, reason: input.reason, ticket: input.ticket, grantId: `g_${rand}` },
        judged,
        `r_${rand}`,
        t,
        approveAs,
      )
      if (kind === 'break_glass') r = { ...r, review: { status: 'open' } }
      return open(r, judged.auto, ctx)
    },

    async get(id) {
      const r = await load(id)
      if (r.status === 'pending' && now() >= r.expiresAt) {
        await expire(r)
        return load(id)
      }
      return r
    },

    list(filter) {
      return stored(() => deps.requests.list(filter))
    },

    async approve(id, approver, comment, ctx) {
      const [r] = await transition(id, async (cur, t) => {
        checkApprover(approver, cur)
        await checkPending(cur, t)
        if (cur.approvals.some((a) => a.approver === approver.id)) throw refuse('already_approved')
        const stage = currentStage(cur)
        if (!mayApprove(approver, cur, stage)) {
          throw refuse('not_an_approver', `stage ${stage + 1} needs a member of "${cur.stages[stage]?.group}"`)
        }
        const approvals = [...cur.approvals, { approver: approver.id, stage, at: t, ...(comment !== undefined ? { comment } : {}) }]
        const recorded = next(cur, { approvals })
        if (currentStage(recorded) < recorded.stages.length) return recorded
        return { ...recorded, status: 'approved', decidedAt: t, decidedBy: approver.id, ...(comment !== undefined ? { comment } : {}), ...(await grantWindow(cur, t)) }
      }, async (r, before) => {
        const stage = (r.approvals.at(-1) as { stage: number }).stage
        audit.emit('request.approval_recorded', { ...base(r), request_id: ctx.requestId, actor: approver.id, stage: stage + 1, ...(comment !== undefined ? { comment } : {}) })
        // This caller's write moved the request to approved: it, and only it, issues the grant.
        if (r.status === 'approved' && before.status === 'pending') await approved(r, ctx, false)
      })
      return r
    },

    async deny(id, approver, comment, ctx) {
      const [r] = await transition(id, async (cur, t) => {
        checkApprover(approver, cur)
        await checkPending(cur, t)
        if (!mayDecide(approver, cur)) throw refuse('not_an_approver')
        return next(cur, { status: 'denied', decidedAt: t, decidedBy: approver.id, ...(comment !== undefined ? { comment } : {}) })
      }, (r) => {
        audit.emit('request.denied', { ...base(r), request_id: ctx.requestId, actor: approver.id, ...(comment !== undefined ? { comment } : {}) })
        metrics.outcomes.inc({ outcome: 'denied' })
        notifier.notify({ event: 'request.denied', at: r.decidedAt as number, request: r, actor: approver.id })
      })
      return r
    },

    async cancel(id, subject, ctx) {
      await loadOwn(id, subject)
      const [r] = await transition(id, async (cur, t) => {
        await checkPending(cur, t)
        return next(cur, { status: 'cancelled', decidedAt: t, decidedBy: subject })
      }, (r) => {
        audit.emit('request.cancelled', { ...base(r), request_id: ctx.requestId, actor: subject })
        metrics.outcomes.inc({ outcome: 'cancelled' })
      })
      return r
    },

    async relinquish(id, subject, ctx) {
      const r = await loadOwn(id, subject)
      if (r.status !== 'approved') throw refuse('wrong_state', `the request is ${r.status}`)
      await revokeGrant(r, subject, 'relinquished by the requester', ctx)
    },

    async revoke(id, by, reason, ctx) {
      const r = await load(id)
      if (typeof by !== 'string') {
        checkApprover(by, r)
        if (!mayDecide(by, r)) throw refuse('not_an_approver')
      }
      if (r.status !== 'approved') throw refuse('wrong_state', `the request is ${r.status}`)
      await revokeGrant(r, typeof by === 'string' ? by : by.id, reason, ctx)
    },

    async revokeGrant(grantId, by, reason, ctx) {
      if (typeof by !== 'string') {
        const lookup = await stored(() => deps.grantStore.get(grantId))
        if (lookup.status === 'revoked') {
          const r = lookup.revocation
          throw refuse('grant_already_revoked', `revoked by ${r.revokedBy} at ${new Date(r.revokedAt).toISOString()}: ${r.reason}`)
        }
        if (lookup.status !== 'active') throw refuse('grant_not_found')
        if (isRequester(by, lookup.grant.subject)) throw refuse('self_approval', 'a requester ends its own grant with POST /v1/requests/{id}/relinquish')
        if (!by.mfa) throw refuse('mfa_required')
        if (!(await mayRevokeGrant(by, lookup.grant))) {
          throw refuse('not_an_approver', `not in a group of an approval policy of "${lookup.grant.subject}" for "${lookup.grant.resource}"`)
        }
      }
      await deps.grants.revoke(grantId, typeof by === 'string' ? by : by.id, reason, ctx.requestId)
    },

    async grantsFor(approver) {
      const all = await stored(() => deps.grantStore.list())
      const mine: Grant[] = []
      for (const g of all) if (!isRequester(approver, g.subject) && (await mayRevokeGrant(approver, g))) mine.push(g)
      return mine
    },

    async extend(id, subject, input, ctx) {
      const original = await loadOwn(id, subject)
      if (original.status !== 'approved') throw refuse('wrong_state', `the request is ${original.status}`)
      if (original.kind === 'break_glass') throw refuse('wrong_state', 'a break-glass grant cannot be extended: request access')
      const lookup = await stored(() => deps.grantStore.get(original.grantId))
      if (lookup.status !== 'active') throw refuse('wrong_state', 'the grant is no longer active')
      if (isUnclaimed(lookup.grant)) throw refuse('wrong_state', UNCLAIMED)
      const t = now()
      const judged = judge(subject, original.resource, original.scopes, input.durationMs, input.ticket ?? original.ticket, 'extension', t)
      const r = await draft(
        {
          kind: 'extension',
          subject,
          resource: original.resource,
          scopes: original.scopes,
          durationMs: input.durationMs,
          reason: input.reason,
          ticket: input.ticket ?? original.ticket,
          grantId: original.grantId,
          extends: original.id,
        },
        judged,
        `r_${randomBytes(16).toString('base64url')}`,
        t,
        judged.auto ? AUTO_APPROVAL_ACTOR : undefined,
      )
      return open(r, judged.auto, ctx)
    },

    async review(id, approver, comment, ctx) {
      const [r] = await transition(id, (cur, t) => {
        checkApprover(approver, cur)
        if (cur.review?.status !== 'open') throw refuse('wrong_state', 'no open break-glass review')
        if (!mayDecide(approver, cur)) throw refuse('not_an_approver')
        return next(cur, { review: { status: 'closed', reviewedBy: approver.id, reviewedAt: t, ...(comment !== undefined ? { comment } : {}) } })
      }, (r) => {
        audit.emit('breakglass.reviewed', {
          request_id: ctx.requestId,
          access_request_id: r.id,
          actor: approver.id,
          subject: r.subject,
          resource: r.resource,
          grant_id: r.grantId,
          ...(comment !== undefined ? { comment } : {}),
        })
      })
      return r
    },

    async grantState(r, ctx) {
      if (r.status !== 'approved') return { status: 'not_issued' }
      let lookup = await stored(() => deps.grantStore.get(r.grantId))
      // Approved but never issued (the issuing replica failed in between): issue the same grant
      // now. A revoked grant keeps its tombstone until it would have expired, so this can never
      // bring back a revoked grant.
      if (lookup.status === 'not_found' && r.kind !== 'extension' && reissueUntil(r) > now()) {
        await deps.grants.issueApproved(grantOf(r), { actor: r.decidedBy as string, requestId: ctx.requestId, accessRequestId: r.id })
        lookup = await stored(() => deps.grantStore.get(r.grantId))
      }
      if (lookup.status === 'active') return { status: 'active', grant: lookup.grant }
      return { status: lookup.status === 'revoked' ? 'revoked' : 'expired' }
    },

    token(grant) {
      return deps.tokens().issue(grant)
    },

    isApprover(approver) {
      for (const group of principals().approverGroups.values()) if (isMember(approver, group)) return true
      return false
    },

    async sweep() {
      const t = now()
      const open = await deps.requests.listOpen()
      for (const r of open) {
        try {
          if (r.status !== 'pending') continue
          if (t >= r.expiresAt) await expire(r)
          else if (r.escalateAt !== undefined && r.escalatedAt === undefined && t >= r.escalateAt) await escalate(r, t)
        } catch (err) {
          deps.log.warn({ err, access_request_id: r.id }, 'sweep: could not expire or escalate a request')
        }
      }
    },
  }

  async function revokeGrant(r: AccessRequest, actor: string, reason: string, ctx: CallContext): Promise<void> {
    try {
      await deps.grants.revoke(r.grantId, actor, reason, ctx.requestId)
    } catch (err) {
      if (err instanceof ApiError && err.code === 'grant_not_found') throw refuse('wrong_state', 'the grant is no longer active')
      throw err
    }
  }
}

/**
 * Issuing and revoking grants: checks against policy, writes to the grant store, signs the token,
 * audits. The control-plane API calls this; the approval workflow calls `issueApproved` on final
 * approval and `extend` on an approved extension; the gateway's expiry sweep calls `reportExpired`.
 */
import { randomBytes } from 'node:crypto'
import type { Grant, GrantLookup, GrantNonces, GrantStore, Revocation } from '../grants/types.js'
import { GrantExistsError, StoreUnavailableError } from '../grants/types.js'
import type { Policy } from '../policy/policy.js'
import { parseScope } from '../policy/scope.js'
import { assessGrant, unentitledScopes, type GrantStanding } from '../policy/entitlements.js'
import type { TokenIssuer } from '../authn/token.js'
import type { AuditLog } from '../audit/audit-log.js'
import type { GatewayMetrics } from '../metrics/metrics.js'
import { ApiError } from './errors.js'
import { formatDuration } from '../util/duration.js'

export interface IssueGrantInput {
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  readonly ttlMs: number
  readonly reason?: string
  readonly actor: string
  readonly requestId: string
}

export interface IssuedGrant {
  readonly grant: Grant
  readonly token: string
  /**
   * Why the grant, though issued, is refused right now (a scope whose entitlement's window,
   * enforced at use, excludes the present): said at once rather than left for the first 403.
   */
  readonly warnings?: readonly string[]
}

/** Who acted, in which API call, for which access request: what the audit events name. */
export interface GrantContext {
  readonly actor: string
  readonly requestId: string
  readonly accessRequestId: string
}

export interface GrantService {
  issue(input: IssueGrantInput): Promise<IssuedGrant>
  /**
   * Stores a grant exactly as given: the grant an approved access request names, with an id
   * derived from the request. Idempotent: resolves false (and audits nothing) when a grant with
   * this id exists or existed, so a retried issue can never create a second grant.
   */
  issueApproved(grant: Grant, ctx: GrantContext): Promise<boolean>
  /** Moves an active grant's expiry (never earlier); `grant_not_found` when it is not active. */
  extend(id: string, expiresAt: number, ctx: GrantContext): Promise<Grant>
  revoke(id: string, actor: string, reason: string, requestId: string): Promise<Revocation>
  /**
   * Writes `grant.expired` for each grant the store hands over as expired (once per grant across
   * every replica: see GrantStore.claimExpired). Resolves with how many; rejects with
   * StoreUnavailableError when the store cannot be read (the next sweep retries).
   */
  reportExpired(): Promise<number>
  /**
   * Stops reading behind writes the store did not confirm in time (call before the store and the
   * audit trail close): each is read once more, and those whose outcome is still unknown are
   * logged, by grant id, with what an operator should do about each.
   */
  stop(): Promise<void>
}

export interface GrantServiceDeps {
  readonly store: GrantStore
  readonly policy: () => Policy
  readonly tokens: () => TokenIssuer
  readonly audit: AuditLog
  readonly metrics: GatewayMetrics
  readonly now?: () => number
  /** The operational log: writes the store confirmed too late, or never. */
  readonly log?: { warn(fields: object, msg: string): void; info(fields: object, msg: string): void }
}

/** How long, at most, a write the store did not confirm in time is checked on, and how often. */
export const RECONCILE_FOR_MS = 10 * 60_000
export const RECONCILE_EVERY_MS = 500
/** Who revokes an operator's grant whose issue was confirmed too late (its token was never handed out). */
export const RECONCILE_ACTOR = 'system'
export const UNCONFIRMED_ISSUE_REASON = 'issue confirmed too late: the caller was told it failed and never received the token'

/** A write the store did not confirm in time, whose outcome is still unknown (see `unconfirmed`). */
interface PendingWrite {
  readonly operation: 'issue' | 'revoke' | 'extend'
  readonly id: string
  readonly since: number
  /** What an operator should do if jitgate never learns the outcome. */
  readonly followUp: string
  /** One read behind the write: false while the store stays away (the outcome still unknown). */
  readonly settle: () => Promise<boolean>
  timer?: NodeJS.Timeout
}

/** 128 random bits, URL-safe: grant ids appear in paths and are the token's `jti`. */
export function newGrantId(): string {
  return `g_${randomBytes(16).toString('base64url')}`
}

/** Names one store write, so that a read behind it tells it from a concurrent call's (see `unconfirmed`). */
function newNonce(): string {
  return randomBytes(12).toString('base64url')
}

/**
 * True when the grant's record, or its tombstone if a revoke came since, carries `nonce` as the
 * `which` write's: that very call's write landed (a revoke keeps the grant's nonces).
 */
function wroteIt(lookup: GrantLookup, which: keyof GrantNonces, nonce: string): boolean {
  const nonces = lookup.status === 'active' ? lookup.grant.nonces : lookup.status === 'revoked' ? lookup.revocation.grantNonces : undefined
  return nonces?.[which] === nonce
}

export function createGrantService(deps: GrantServiceDeps): GrantService {
  const now = deps.now ?? Date.now

  /** Writes still being read behind; `stop` reads each once more and logs what is left. */
  const pending = new Set<PendingWrite>()
  /** Reads (and the audit or revocation that follows one that found its write) under way. */
  const reading = new Set<Promise<void>>()
  let stopped = false
  /** `stop` has logged what was left: a write left unconfirmed after that is logged on its own. */
  let reported = false

  /**
   * A write the store did not confirm within its deadline may still land: it was sent, and a hung
   * Redis runs it once it answers again. The caller is told `store_unavailable` at once; meanwhile
   * this finds out what happened by reading the grant behind the write (Redis answers one
   * connection's commands in order, so the read sees the write if it ran), retrying while the
   * store stays away (at most RECONCILE_FOR_MS), and hands a write that landed to `onLanded`, which
   * audits it like any other: no change to a grant goes unrecorded. `landed` recognizes the write
   * by the nonce the call sent with it (kept in the grant's record by a create or an extend, in the
   * tombstone by a revoke), never by what it wrote: two calls writing the same thing during one
   * hang (a retry, two replicas) are then audited once, for the one whose write took effect. The
   * one gap is a gateway that stops, or gives up, before the store answers: the write is then
   * logged with `followUp`.
   */
  function unconfirmed(
    what: PendingWrite['operation'],
    id: string,
    followUp: string,
    landed: (lookup: GrantLookup) => boolean,
    onLanded: (lookup: GrantLookup) => Promise<void> | void,
  ): ApiError {
    const write: PendingWrite = {
      operation: what,
      id,
      since: Date.now(),
      followUp,
      async settle() {
        let lookup: GrantLookup
        try {
          lookup = await deps.store.get(id)
        } catch (err) {
          if (err instanceof StoreUnavailableError) return false
          throw err
        }
        pending.delete(write)
        if (!landed(lookup)) return true
        deps.log?.info({ grant_id: id, operation: what }, 'a grant store write confirmed too late landed: audited now')
        await onLanded(lookup)
        return true
      },
    }
    // A control-plane call still running when the gateway stopped (its connection cut, its
    // handler not): nobody will read behind its write, so say so now.
    if (reported) deps.log?.warn({ grant_id: id, operation: what, follow_up: followUp }, 'a grant store write was not confirmed after the gateway stopped: its outcome is unknown')
    else pending.add(write)
    const run = (): void => {
      // Once stopping, `stop` makes the last read itself.
      if (stopped) return
      const read = write
        .settle()
        .then(
          (settled) => {
            if (settled || stopped) return
            if (Date.now() - write.since < RECONCILE_FOR_MS) {
              write.timer = setTimeout(run, RECONCILE_EVERY_MS).unref()
              return
            }
            pending.delete(write)
            deps.log?.warn({ grant_id: id, operation: what, follow_up: followUp }, 'gave up confirming a grant store write: its outcome is unknown')
          },
          (err: unknown) => {
            pending.delete(write)
            deps.log?.warn({ grant_id: id, operation: what, follow_up: followUp, err: String(err) }, 'confirming a grant store write failed')
          },
        )
        .finally(() => reading.delete(read))
      reading.add(read)
    }
    write.timer = setTimeout(run, 0).unref()
    return new ApiError('store_unavailable', [
      `grant ${id}: the grant store did not answer in time; the ${what} may still take effect once it does: jitgate checks, and audits what happened`,
    ])
  }

  function auditIssued(grant: Grant, ctx: { readonly requestId: string; readonly actor: string; readonly accessRequestId?: string }): void {
    deps.metrics.grantsIssued.inc()
    deps.audit.emit('grant.issued', {
      request_id: ctx.requestId,
      ...(ctx.accessRequestId !== undefined ? { access_request_id: ctx.accessRequestId } : {}),
      actor: ctx.actor,
      subject: grant.subject,
      grant_id: grant.id,
      resource: grant.resource,
      scopes: grant.scopes,
      starts_at: new Date(grant.startsAt).toISOString(),
      expires_at: new Date(grant.expiresAt).toISOString(),
      ...(grant.reason !== undefined ? { reason: grant.reason } : {}),
      ...(grant.claim !== undefined ? { claim_by: new Date(grant.claim.by).toISOString() } : {}),
    })
  }

  function auditRevoked(id: string, revocation: Revocation, requestId: string): void {
    deps.metrics.grantsRevoked.inc()
    deps.audit.emit('grant.revoked', {
      request_id: requestId,
      actor: revocation.revokedBy,
      reason: revocation.reason,
      grant_id: id,
      subject: revocation.subject,
      resource: revocation.resource,
    })
  }

  async function revokeAndAudit(id: string, actor: string, reason: string, requestId: string): Promise<Revocation | null> {
    // Names this call's tombstone: a retried revoke (same actor, same reason) unconfirmed alongside
    // it must not take the other's tombstone for its own and audit the revocation twice.
    const nonce = newNonce()
    let revocation: Revocation | null
    try {
      revocation = await deps.store.revoke(id, actor, reason, nonce)
    } catch (err) {
      if (err instanceof StoreUnavailableError) {
        throw unconfirmed(
          'revoke',
          id,
          'revoke the grant again if it is still active (its grant.revoked is not in the audit trail if this revoke took effect)',
          (l) => l.status === 'revoked' && l.revocation.nonce === nonce,
          (l) => auditRevoked(id, (l as { revocation: Revocation }).revocation, requestId),
        )
      }
      throw err
    }
    if (revocation) auditRevoked(id, revocation, requestId)
    return revocation
  }

  /**
   * Stores a new grant, counts and audits it. False when a grant with this id exists already
   * (an approved request's grant issued by another replica or an earlier try): nothing is done.
   */
  async function storeAndAudit(
    grant: Grant,
    ctx: { readonly requestId: string; readonly actor: string; readonly accessRequestId?: string },
    /** The caller is the only one who could hand out the token: a grant that lands too late is revoked. */
    handedOutByCaller: boolean,
  ): Promise<boolean> {
    // Names this call's create: an approved request's grant has an id derived from the request, so
    // a retried issue, or another replica's, unconfirmed alongside this one writes the same grant.
    const nonce = newNonce()
    try {
      await deps.store.create(grant, nonce)
    } catch (err) {
      if (err instanceof GrantExistsError) return false
      if (err instanceof StoreUnavailableError) {
        throw unconfirmed(
          'issue',
          grant.id,
          handedOutByCaller
            ? 'revoke the grant if it exists: the caller was told the issue failed and its token was never handed out (nor is its grant.issued in the audit trail)'
            : 'nothing to undo (the requester fetches the grant), but its grant.issued is not in the audit trail if it was stored',
          (l) => wroteIt(l, 'issue', nonce),
          async () => {
            auditIssued(grant, ctx)
            // An approved request's grant is the requester's to fetch; an operator's token died with the failed call.
            if (handedOutByCaller) await revokeAndAudit(grant.id, RECONCILE_ACTOR, UNCONFIRMED_ISSUE_REASON, ctx.requestId).catch(() => {})
          },
        )
      }
      throw err
    }
    auditIssued(grant, ctx)
    return true
  }
  /** The grant's scopes that a window enforced at use closes at `t`. */
  function closedWindows(standing: GrantStanding, t: number): string[] {
    if (standing.kind !== 'entitled' || standing.unrestricted) return []
    const out: string[] = []
    for (const s of standing.scopes) {
      if (s.windows === undefined || s.windows.some((w) => w.contains(t))) continue
      const windows = [...new Set(s.windows.map((w) => w.source))].join(' or ')
      out.push(`${JSON.stringify(s.scope.source)}: outside its entitlement's window ${windows}, enforced at use: refused (outside_window) until the window opens`)
    }
    return out
  }

  return {
    async issue(input) {
      const policy = deps.policy()
      const resource = policy.resources.get(input.resource)
      if (!resource) throw new ApiError('unknown_resource', [`resource "${input.resource}" is not in policy version ${policy.version}`])
      const scopeErrors: string[] = []
      for (const s of input.scopes) {
        const parsed = parseScope(s)
        if (!parsed.ok) scopeErrors.push(`${JSON.stringify(s)}: ${parsed.error}`)
        else if (resource.pathPrefix !== undefined && !scopeWithinPrefix(s, resource.pathPrefix)) {
          scopeErrors.push(`${JSON.stringify(s)}: path is outside the resource's prefix ${resource.pathPrefix}`)
        }
      }
      if (scopeErrors.length > 0) throw new ApiError('invalid_scope', scopeErrors)
      // Once the policy declares sub-processors, an operator's grant too must be within one of the
      // subject's entitlements: otherwise the data plane would refuse it (grant_not_entitled).
      const standing = assessGrant(policy, { subject: input.subject, resource: resource.id, scopes: input.scopes })
      if (standing.kind === 'not_entitled') throw new ApiError('not_entitled', [standing.detail])
      const outside = unentitledScopes(standing)
      if (outside.length > 0) {
        throw new ApiError('scope_not_entitled', outside.map((s) => `${JSON.stringify(s)} is not within an entitlement of "${input.subject}" for "${resource.id}"`))
      }
      if (input.ttlMs > resource.maxTtlMs) {
        throw new ApiError('ttl_exceeds_max', [`ttl ${formatDuration(input.ttlMs)} > max_ttl ${formatDuration(resource.maxTtlMs)}`])
      }
      const t = now()
      // Token times are whole seconds; keep the grant's expiry on the same second so both end together.
      const expiresAt = Math.floor((t + input.ttlMs) / 1000) * 1000
      const grant: Grant = Object.freeze({
        id: newGrantId(),
        subject: input.subject,
        resource: resource.id,
        scopes: Object.freeze([...input.scopes]),
        startsAt: t,
        expiresAt,
        createdAt: t,
        issuedBy: input.actor,
        ...(input.reason !== undefined ? { reason: input.reason } : {}),
        policyVersion: policy.version,
      })
      const token = await deps.tokens().issue(grant)
      // A fresh random id cannot collide; if it ever did, failing is right (never two grants, one id).
      if (!(await storeAndAudit(grant, { requestId: input.requestId, actor: input.actor }, true))) {
        throw new Error(`grant id ${grant.id} already exists`)
      }
      const warnings = closedWindows(standing, t)
      return warnings.length > 0 ? { grant, token, warnings } : { grant, token }
    },

    issueApproved(grant, ctx) {
      return storeAndAudit(grant, ctx, false)
    },

    async extend(id, expiresAt, ctx) {
      let lookup: GrantLookup
      try {
        lookup = await deps.store.get(id)
      } catch (err) {
        if (err instanceof StoreUnavailableError) throw new ApiError('store_unavailable')
        throw err
      }
      if (lookup.status !== 'active') throw new ApiError('grant_not_found')
      const before = lookup.grant
      // Names this call's extension: another call extending the grant to the same expiry (a
      // retried approval, another replica) writes the same expiry, and only the one whose write
      // moved it is audited, confirmed or read back late.
      const nonce = newNonce()
      const audited = (): void => {
        deps.audit.emit('grant.extended', {
          request_id: ctx.requestId,
          access_request_id: ctx.accessRequestId,
          actor: ctx.actor,
          grant_id: id,
          subject: before.subject,
          resource: before.resource,
          expires_at: new Date(expiresAt).toISOString(),
          previous_expires_at: new Date(before.expiresAt).toISOString(),
        })
      }
      let after: Grant | null
      try {
        after = await deps.store.extend(id, expiresAt, nonce)
      } catch (err) {
        if (err instanceof StoreUnavailableError) {
          throw unconfirmed(
            'extend',
            id,
            'nothing to undo, but its grant.extended is not in the audit trail if the grant has the new expiry',
            (l) => wroteIt(l, 'extend', nonce),
            audited,
          )
        }
        throw err
      }
      if (after === null) throw new ApiError('grant_not_found')
      // Not moved by this call (already as late, or another call's write): nothing to audit.
      if (after.nonces?.extend === nonce) audited()
      return after
    },

    async revoke(id, actor, reason, requestId) {
      const revocation = await revokeAndAudit(id, actor, reason, requestId)
      if (revocation) return revocation
      // Nothing active to revoke: say whether it was revoked already (its tombstone lives as long
      // as the grant would have) or is unknown or expired.
      const lookup = await deps.store.get(id).catch(() => ({ status: 'not_found' }) as const)
      if (lookup.status === 'revoked') {
        const r = lookup.revocation
        throw new ApiError('grant_already_revoked', [`revoked by ${r.revokedBy} at ${new Date(r.revokedAt).toISOString()}: ${r.reason}`])
      }
      throw new ApiError('grant_not_found')
    },

    async reportExpired() {
      const expired = await deps.store.claimExpired()
      deps.metrics.grantsExpired.inc(expired.length)
      for (const grant of expired) {
        deps.audit.emit('grant.expired', {
          grant_id: grant.id,
          subject: grant.subject,
          resource: grant.resource,
          scopes: grant.scopes,
          starts_at: new Date(grant.startsAt).toISOString(),
          expires_at: new Date(grant.expiresAt).toISOString(),
        })
      }
      return expired.length
    },

    async stop() {
      stopped = true
      for (const write of pending) clearTimeout(write.timer)
      await Promise.allSettled([...reading])
      // The store may have answered since the last read: one more, for every write still unknown.
      await Promise.allSettled([...pending].map((write) => write.settle()))
      reported = true
      if (pending.size === 0) return
      deps.log?.warn(
        {
          unconfirmed: [...pending].map((w) => ({ grant_id: w.id, operation: w.operation, since: new Date(w.since).toISOString(), follow_up: w.followUp })),
        },
        'stopping with grant store writes whose outcome is unknown: they may have taken effect without being audited',
      )
      pending.clear()
    },
  }
}

/** A scope's path must stay under the resource's prefix (otherwise it could never match anyway). */
function scopeWithinPrefix(scope: string, prefix: string): boolean {
  const path = scope.trim().split(/\s+/)[1] ?? ''
  if (prefix === '/') return true
  return path === prefix || path.startsWith(`${prefix}/`) || path.startsWith('/*')
}

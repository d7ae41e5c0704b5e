/**
 * Issuing and revoking grants: checks against policy, writes to the grant store, signs the token,
 * audits. The control-plane API calls this; the approval workflow calls `issueApproved` on final
 * approval and `extend` on an approved extension; the gateway's expiry sweep calls `reportExpired`.
 */
import { randomBytes } from 'node:crypto'
import type { Grant, GrantStore, Revocation } from '../grants/types.js'
import { GrantExistsError, StoreUnavailableError } from '../grants/types.js'
import type { Policy } from '../policy/policy.js'
import { parseScope } from '../policy/scope.js'
import { assessGrant, unentitledScopes } from '../policy/entitlements.js'
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
}

export interface GrantServiceDeps {
  readonly store: GrantStore
  readonly policy: () => Policy
  readonly tokens: () => TokenIssuer
  readonly audit: AuditLog
  readonly metrics: GatewayMetrics
  readonly now?: () => number
}

/** 128 random bits, URL-safe: grant ids appear in paths and are the token's `jti`. */
export function newGrantId(): string {
  return `g_${randomBytes(16).toString('base64url')}`
}

export function createGrantService(deps: GrantServiceDeps): GrantService {
  const now = deps.now ?? Date.now

  /**
   * Stores a new grant, counts and audits it. False when a grant with this id exists already
   * (an approved request's grant issued by another replica or an earlier try): nothing is done.
   */
  async function storeAndAudit(
    grant: Grant,
    ctx: { readonly requestId: string; readonly actor: string; readonly accessRequestId?: string },
  ): Promise<boolean> {
    try {
      await deps.store.create(grant)
    } catch (err) {
      if (err instanceof GrantExistsError) return false
      if (err instanceof StoreUnavailableError) throw new ApiError('store_unavailable')
      throw err
    }
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
    return true
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
      if (!(await storeAndAudit(grant, { requestId: input.requestId, actor: input.actor }))) {
        throw new Error(`grant id ${grant.id} already exists`)
      }
      return { grant, token }
    },

    issueApproved(grant, ctx) {
      return storeAndAudit(grant, ctx)
    },

    async extend(id, expiresAt, ctx) {
      let before: Grant | undefined
      let after: Grant | null
      try {
        const lookup = await deps.store.get(id)
        if (lookup.status === 'active') before = lookup.grant
        after = before === undefined ? null : await deps.store.extend(id, expiresAt)
      } catch (err) {
        if (err instanceof StoreUnavailableError) throw new ApiError('store_unavailable')
        throw err
      }
      if (before === undefined || after === null) throw new ApiError('grant_not_found')
      if (after.expiresAt > before.expiresAt) {
        deps.audit.emit('grant.extended', {
          request_id: ctx.requestId,
          access_request_id: ctx.accessRequestId,
          actor: ctx.actor,
          grant_id: id,
          subject: after.subject,
          resource: after.resource,
          expires_at: new Date(after.expiresAt).toISOString(),
          previous_expires_at: new Date(before.expiresAt).toISOString(),
        })
      }
      return after
    },

    async revoke(id, actor, reason, requestId) {
      let revocation: Revocation | null
      try {
        revocation = await deps.store.revoke(id, actor, reason)
      } catch (err) {
        if (err instanceof StoreUnavailableError) throw new ApiError('store_unavailable')
        throw err
      }
      if (!revocation) throw new ApiError('grant_not_found')
      deps.metrics.grantsRevoked.inc()
      deps.audit.emit('grant.revoked', {
        request_id: requestId,
        actor,
        reason,
        grant_id: id,
        subject: revocation.subject,
        resource: revocation.resource,
      })
      return revocation
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
  }
}

/** A scope's path must stay under the resource's prefix (otherwise it could never match anyway). */
function scopeWithinPrefix(scope: string, prefix: string): boolean {
  const path = scope.trim().split(/\s+/)[1] ?? ''
  if (prefix === '/') return true
  return path === prefix || path.startsWith(`${prefix}/`) || path.startsWith('/*')
}

/**
 * How a grant stands against the policy in force: a grant is only as good as the entitlement behind
 * it. When the policy tightens (a sub-processor or an entitlement removed, scopes narrowed, a window
 * enforced at use, a contract ended), requests under grants issued earlier stop passing, without
 * anyone revoking them.
 *
 * - The policy declares no sub-processors at all: grants are not tied to entitlements (`unbound`).
 *   This keeps the operator-issued grants of a policy with resources only working as before.
 * - Otherwise the grant's subject must be a declared sub-processor, its contract must not have ended,
 *   and the request must fall within a grant scope that some entitlement of that sub-processor for
 *   that resource still covers (`scopeCovers`); else `grant_not_entitled`.
 * - When every entitlement covering that grant scope has `enforce_window_at_use`, the request must
 *   also fall inside one of their windows; else `outside_window`.
 *
 * A grant whose resource was removed never gets here: its requests match no route
 * (`route_not_found`), or reach another resource, for which its token's audience is wrong
 * (`token_invalid`). A request is never forwarded to a resource its grant does not name.
 *
 * `assessGrant` does the work once per (policy version, grant); `checkGrantUse` is the per-request
 * part: a few comparisons, and for an unrestricted grant (every scope entitled, no window) one.
 */
import type { Policy } from './policy.js'
import type { Entitlement, Subprocessor, TimeWindow } from './principals.js'
import { compileScopes, scopeCovers, type CompiledScope } from './scope.js'

/** One of a grant's scopes, and what still entitles it. */
export interface EntitledScope {
  /** The grant's scope. */
  readonly scope: CompiledScope
  /** The entitlements (and their scope pattern) that cover it; empty: no longer entitled. */
  readonly covering: readonly { readonly entitlement: Entitlement; readonly pattern: CompiledScope }[]
  /** Undefined: usable at any time. Otherwise usable while any of these windows holds. */
  readonly windows: readonly TimeWindow[] | undefined
}

export type GrantStanding =
  /** The policy declares no sub-processors: grants are not tied to entitlements. */
  | { readonly kind: 'unbound' }
  /** Nothing entitles this grant any more. */
  | { readonly kind: 'not_entitled'; readonly detail: string }
  | {
      readonly kind: 'entitled'
      readonly subprocessor: Subprocessor
      readonly scopes: readonly EntitledScope[]
      /** Every scope entitled and none restricted to a window: only the contract end is checked. */
      readonly unrestricted: boolean
    }

export type GrantUse =
  | { readonly ok: true }
  | { readonly ok: false; readonly code: 'grant_not_entitled' | 'outside_window'; readonly detail: string }

const OK: GrantUse = Object.freeze({ ok: true })

/** What the policy says of a grant's subject, resource and scopes. */
export function assessGrant(
  policy: Policy,
  grant: { readonly subject: string; readonly resource: string; readonly scopes: readonly string[] },
): GrantStanding {
  if (policy.principals.subprocessors.size === 0) return { kind: 'unbound' }
  const subprocessor = policy.principals.subprocessors.get(grant.subject)
  const entitlements = policy.entitlementsOf(grant.subject, grant.resource)
  if (subprocessor === undefined || entitlements === undefined) {
    return { kind: 'not_entitled', detail: `"${grant.subject}" is not a sub-processor in policy ${policy.version}` }
  }
  if (entitlements.length === 0) {
    // The first thing a newcomer meets after adding a resource: say where the missing piece goes.
    return {
      kind: 'not_entitled',
      detail: `"${grant.subject}" has no entitlement for resource "${grant.resource}" in policy ${policy.version} (a sub-processor's grants need one: its entitlements in the policy, see README "Sub-processors, entitlements and approvals")`,
    }
  }
  let unrestricted = true
  const scopes = compileScopes(grant.scopes).scopes.map((scope): EntitledScope => {
    const covering: EntitledScope['covering'][number][] = []
    for (const entitlement of entitlements) {
      const pattern = entitlement.scopeSet.scopes.find((p) => scopeCovers(p, scope))
      if (pattern !== undefined) covering.push({ entitlement, pattern })
    }
    const windows = covering.every((c) => c.entitlement.enforceWindowAtUse && c.entitlement.window !== undefined)
      ? covering.map((c) => c.entitlement.window as TimeWindow)
      : undefined
    if (covering.length === 0 || windows !== undefined) unrestricted = false
    return { scope, covering, windows }
  })
  return { kind: 'entitled', subprocessor, scopes, unrestricted }
}

/**
 * Whether a request the grant's scopes allow may pass under the policy (see the module comment).
 * Call it only after the grant's own scopes allowed the request.
 * @param at - the request time, epoch ms.
 */
export function checkGrantUse(standing: GrantStanding, method: string, path: string, at: number): GrantUse {
  if (standing.kind === 'unbound') return OK
  if (standing.kind === 'not_entitled') return { ok: false, code: 'grant_not_entitled', detail: standing.detail }
  const sp = standing.subprocessor
  if (at >= sp.contractEndsAt) {
    return { ok: false, code: 'grant_not_entitled', detail: `the contract of "${sp.id}" ended ${new Date(sp.contractEndsAt).toISOString()}` }
  }
  if (standing.unrestricted) return OK
  let windows: TimeWindow[] | undefined
  for (const s of standing.scopes) {
    if (s.covering.length === 0 || !s.scope.matches(method, path)) continue
    if (s.windows === undefined || s.windows.some((w) => w.contains(at))) return OK
    ;(windows ??= []).push(...s.windows)
  }
  if (windows !== undefined) {
    return { ok: false, code: 'outside_window', detail: `outside the entitlement's window ${[...new Set(windows.map((w) => w.source))].join(' or ')}` }
  }
  return { ok: false, code: 'grant_not_entitled', detail: 'the grant scope that allows this request is no longer within an entitlement' }
}

/** The grant's scopes no entitlement covers (for refusing to issue such a grant). */
export function unentitledScopes(standing: GrantStanding): string[] {
  return standing.kind === 'entitled' ? standing.scopes.filter((s) => s.covering.length === 0).map((s) => s.scope.source) : []
}

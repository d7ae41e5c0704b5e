/**
 * `jitgate policy diff`: what a policy change adds, removes and changes (resources, sub-processors,
 * entitlements, approver groups, approval policies, local approvers, MFA rule), and which live
 * grants it affects: those whose requests the new policy would start refusing (policy/entitlements.ts).
 * Secret values never take part: policies are compared as compiled without them.
 */
import type { Policy, Resource } from '../policy.js'
import type { ApprovalPolicy, ApproverGroup, Entitlement, Subprocessor } from '../principals.js'
import { assessGrant, type GrantStanding } from '../entitlements.js'
import { formatDuration } from '../../util/duration.js'

export interface DiffEntry {
  readonly section: 'resources' | 'sub-processors' | 'entitlements' | 'approver groups' | 'approval policies' | 'local approvers' | 'mfa'
  readonly change: 'added' | 'removed' | 'changed'
  readonly id: string
  /** For `changed`: `field: old → new` lines (long values as `- old` and `+ new` lines). */
  readonly details: readonly string[]
}

/** A live grant as the control plane lists it (`GET /v1/grants`). */
export interface LiveGrant {
  readonly id: string
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  readonly expires_at: string
}

export interface AffectedGrant {
  readonly grant: LiveGrant
  /** What stops working, and the deny code it will get. */
  readonly effects: readonly string[]
}

type Fields = Record<string, string>

/** Every difference between two policies, section by section, ids in order. */
export function diffPolicies(before: Policy, after: Policy): DiffEntry[] {
  const out: DiffEntry[] = []
  compare(out, 'resources', before.resources, after.resources, resourceFields)
  compare(out, 'sub-processors', before.principals.subprocessors, after.principals.subprocessors, subprocessorFields)
  compare(out, 'entitlements', entitlementsByPair(before), entitlementsByPair(after), (list) =>
    Object.fromEntries(list.map((e, i) => [`#${i + 1}`, describeEntitlement(e)])),
  )
  compare(out, 'approver groups', before.principals.approverGroups, after.principals.approverGroups, groupFields)
  compare(out, 'approval policies', before.principals.approvalPolicies, after.principals.approvalPolicies, approvalFields)
  compare(out, 'local approvers', before.principals.localApprovers, after.principals.localApprovers, () => ({}))
  const mfa = (p: Policy) => new Map([['mfa', p.principals.mfa]])
  compare(out, 'mfa', mfa(before), mfa(after), (m) => ({ amr_any: list(m.amrAny), acr_any: list(m.acrAny) }))
  return out
}

/**
 * The live grants the change affects: requests that pass under `before` and that `after` would
 * refuse, with the code they will get.
 */
export function affectedGrants(before: Policy, after: Policy, grants: readonly LiveGrant[]): AffectedGrant[] {
  const out: AffectedGrant[] = []
  for (const grant of grants) {
    const effects: string[] = []
    if (!after.resources.has(grant.resource)) {
      if (before.resources.has(grant.resource)) effects.push(`resource "${grant.resource}" removed: its requests match no route or another resource (route_not_found, token_invalid)`)
    } else {
      const was = problems(assessGrant(before, grant), grant)
      for (const p of problems(assessGrant(after, grant), grant)) if (!was.includes(p)) effects.push(p)
    }
    if (effects.length > 0) out.push({ grant, effects })
  }
  return out
}

/** Renders a diff (and affected grants, when known) as text. */
export function formatDiff(entries: readonly DiffEntry[], affected?: { readonly source: string; readonly grants: readonly AffectedGrant[]; readonly total: number }): string {
  const lines: string[] = []
  let section = ''
  for (const e of entries) {
    if (e.section !== section) {
      section = e.section
      lines.push(section)
    }
    const mark = e.change === 'added' ? '+' : e.change === 'removed' ? '-' : '~'
    lines.push(`  ${mark} ${e.id}`, ...e.details.map((d) => `      ${d}`))
  }
  if (entries.length === 0) lines.push('no differences')
  if (affected) {
    lines.push('', `live grants affected: ${affected.grants.length} of ${affected.total} (${affected.source})`)
    for (const a of affected.grants) {
      lines.push(`  ${a.grant.id}  ${a.grant.subject} → ${a.grant.resource} [${a.grant.scopes.join('; ')}], expires ${a.grant.expires_at}`)
      for (const effect of a.effects) lines.push(`      ${effect}`)
    }
  }
  return `${lines.join('\n')}\n`
}

function compare<T>(out: DiffEntry[], section: DiffEntry['section'], a: ReadonlyMap<string, T>, b: ReadonlyMap<string, T>, fields: (v: T) => Fields): void {
  const ids = [...new Set([...a.keys(), ...b.keys()])].sort()
  for (const id of ids) {
    const x = a.get(id)
    const y = b.get(id)
    if (x === undefined) out.push({ section, change: 'added', id, details: [] })
    else if (y === undefined) out.push({ section, change: 'removed', id, details: [] })
    else {
      const fx = fields(x)
      const fy = fields(y)
      const details: string[] = []
      for (const k of [...new Set([...Object.keys(fx), ...Object.keys(fy)])]) {
        if (fx[k] === fy[k]) continue
        const [x, y] = [fx[k] ?? '(none)', fy[k] ?? '(none)']
        // Long values (an entitlement) read best one above the other.
        details.push(...(x.length + y.length > 80 ? [`${k}:`, `  - ${x}`, `  + ${y}`] : [`${k}: ${x} → ${y}`]))
      }
      if (details.length > 0) out.push({ section, change: 'changed', id, details })
    }
  }
}

const list = (items: Iterable<string>) => `[${[...items].join(', ')}]`
const day = (endsAt: number) => new Date(endsAt - 86_400_000).toISOString().slice(0, 10)

function resourceFields(r: Resource): Fields {
  return {
    upstream: `${r.origin}${r.basePath}`,
    path_prefix: r.pathPrefix ?? '(none)',
    host: r.host ?? '(any)',
    strip_prefix: String(r.stripPrefix),
    max_ttl: formatDuration(r.maxTtlMs),
    websocket: String(r.websocket),
    timeout: r.timeoutMs === undefined ? '(default)' : formatDuration(r.timeoutMs),
    credentials: list(r.injectedHeaders),
    description: r.description,
  }
}

function subprocessorFields(s: Subprocessor): Fields {
  return {
    name: s.name,
    contract_ends: day(s.contractEndsAt),
    keys: list(s.keys.map((k) => (k.kind === 'jwk' ? `jwk ${String(k.jwk.kid ?? k.jwk.x ?? k.jwk.n ?? '').slice(0, 12)}` : k.kind === 'jwks_url' ? k.url : `jwks_file (${k.keys.length} keys)`))),
  }
}

function groupFields(g: ApproverGroup): Fields {
  return { members: list(g.members), oidc_groups: list(g.oidcGroups) }
}

function approvalFields(p: ApprovalPolicy): Fields {
  return {
    stages: p.stages.map((s) => `${s.group} ×${s.approvals}`).join(' then '),
    request_ttl: formatDuration(p.requestTtlMs),
    escalation: p.escalateAfterMs === undefined ? '(none)' : `after ${formatDuration(p.escalateAfterMs)} to ${p.escalationGroup}${p.escalationAdmits ? ' (admits)' : ''}`,
  }
}

/** `subject → resource` → that pair's entitlements, in policy order. */
function entitlementsByPair(p: Policy): Map<string, readonly Entitlement[]> {
  const out = new Map<string, Entitlement[]>()
  for (const sp of p.principals.subprocessors.values()) {
    for (const e of sp.entitlements) {
      const key = `${sp.id} → ${e.resource}`
      out.set(key, [...(out.get(key) ?? []), e])
    }
  }
  return out
}

function describeEntitlement(e: Entitlement): string {
  const parts = [`scopes [${e.scopes.join('; ')}]`, `max ${formatDuration(e.maxDurationMs)}`, `approval ${e.approval}`]
  if (e.window) parts.push(`window "${e.window.source}"${e.enforceWindowAtUse ? ' enforced at use' : ''}`)
  if (e.requireTicket) parts.push('ticket required')
  if (e.claimWithinMs !== undefined) parts.push(`claim within ${formatDuration(e.claimWithinMs)}`)
  if (e.autoApprove) parts.push(`auto-approve ${formatDuration(e.autoApprove.maxDurationMs)} [${e.autoApprove.scopes.join('; ')}]`)
  if (e.breakGlass) parts.push(`break-glass ${formatDuration(e.breakGlass.maxDurationMs)}`)
  return parts.join(', ')
}

/** What a policy refuses of a grant, one line per problem (compared between before and after). */
function problems(standing: GrantStanding, grant: LiveGrant): string[] {
  if (standing.kind === 'unbound') return []
  if (standing.kind === 'not_entitled') return [`${standing.detail} (grant_not_entitled)`]
  const out: string[] = []
  const expires = Date.parse(grant.expires_at)
  if (standing.subprocessor.contractEndsAt < expires) {
    out.push(`the contract of "${grant.subject}" ends ${new Date(standing.subprocessor.contractEndsAt).toISOString()}, before the grant expires (grant_not_entitled)`)
  }
  for (const s of standing.scopes) {
    if (s.covering.length === 0) out.push(`"${s.scope.source}" is no longer within an entitlement (grant_not_entitled)`)
    else if (s.windows !== undefined) out.push(`"${s.scope.source}" works only within ${s.windows.map((w) => `"${w.source}"`).join(' or ')} (outside_window)`)
  }
  return out
}

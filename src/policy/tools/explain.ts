/**
 * `jitgate policy explain`: why a call or an access request would be allowed or denied, naming the
 * rules on the way (route and resource, grant scope, entitlement and its scope pattern, window,
 * approval policy), each with the file and line it comes from. The decision itself is the gateway's
 * own (evaluate.ts); the lines before it show the facts it rests on.
 */
import { normalizePath } from '../path.js'
import type { Policy } from '../policy.js'
import type { Entitlement } from '../principals.js'
import { compileScopes, parseScope, scopeCovers } from '../scope.js'
import { assessGrant } from '../entitlements.js'
import { DENY_CODES, type DenyCode } from '../../decision/codes.js'
import { API_ERRORS, type ApiErrorCode } from '../../control/errors.js'
import { formatDuration } from '../../util/duration.js'
import { createEvaluator, type CallCase, type Outcome, type RequestCase } from './evaluate.js'

const at = (t: number) => new Date(t).toISOString()
const where = (policy: Policy, item: object) => {
  const origin = policy.originOf(item)
  return origin === undefined ? '' : ` (${origin})`
}
const row = (label: string, text: string) => `  ${label.padEnd(13)}${text}`

/** An explanation: the lines to print, the last of which states the decision. */
export interface Explanation {
  readonly lines: readonly string[]
  readonly decision: 'allow' | 'deny'
}

/** Explains an HTTP call under a grant. */
export async function explainCall(policy: Policy, c: CallCase): Promise<Explanation> {
  const outcome = await evaluate(policy, (e) => e.call(c))
  return { lines: callLines(policy, c, outcome), decision: outcome.decision }
}

function callLines(policy: Policy, c: CallCase, outcome: Outcome): string[] {
  const lines = [`${c.method} ${c.path} by ${c.subject}, under a grant for ${c.grant.resource} [${c.grant.scopes.join('; ')}], at ${at(c.at)}`]
  const rawPath = c.path.split('?')[0] as string
  const normalized = normalizePath(rawPath)
  if (!normalized.ok) return [...lines, row('path', `cannot be normalised safely: ${normalized.reason}`), decision(outcome, 'call')]
  const path = normalized.path
  if (path !== rawPath) lines.push(row('path', `normalised to ${path}`))
  const resource = policy.matchRoute(c.host, path)
  if (!resource) {
    return [...lines, row('route', `no resource serves ${c.host ?? 'any host'} ${path}`), decision(outcome, 'call')]
  }
  const match = [resource.host !== undefined ? `host ${resource.host}` : '', resource.pathPrefix !== undefined ? `path_prefix ${resource.pathPrefix}` : '']
  lines.push(row('route', `resource ${resource.id}: ${match.filter(Boolean).join(', ')}${where(policy, resource)}`))
  if (resource.id !== c.grant.resource) {
    return [...lines, row('grant', `the grant (and its token) is for ${c.grant.resource}, not ${resource.id}`), decision(outcome, 'call')]
  }
  const scope = compileScopes(c.grant.scopes).find(c.method, path)
  lines.push(row('grant scope', scope ? `"${scope.source}" allows ${c.method} ${path}` : `none of the grant's scopes allows ${c.method} ${path}`))
  if (scope) {
    const standing = assessGrant(policy, { subject: c.subject, resource: c.grant.resource, scopes: c.grant.scopes })
    if (standing.kind === 'unbound') lines.push(row('entitlement', 'not checked: the policy declares no sub-processors'))
    else if (standing.kind === 'not_entitled') lines.push(row('entitlement', standing.detail))
    else {
      const s = standing.scopes.find((e) => e.scope.source === scope.source)
      if (!s || s.covering.length === 0) lines.push(row('entitlement', `no entitlement of ${c.subject} for ${resource.id} covers "${scope.source}"`))
      for (const cover of s?.covering ?? []) {
        lines.push(row('entitlement', `${c.subject} → ${resource.id}, scope "${cover.pattern.source}"${where(policy, cover.entitlement)}`))
      }
      lines.push(row('contract', `${c.subject}'s contract ends ${at(standing.subprocessor.contractEndsAt)}${c.at >= standing.subprocessor.contractEndsAt ? ': ended' : ''}`))
      if (s && s.covering.length > 0) {
        lines.push(
          row(
            'window',
            s.windows === undefined
              ? 'none enforced at use'
              : s.windows.map((w) => `"${w.source}" enforced at use: ${w.contains(c.at) ? 'inside' : 'outside'}`).join('; '),
          ),
        )
      }
    }
  }
  return [...lines, decision(outcome, 'call')]
}

/** Explains an access request. */
export async function explainRequest(policy: Policy, r: RequestCase): Promise<Explanation> {
  const outcome = await evaluate(policy, (e) => e.request(r))
  return { lines: requestLines(policy, r, outcome), decision: outcome.decision }
}

function requestLines(policy: Policy, r: RequestCase, outcome: Outcome): string[] {
  const lines = [
    `${r.subject} asks for ${r.resource} [${r.scopes.join('; ')}] for ${formatDuration(r.durationMs)} at ${at(r.at)}` +
      `${r.breakGlass ? ', break-glass' : ''}${r.ticket !== undefined ? `, ticket ${r.ticket}` : ''}`,
  ]
  const sp = policy.principals.subprocessors.get(r.subject)
  if (!sp) return [...lines, row('subprocessor', `"${r.subject}" is not declared`), decision(outcome, 'request')]
  lines.push(row('subprocessor', `${sp.id} (${sp.name})${where(policy, sp)}, contract ends ${at(sp.contractEndsAt)}`))
  const resource = policy.resources.get(r.resource)
  const candidates = sp.entitlements.filter((e) => e.resource === r.resource)
  if (candidates.length === 0) lines.push(row('entitlement', `none for ${r.resource}`))
  candidates.forEach((e, i) => lines.push(row(i === 0 ? 'entitlements' : '', describeEntitlement(policy, e, r, resource?.maxTtlMs))))
  return [...lines, decision(outcome, 'request')]
}

/** The facts of one entitlement against a request (not the verdict: that is the workflow's). */
function describeEntitlement(policy: Policy, e: Entitlement, r: RequestCase, maxTtlMs: number | undefined): string {
  const facts: string[] = []
  const requested = r.scopes.map((s) => parseScope(s))
  const uncovered = requested.flatMap((p, i) => (p.ok && e.scopeSet.scopes.some((o) => scopeCovers(o, p.scope)) ? [] : [r.scopes[i] as string]))
  facts.push(uncovered.length === 0 ? `scopes within [${e.scopes.join('; ')}]` : `not within [${e.scopes.join('; ')}]: ${uncovered.join('; ')}`)
  const max = Math.min(r.breakGlass && e.breakGlass ? e.breakGlass.maxDurationMs : e.maxDurationMs, maxTtlMs ?? Infinity)
  facts.push(`${r.breakGlass ? 'break-glass ' : ''}max ${formatDuration(max)}${r.durationMs > max ? ' (exceeded)' : ''}`)
  if (r.breakGlass && !e.breakGlass) facts.push('no break_glass')
  if (e.window) facts.push(`window "${e.window.source}": ${e.window.contains(r.at) ? 'inside' : 'outside'}${r.breakGlass ? ' (not applied to break-glass)' : ''}`)
  if (e.requireTicket) facts.push(`ticket required${r.ticket === undefined ? ', none given' : ''}`)
  const approval = policy.principals.approvalPolicies.get(e.approval)
  facts.push(`approval "${e.approval}"${approval ? `: ${approval.stages.map((s) => `${s.group} ×${s.approvals}`).join(' then ')}` : ' (missing)'}`)
  if (e.autoApprove) facts.push(`auto-approves up to ${formatDuration(e.autoApprove.maxDurationMs)} within [${e.autoApprove.scopes.join('; ')}]`)
  return `${e.resource}${where(policy, e)}: ${facts.join('; ')}`
}

async function evaluate(policy: Policy, run: (e: Awaited<ReturnType<typeof createEvaluator>>) => Promise<Outcome>): Promise<Outcome> {
  const evaluator = await createEvaluator(policy)
  try {
    return await run(evaluator)
  } finally {
    await evaluator.close()
  }
}

function decision(o: Outcome, kind: 'call' | 'request'): string {
  if (o.decision === 'allow') return row('decision', `allow: ${o.detail}`)
  const status = kind === 'call' ? DENY_CODES[o.code as DenyCode]?.status : API_ERRORS[o.code as ApiErrorCode]?.status
  return row('decision', `deny ${o.code ?? ''}${status !== undefined ? ` (${status})` : ''}: ${o.detail}`)
}

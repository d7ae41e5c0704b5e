/**
 * A grant is only as good as the entitlement behind it: how grants stand against the policy in
 * force, request by request, and what changes when the policy tightens.
 */
import t from 'tap'
import { compilePolicy, type Policy } from '../../src/policy/policy.js'
import { assessGrant, checkGrantUse, unentitledScopes } from '../../src/policy/entitlements.js'
import { compileScopes, parseScope, scopeCovers } from '../../src/policy/scope.js'

const BASE = `resources:
  - { id: crm, upstream: "http://h", match: { path_prefix: /crm }, max_ttl: 8h }
  - { id: billing, upstream: "http://h", match: { path_prefix: /billing }, max_ttl: 8h }
approver_groups: [{ id: owners, members: [alice] }]
approval_policies: [{ id: one, stages: [{ group: owners, approvals: 1 }], request_ttl: 1d }]
`
function policy(subprocessors: string): Policy {
  return compilePolicy([{ file: 'p.yaml', text: BASE + subprocessors }], { env: {} })
}
const ACME = (entitlements: string, contract = '2027-06-30') =>
  `subprocessors:\n  - id: acme\n    name: ACME\n    contract_ends: "${contract}"\n    entitlements:\n${entitlements}`
const ent = (extra: string) => `      - { resource: crm, approval: one, max_duration: 1h, ${extra} }\n`
const grant = (scopes: string[], resource = 'crm', subject = 'acme') => ({ subject, resource, scopes })
const AT = Date.parse('2026-12-02T10:00:00Z') // a Wednesday

function use(p: Policy, g: ReturnType<typeof grant>, method: string, path: string, at = AT) {
  return checkGrantUse(assessGrant(p, g), method, path, at)
}

t.test('no sub-processors declared: grants are not tied to entitlements', async (t) => {
  const p = compilePolicy([{ file: 'p.yaml', text: BASE }], { env: {} })
  t.same(assessGrant(p, grant(['* /crm/**'], 'crm', 'anyone')), { kind: 'unbound' })
  t.same(use(p, grant(['* /crm/**'], 'crm', 'anyone'), 'DELETE', '/crm/x'), { ok: true })
})

t.test('entitled scopes pass; narrower grants are covered by wider entitlements', async (t) => {
  const p = policy(ACME(ent('scopes: ["GET /crm/customers/**", "GET,POST /crm/tickets/**"]')))
  const g = grant(['GET /crm/customers/*', 'POST /crm/tickets/**'])
  const standing = assessGrant(p, g)
  t.match(standing, { kind: 'entitled', unrestricted: true })
  t.same(use(p, g, 'GET', '/crm/customers/42'), { ok: true })
  t.same(use(p, g, 'POST', '/crm/tickets/1/comments'), { ok: true })
  t.same(unentitledScopes(standing), [])
})

t.test('a tightened policy: scope narrowed, entitlement or sub-processor removed, contract ended', async (t) => {
  const g = grant(['GET /crm/customers/**', 'GET /crm/tickets/**'])
  const narrowed = policy(ACME(ent('scopes: ["GET /crm/tickets/**"]')))
  t.same(unentitledScopes(assessGrant(narrowed, g)), ['GET /crm/customers/**'])
  t.same(use(narrowed, g, 'GET', '/crm/tickets/1'), { ok: true }, 'what is still entitled keeps working')
  t.same(use(narrowed, g, 'GET', '/crm/customers/1'), {
    ok: false,
    code: 'grant_not_entitled',
    detail: 'the grant scope that allows this request is no longer within an entitlement',
  })
  const otherResource = policy(ACME('      - { resource: billing, approval: one, max_duration: 1h, scopes: ["GET /billing/**"] }\n'))
  t.same(use(otherResource, g, 'GET', '/crm/tickets/1'), {
    ok: false,
    code: 'grant_not_entitled',
    detail: `"acme" has no entitlement for resource "crm" in policy ${otherResource.version} (a sub-processor's grants need one: its entitlements in the policy, see README "Sub-processors, entitlements and approvals")`,
  })
  const otherVendor = policy('subprocessors:\n  - { id: globex, name: G, contract_ends: "2027-01-01" }\n')
  t.same(use(otherVendor, g, 'GET', '/crm/tickets/1'), {
    ok: false,
    code: 'grant_not_entitled',
    detail: `"acme" is not a sub-processor in policy ${otherVendor.version}`,
  })
  const ended = policy(ACME(ent('scopes: ["GET /crm/**"]'), '2026-11-30'))
  t.same(use(ended, g, 'GET', '/crm/tickets/1'), {
    ok: false,
    code: 'grant_not_entitled',
    detail: 'the contract of "acme" ended 2026-12-01T00:00:00.000Z',
  })
  t.same(use(ended, g, 'GET', '/crm/tickets/1', Date.parse('2026-11-30T23:59:59Z')), { ok: true }, 'the last day counts')
})

t.test('enforce_window_at_use: outside the window, outside_window; any covering entitlement without it frees the scope', async (t) => {
  const windowed = ent('scopes: ["GET /crm/**"], window: "Mon-Fri 08:00-18:00 Europe/Berlin", enforce_window_at_use: true')
  const p = policy(ACME(windowed))
  const g = grant(['GET /crm/customers/**'])
  t.match(assessGrant(p, g), { kind: 'entitled', unrestricted: false })
  t.same(use(p, g, 'GET', '/crm/customers/1', Date.parse('2026-12-02T08:00:00Z')), { ok: true }, 'Wednesday 09:00 in Berlin')
  t.same(use(p, g, 'GET', '/crm/customers/1', Date.parse('2026-12-02T17:00:00Z')), {
    ok: false,
    code: 'outside_window',
    detail: "outside the entitlement's window Mon-Fri 08:00-18:00 Europe/Berlin",
  })
  t.same(use(p, g, 'GET', '/crm/customers/1', Date.parse('2026-12-05T10:00:00Z')).ok, false, 'Saturday')
  // A window only for requesting (not enforced at use) never restricts use.
  const requestOnly = policy(ACME(ent('scopes: ["GET /crm/**"], window: "Mon-Fri 08:00-18:00 Europe/Berlin"')))
  t.same(use(requestOnly, g, 'GET', '/crm/customers/1', Date.parse('2026-12-05T10:00:00Z')), { ok: true })
  // Two entitlements cover the scope, one without a window: usable at any time.
  const both = policy(ACME(windowed + ent('scopes: ["GET /crm/customers/**"]')))
  t.match(assessGrant(both, g), { kind: 'entitled', unrestricted: true })
  t.same(use(both, g, 'GET', '/crm/customers/1', Date.parse('2026-12-05T10:00:00Z')), { ok: true })
})

t.test('scope coverage is symbolic, sound, and handles wildcard spellings', async (t) => {
  const covers = (outer: string, inner: string) => {
    const o = parseScope(outer)
    const i = parseScope(inner)
    if (!o.ok || !i.ok) throw new Error('bad scope')
    return scopeCovers(o.scope, i.scope)
  }
  const yes: [string, string][] = [
    ['GET /crm/**', 'GET /crm/customers/*'],
    ['GET /crm/**', 'GET /crm'],
    ['GET /crm/**', 'GET /crm/'],
    ['GET /crm/**', 'GET /crm/**'],
    ['* /crm/**', 'DELETE,PATCH /crm/x'],
    ['GET /crm/*/notes', 'GET /crm/42/notes'],
    ['GET /a/**/z', 'GET /a/b/*/z'],
    ['GET /a/**', 'GET /a/**/b/**'],
    ['GET /a/*/**', 'GET /a/**/*'],
    ['GET,POST /a/**', 'GET /a/x'],
    ['GET /a/**', 'HEAD /a/x'],
  ]
  const no: [string, string][] = [
    ['GET /crm/customers/*', 'GET /crm/customers/**'],
    ['GET /crm/*', 'GET /crm/'],
    ['GET /crm/**', 'POST /crm/x'],
    ['GET /crm/**', '* /crm/x'],
    ['HEAD /a/**', 'GET /a/x'],
    ['GET /crm/**', 'GET /crmx'],
    ['GET /a/*/**', 'GET /a/**'],
    ['GET /a/b', 'GET /a/*'],
  ]
  for (const [o, i] of yes) t.ok(covers(o, i), `${o} ⊇ ${i}`)
  for (const [o, i] of no) t.notOk(covers(o, i), `${o} ⊉ ${i}`)
  // Every "yes" is true on sample paths too (soundness spot check).
  for (const [o, i] of yes) {
    const outer = compileScopes([o])
    for (const path of ['/crm', '/crm/', '/crm/customers/1', '/crm/42/notes', '/a/b/c/z', '/a/x', '/a/b', '/a/q/b/r']) {
      for (const m of ['GET', 'HEAD', 'POST', 'DELETE']) {
        if (compileScopes([i]).allows(m, path)) t.ok(outer.allows(m, path), `${o} allows ${m} ${path} as ${i} does`)
      }
    }
  }
})

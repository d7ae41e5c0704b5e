/**
 * Policy at scale: 10,000 resources and 10,000 entitlements (1,000 sub-processors with 10 each),
 * spread over 20 files as an operator would split them. Prints the time to load and compile them
 * in full (parse, schema, every semantic check, route table, entitlement index) and the per-request
 * cost of the policy's part of a decision:
 * - route: host and path → resource;
 * - grant scope: the grant's scope set against method and path;
 * - entitlement: the grant still entitled (checkGrantUse, its standing cached per policy version,
 *   as decide.ts does); plus the cold assessment of one grant, done once per (version, grant).
 *
 * - reload: the longest the event loop goes without a turn while a running gateway reloads that
 *   policy (the YAML parsed on a worker thread), against the whole load done inline.
 *
 *   node --import tsx bench/policy-scale.ts        (BENCH_POLICY_SCALE=N for N resources)
 *
 * Bounded: a fixed number of iterations; it never fails on timing (that varies by machine).
 */
import { performance } from 'node:perf_hooks'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compilePolicy } from '../src/policy/policy.js'
import { parseYaml } from '../src/config/yaml-source.js'
import { compileScopes } from '../src/policy/scope.js'
import { assessGrant, checkGrantUse } from '../src/policy/entitlements.js'

const RESOURCES = Number(process.env.BENCH_POLICY_SCALE ?? 10_000)
const ENTITLEMENTS_PER_VENDOR = 10
const VENDORS = RESOURCES / ENTITLEMENTS_PER_VENDOR
const FILES = 20
const ITERATIONS = 200_000

const id = (i: number) => `r${String(i).padStart(5, '0')}`

function texts(): { file: string; text: string }[] {
  const out: { file: string; text: string }[] = []
  const perFile = Math.ceil(RESOURCES / (FILES / 2))
  for (let f = 0; f < FILES / 2; f++) {
    const lines = ['resources:']
    for (let i = f * perFile; i < Math.min(RESOURCES, (f + 1) * perFile); i++) {
      // Every tenth resource is reached by host, the others by path prefix under a team folder.
      const match = i % 10 === 0 ? `{ host: ${id(i)}.api.example.com }` : `{ path_prefix: /team${i % 97}/${id(i)} }`
      lines.push(`  - { id: ${id(i)}, upstream: "http://10.0.${i % 250}.1:8080", match: ${match}, max_ttl: 8h }`)
    }
    out.push({ file: `resources-${f}.yaml`, text: `${lines.join('\n')}\n` })
  }
  const vendorsPerFile = Math.ceil(VENDORS / (FILES / 2))
  for (let f = 0; f < FILES / 2; f++) {
    const lines = f === 0 ? ['approver_groups: [{ id: owners, members: [alice, bob] }]', 'approval_policies: [{ id: two, stages: [{ group: owners, approvals: 2 }], request_ttl: 1d }]'] : []
    lines.push('subprocessors:')
    for (let v = f * vendorsPerFile; v < Math.min(VENDORS, (f + 1) * vendorsPerFile); v++) {
      lines.push(`  - id: vendor${v}`, `    name: Vendor ${v}`, '    contract_ends: "2099-12-31"', '    entitlements:')
      for (let e = 0; e < ENTITLEMENTS_PER_VENDOR; e++) {
        const i = v * ENTITLEMENTS_PER_VENDOR + e
        const prefix = i % 10 === 0 ? '' : `/team${i % 97}/${id(i)}`
        const window = e === 0 ? ', window: "Mon-Fri 08:00-18:00 Europe/Berlin", enforce_window_at_use: true' : ''
        lines.push(`      - { resource: ${id(i)}, approval: two, max_duration: 4h, scopes: ["GET ${prefix}/customers/**", "GET,POST ${prefix}/tickets/*"]${window} }`)
      }
    }
    out.push({ file: `vendors-${f}.yaml`, text: `${lines.join('\n')}\n` })
  }
  return out
}

function perOp(label: string, fn: (i: number) => unknown): void {
  for (let i = 0; i < 10_000; i++) fn(i) // warm-up
  const start = performance.now()
  let sink = 0
  for (let i = 0; i < ITERATIONS; i++) if (fn(i)) sink++
  const us = ((performance.now() - start) * 1000) / ITERATIONS
  console.log(`  ${label.padEnd(44)} ${us.toFixed(2).padStart(7)} µs/op  (${sink} of ${ITERATIONS} true)`)
}

const input = texts()
const bytes = input.reduce((n, t) => n + Buffer.byteLength(t.text), 0)
// CPU time as well as wall time: on a busy machine the wall clock mostly measures the neighbours.
const cpuMs = (since: NodeJS.CpuUsage) => {
  const u = process.cpuUsage(since)
  return (u.user + u.system) / 1000
}
const t0 = performance.now()
const c0 = process.cpuUsage()
const policy = compilePolicy(input, { env: {} })
const compileMs = performance.now() - t0
const compileCpuMs = cpuMs(c0)
let entitlements = 0
for (const sp of policy.principals.subprocessors.values()) entitlements += sp.entitlements.length
console.log(`policy: ${policy.resources.size} resources, ${policy.principals.subprocessors.size} sub-processors, ${entitlements} entitlements, ${FILES} files, ${(bytes / 1024 / 1024).toFixed(1)} MiB`)
console.log(`  load and compile in full                     ${compileMs.toFixed(0).padStart(7)} ms  (${compileCpuMs.toFixed(0)} ms CPU)`)
const c1 = process.cpuUsage()
for (const t of input) parseYaml(t.file, t.text)
console.log(`    of which YAML parsing (measured again)     ${cpuMs(c1).toFixed(0).padStart(7)} ms CPU`)

// A reload as a running gateway does it: how long do requests wait for the event loop? From the
// build, as the gateway runs (`npm run bench` builds first): a worker started from source goes
// through tsx's module hooks, which hold this thread while it loads.
const { loadPolicyOffThread } = (await import(new URL('../dist/policy/policy.js', import.meta.url).href)) as typeof import('../src/policy/policy.js')
const dir = mkdtempSync(join(tmpdir(), 'jitgate-policy-scale-'))
for (const t of input) writeFileSync(join(dir, t.file), t.text)
let last = performance.now()
let stallMs = 0
const tick = setInterval(() => {
  const now = performance.now()
  stallMs = Math.max(stallMs, now - last)
  last = now
}, 1)
const r0 = performance.now()
const reloaded = await loadPolicyOffThread(dir, { env: {} })
const reloadMs = performance.now() - r0
clearInterval(tick)
stallMs = Math.max(stallMs, performance.now() - last)
rmSync(dir, { recursive: true, force: true })
if (reloaded.version !== policy.version) throw new Error('the reload compiled a different policy from the same files')
console.log(`  reload (YAML parsed off thread)              ${reloadMs.toFixed(0).padStart(7)} ms, longest event-loop stall ${stallMs.toFixed(0)} ms`)

// Requests spread over the whole policy: a different resource each time.
const paths = Array.from({ length: 1024 }, (_, k) => {
  const i = (k * 7919) % RESOURCES
  return i % 10 === 0
    ? { host: `${id(i)}.api.example.com:443`, path: `/customers/${k}`, i }
    : { host: 'gw.example.com', path: `/team${i % 97}/${id(i)}/customers/${k}`, i }
})
perOp('route: host and path → resource', (k) => {
  const p = paths[k & 1023]!
  return policy.matchRoute(p.host, p.path)?.id === id(p.i)
})

const grants = paths.map((p) => {
  const prefix = p.i % 10 === 0 ? '' : `/team${p.i % 97}/${id(p.i)}`
  const grant = { subject: `vendor${Math.floor(p.i / ENTITLEMENTS_PER_VENDOR)}`, resource: id(p.i), scopes: [`GET ${prefix}/customers/*`] }
  return { ...p, grant, scopes: compileScopes(grant.scopes), standing: assessGrant(policy, grant) }
})
perOp("grant scope: the grant's scopes allow it", (k) => {
  const g = grants[k & 1023]!
  return g.scopes.allows('GET', g.path)
})
const at = Date.parse('2026-12-07T10:00:00+01:00')
perOp('entitlement: still entitled (standing cached)', (k) => {
  const g = grants[k & 1023]!
  return checkGrantUse(g.standing, 'GET', g.path, at).ok
})
perOp('entitlement: assess a grant (once per version)', (k) => assessGrant(policy, grants[k & 1023]!.grant).kind === 'entitled')

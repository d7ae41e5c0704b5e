/**
 * Hot reload with real parts: two in-process gateways on one private Redis, real policy folders
 * watched by fs.watch, reload notices over Redis pub/sub, the audit trail and the metrics read as
 * an operator would.
 */
import t from 'tap'
import { writeFileSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import { request } from 'undici'
import { startRedis } from '../helpers/redis-server.js'
import { startUpstream } from '../helpers/upstream.js'
import { call, startTestGateway, type TestGateway } from '../helpers/gateway.js'

const policyWith = (resources: string[], upstream: string) =>
  `resources:\n${resources.map((id) => `  - { id: ${id}, upstream: "${upstream}", match: { path_prefix: /${id} }, max_ttl: 1h }\n`).join('')}`

/** Replaces the policy file the way editors and config tools do: write aside, then rename. */
function writePolicy(g: TestGateway, text: string): void {
  const tmp = join(g.policyDir, '.test.yaml.tmp')
  writeFileSync(tmp, text)
  renameSync(tmp, join(g.policyDir, 'test.yaml'))
}

/** Polls until `check` holds; generous deadline for a loaded 2-core machine. */
async function eventually(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for: ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

async function readyz(g: TestGateway): Promise<Record<string, unknown>> {
  return (await call(`${g.controlUrl}/readyz`)).json as Record<string, unknown>
}

async function reloads(g: TestGateway): Promise<Record<string, number>> {
  const res = await request(`${g.controlUrl}/metrics`)
  const text = await res.body.text()
  const out: Record<string, number> = {}
  for (const m of text.matchAll(/^jitgate_policy_reloads_total\{result="(\w+)"\} (\d+)$/gm)) out[m[1] as string] = Number(m[2])
  return out
}

t.test('two replicas on one Redis: a valid change is seen by both, a replica with other files reports it', async (t) => {
  const redis = await startRedis(t)
  const upstream = await startUpstream(t)
  const v1 = policyWith(['api'], upstream.url)
  const env = { REDIS_URL: redis.url }
  // A watches its folder; B only follows notices (and SIGHUP), so B's reloads below are the notice's.
  const a = await startTestGateway(t, { policy: v1, env, config: 'gateway_id: gw-a\n' })
  const b = await startTestGateway(t, { policy: v1, env, config: 'gateway_id: gw-b\npolicy: { watch: false }\n' })
  const first = a.gw.policy().version
  t.equal(b.gw.policy().version, first, 'same files, same version')
  t.same((await readyz(b)).policy_version_mismatch, null)
  // The subscriptions go live a moment after start; a SIGHUP'd reload that nobody hears would be
  // missed by B, so wait until a notice gets through.
  await eventually('B hears A', async () => {
    await a.gw.reloadPolicy()
    await new Promise((r) => setTimeout(r, 100))
    return (await reloads(b)).unchanged !== undefined
  })

  await t.test('a valid change on both: A reloads on the file change, announces, B re-reads its files', async (t) => {
    const v2 = policyWith(['api', 'billing'], upstream.url)
    writePolicy(b, v2)
    writePolicy(a, v2)
    await eventually('A reloads', () => a.gw.policy().version !== first)
    await eventually('B follows', () => b.gw.policy().version === a.gw.policy().version)
    const version = a.gw.policy().version
    t.same([...b.gw.policy().resources.keys()], ['api', 'billing'])
    t.match(a.audit.filter((e) => e.event === 'policy.loaded').at(-1), { actor: 'file-watch', policy_version: version, policy_files: ['test.yaml'] })
    t.match(b.audit.filter((e) => e.event === 'policy.loaded').at(-1), { actor: 'replica:gw-a', policy_version: version })
    t.equal((await reloads(a)).loaded, 1)
    t.equal((await reloads(b)).loaded, 1)
    t.same((await readyz(a)).policy_version_mismatch, null)
    t.same((await readyz(b)).policy_version_mismatch, null)
    t.match(await readyz(b), { ready: true, policy_version: version })
    // The new resource serves on B at once.
    const grant = await b.issue({ resource: 'billing', scopes: ['GET /billing/**'], ttl: '5m' })
    t.equal((await call(`${b.dataUrl}/billing/x`, { token: grant.token })).status, 200)
  })

  await t.test('files that differ: B reports the mismatch until its files catch up', async (t) => {
    const v3 = policyWith(['api', 'billing', 'crm'], upstream.url)
    const before = b.gw.policy().version
    writePolicy(a, v3)
    await eventually('A reloads', () => a.gw.policy().version !== before)
    const announced = a.gw.policy().version
    await eventually('B reports', async () => (await readyz(b)).policy_version_mismatch !== null)
    t.same((await readyz(b)).policy_version_mismatch, { announced, origin: 'gw-a', local: before })
    t.equal(b.gw.policy().version, before, 'B serves what its own files say')
    t.same((await readyz(a)).policy_version_mismatch, null)
    writePolicy(b, v3)
    const heard = (await reloads(a)).unchanged ?? 0
    t.equal((await b.gw.reloadPolicy()).result, 'loaded', 'SIGHUP')
    t.equal(b.gw.policy().version, announced)
    t.same((await readyz(b)).policy_version_mismatch, null)
    await eventually('A hears B', async () => ((await reloads(a)).unchanged ?? 0) > heard)
    t.same((await readyz(a)).policy_version_mismatch, null)
  })
})

t.test('an invalid file is rejected: the gateway keeps serving on the last good policy', async (t) => {
  const upstream = await startUpstream(t)
  const good = policyWith(['api'], upstream.url)
  const g = await startTestGateway(t, { policy: good, config: 'gateway_id: gw-1\npolicy: { watch: false }\n' })
  const version = g.gw.policy().version
  const grant = await g.issue({ resource: 'api', scopes: ['GET /api/**'], ttl: '5m' })

  writePolicy(g, `${good}  - { id: api, upstream: "ftp://x", match: { path_prefix: /api }, max_ttl: 1 hour, typo: 1 }\n`)
  const result = await g.gw.reloadPolicy()
  t.equal(result.result, 'rejected')
  t.equal(g.gw.policy().version, version, 'the last good version stays in force')
  t.equal((await call(`${g.dataUrl}/api/x`, { token: grant.token })).status, 200, 'still serving')
  const file = join(g.policyDir, 'test.yaml')
  const rejected = g.audit.filter((e) => e.event === 'policy.rejected')
  t.equal(rejected.length, 1)
  t.same(rejected[0]?.errors, [
    `${file}:3:16 resources[1].upstream: expected an http:// or https:// URL`,
    `${file}:3:67 resources[1].max_ttl: expected a duration such as 30s, 15m, 2h or 7d`,
    `${file}:3:84 resources[1].typo: unknown key`,
  ])
  t.match(rejected[0], { actor: 'signal:SIGHUP', policy_version: version })
  t.same(await reloads(g), { rejected: 1 })

  // Fixed: the next reload takes it.
  writePolicy(g, policyWith(['api', 'other'], upstream.url))
  t.equal((await g.gw.reloadPolicy()).result, 'loaded')
  t.not(g.gw.policy().version, version)
  t.same(await reloads(g), { rejected: 1, loaded: 1 })
  t.equal((await g.gw.reloadPolicy()).result, 'unchanged', 'nothing changed: no new version, no audit event')
  t.equal(g.audit.filter((e) => e.event === 'policy.loaded').length, 2, 'at start and once reloaded')

  // Broken again, then restored to the version in force: the recovery is on record too.
  const inForce = g.gw.policy().version
  writePolicy(g, `${good}  - { id: broken }\n`)
  t.equal((await g.gw.reloadPolicy()).result, 'rejected')
  writePolicy(g, policyWith(['api', 'other'], upstream.url))
  t.equal((await g.gw.reloadPolicy()).result, 'unchanged')
  t.equal(g.gw.policy().version, inForce)
  t.match(g.audit.at(-1), { event: 'policy.loaded', policy_version: inForce }, 'valid again: policy.loaded, not silence')
})

t.test('a burst of file events makes one reload (debounced)', async (t) => {
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: policyWith(['api'], upstream.url) })
  for (let i = 0; i < 5; i++) writePolicy(g, policyWith(['api', `r${i}`], upstream.url))
  await eventually('reloaded', () => g.gw.policy().resources.has('r4'))
  // Let any straggling event settle, then count.
  await new Promise((r) => setTimeout(r, 1000))
  t.ok((await reloads(g)).loaded! <= 2, 'a burst is not a reload per event')
  t.equal(g.audit.filter((e) => e.event === 'policy.loaded' && e.actor === 'file-watch').length, (await reloads(g)).loaded)
})

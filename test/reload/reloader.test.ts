/** The reloader alone: swap only on a full, valid load; anything else keeps the policy in force. */
import t from 'tap'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compilePolicy, loadPolicy, loadPolicyOffThread, type Policy } from '../../src/policy/policy.js'
import { createPolicyReloader, type ReloadResult, type ReloadTrigger } from '../../src/policy/reloader.js'
import { parsedOffThread } from '../../src/policy/parse-off-thread.js'

const policy = (id: string): Policy =>
  compilePolicy([{ file: 'p.yaml', text: `resources:\n  - { id: ${id}, upstream: "http://h", match: { path_prefix: /${id} }, max_ttl: 1h }\n` }], { env: {} })

t.test('loaded, unchanged, rejected (a policy error or any other failure)', async (t) => {
  const first = policy('a')
  let next: () => Policy = () => policy('a')
  const seen: [string, string][] = []
  const r = createPolicyReloader({ initial: first, load: async () => next(), onReload: (res: ReloadResult, trigger) => seen.push([res.result, trigger]) })
  t.equal((await r.reload('signal')).result, 'unchanged', 'same inputs')
  t.equal(r.current(), first, 'the very same object stays')
  next = () => policy('b')
  const loaded = await r.reload('file')
  t.equal(loaded.result, 'loaded')
  t.same([...r.current().resources.keys()], ['b'])
  next = () => compilePolicy([{ file: 'p.yaml', text: 'resources: [{ id: Bad }]\n' }], { env: {} })
  const rejected = await r.reload('signal')
  t.match(rejected, { result: 'rejected', issues: [{ file: 'p.yaml' }] })
  t.same([...r.current().resources.keys()], ['b'], 'the last good policy stays')
  next = () => {
    throw new Error('EIO: i/o error, read')
  }
  t.match(await r.reload('notice'), { result: 'rejected', issues: [{ message: 'EIO: i/o error, read' }] }, 'never thrown at the caller (a watcher event)')
  t.same(seen, [
    ['unchanged', 'signal'],
    ['loaded', 'file'],
    ['rejected', 'signal'],
    ['rejected', 'notice'],
  ])
  await r.close()
})

t.test('one reload at a time: asks during a reload share one more, which reports the weightiest trigger', async (t) => {
  const loads: Array<(p: Policy) => void> = []
  const seen: [string, ReloadTrigger][] = []
  const r = createPolicyReloader({
    initial: policy('a'),
    load: () => new Promise<Policy>((resolve) => loads.push(resolve)),
    onReload: (res, trigger) => seen.push([res.result, trigger]),
  })
  const first = r.reload('file')
  const second = r.reload('notice')
  const third = r.reload('signal')
  const fourth = r.reload('file')
  t.equal(second, third, 'asks during a reload share the next one')
  t.equal(third, fourth)
  t.equal(loads.length, 1, 'the second load waits for the first')
  ;(loads[0] as (p: Policy) => void)(policy('b'))
  t.equal((await first).result, 'loaded')
  await new Promise((resolve) => setImmediate(resolve))
  t.equal(loads.length, 2, 'then the files are read once more')
  ;(loads[1] as (p: Policy) => void)(policy('c'))
  t.equal((await second).result, 'loaded')
  t.same([...r.current().resources.keys()], ['c'])
  t.same(seen, [
    ['loaded', 'file'],
    ['loaded', 'signal'],
  ], 'a SIGHUP merged into a queued reload is reported as one (it is announced to the fleet)')
  const closing = r.reload('file')
  const closed = r.close()
  ;(loads[2] as (p: Policy) => void)(policy('c'))
  await closed
  t.equal((await closing).result, 'unchanged', 'close waits for the reload in progress to be reported')
})

t.test('asking again in reaction to a finished reload never runs two loads at once', async (t) => {
  // The exact sequence of a finding: a reload, a reaction to its result that reloads again, and a
  // file change queued meanwhile. Two loads ran side by side and the older one could win.
  let active = 0
  let most = 0
  let n = 0
  const r = createPolicyReloader({
    initial: policy('a'),
    load: async () => {
      active++
      most = Math.max(most, active)
      const mine = ++n
      await new Promise((resolve) => setTimeout(resolve, 30))
      active--
      return policy(`p${mine}`)
    },
    onReload: () => {},
  })
  const first = r.reload('signal')
  const again = first.then(() => r.reload('signal'))
  const queued = r.reload('file')
  await Promise.all([first, again, queued])
  t.equal(most, 1, 'one load at a time')
  t.equal(n, 2, 'the reaction joined the reload queued meanwhile')
  t.same([...r.current().resources.keys()], ['p2'], 'the last load is the one in force')
  await r.close()
})

t.test('a reload parses off the event loop: requests keep being served meanwhile', async (t) => {
  // Large enough that parsing takes a while on any machine (about 3,000 resources in 4 files).
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-reload-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  for (let f = 0; f < 4; f++) {
    const lines = ['resources:']
    for (let i = 0; i < 750; i++) {
      const id = `r${f}x${i}`
      lines.push(`  - id: ${id}`, `    upstream: "http://10.0.${f}.1:8080"`, `    match: { path_prefix: /t${f}/${id} }`, '    max_ttl: 8h')
    }
    writeFileSync(join(dir, `r${f}.yaml`), `${lines.join('\n')}\n`)
  }
  const inline = loadPolicy(dir, { env: {} })
  // Turns of the event loop while a load runs: none while an inline one does. (How long the loop
  // stalls is for `bench/policy-scale.ts`: tap's own module hooks report to this thread and
  // skew it here.)
  const turnsDuring = async (load: () => Promise<unknown>): Promise<number> => {
    let turns = 0
    let on = true
    const turn = (): void => {
      if (!on) return
      turns++
      setImmediate(turn)
    }
    setImmediate(turn)
    await load()
    on = false
    return turns
  }
  t.equal(await turnsDuring(async () => loadPolicy(dir, { env: {} })), 0, 'an inline load holds the event loop throughout')
  let loaded: Policy | undefined
  const before = parsedOffThread()
  const turns = await turnsDuring(async () => (loaded = await loadPolicyOffThread(dir, { env: {} })))
  t.equal(parsedOffThread(), before + 1, 'the worker thread parsed the files')
  t.ok(turns >= 5, `the event loop kept turning while they were parsed (${turns} turns)`)
  t.equal(loaded?.version, inline.version, 'the same files give the same policy version')
  t.same([...(loaded as Policy).resources.keys()], [...inline.resources.keys()])
  t.equal(loaded?.originOf(loaded.resources.get('r2x10') as object), `${join(dir, 'r2.yaml')}:${2 + 4 * 10}`, 'positions are still there when asked for')

  // A broken file is reported with its position, as an inline load reports it.
  writeFileSync(join(dir, 'r9.yaml'), 'resources:\n  - id: ok-one\n    upstream: "http://h"\n    match: { path_prefix: /ok }\n    max_ttl: 1h\n  - { id: Bad }\n')
  let inlineError: unknown
  try {
    loadPolicy(dir, { env: {} })
  } catch (err) {
    inlineError = err
  }
  const offThreadError = await loadPolicyOffThread(dir, { env: {} }).then(() => undefined, (err: unknown) => err)
  t.same((offThreadError as { issues?: unknown } | undefined)?.issues, (inlineError as { issues: unknown }).issues, 'the same issues, positioned alike')
  t.match((inlineError as Error).message, /r9\.yaml:6:\d+ resources\[1\]/)
})

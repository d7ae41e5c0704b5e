/** The reloader alone: swap only on a full, valid load; anything else keeps the policy in force. */
import t from 'tap'
import { compilePolicy, type Policy } from '../../src/policy/policy.js'
import { createPolicyReloader, type ReloadResult } from '../../src/policy/reloader.js'

const policy = (id: string): Policy =>
  compilePolicy([{ file: 'p.yaml', text: `resources:\n  - { id: ${id}, upstream: "http://h", match: { path_prefix: /${id} }, max_ttl: 1h }\n` }], { env: {} })

t.test('loaded, unchanged, rejected (a policy error or any other failure)', async (t) => {
  const first = policy('a')
  let next: () => Policy = () => policy('a')
  const seen: [string, string][] = []
  const r = createPolicyReloader({ initial: first, load: () => next(), onReload: (res: ReloadResult, trigger) => seen.push([res.result, trigger]) })
  t.equal(r.reload('signal').result, 'unchanged', 'same inputs')
  t.equal(r.current(), first, 'the very same object stays')
  next = () => policy('b')
  const loaded = r.reload('file')
  t.equal(loaded.result, 'loaded')
  t.same([...r.current().resources.keys()], ['b'])
  next = () => compilePolicy([{ file: 'p.yaml', text: 'resources: [{ id: Bad }]\n' }], { env: {} })
  const rejected = r.reload('signal')
  t.match(rejected, { result: 'rejected', issues: [{ file: 'p.yaml' }] })
  t.same([...r.current().resources.keys()], ['b'], 'the last good policy stays')
  next = () => {
    throw new Error('EIO: i/o error, read')
  }
  t.match(r.reload('notice'), { result: 'rejected', issues: [{ message: 'EIO: i/o error, read' }] }, 'never thrown at the caller (a watcher event)')
  t.same(seen, [
    ['unchanged', 'signal'],
    ['loaded', 'file'],
    ['rejected', 'signal'],
    ['rejected', 'notice'],
  ])
  r.close()
})

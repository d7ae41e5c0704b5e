/** One timer for all of a connection's deadlines: what expires, what does not, in which order. */
import t from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import { Deadlines } from '../../src/grants/redis-connection.js'

t.test('unsettled entries expire in the order they were added; settled ones never do', async (t) => {
  const deadlines = new Deadlines(20)
  const expired: number[] = []
  const entries = Array.from({ length: 3000 }, (_, i) => deadlines.add(() => expired.push(i)))
  entries.forEach((e, i) => {
    if (i % 3 !== 0) t.equal(deadlines.settle(e), true)
  })
  t.equal(deadlines.settle(entries[1]!), false, 'settling twice: only the first wins')
  while (deadlines.size > 0) await sleep(10)
  t.same(expired, Array.from({ length: 1000 }, (_, i) => i * 3), 'only the unsettled ones, in order')
  t.equal(deadlines.settle(entries[0]!), false, 'an expired entry cannot be settled any more')
})

t.test('after the queue empties, a new entry arms the timer again', async (t) => {
  const deadlines = new Deadlines(10)
  let first = false
  let second = false
  deadlines.add(() => (first = true))
  while (!first) await sleep(5)
  t.equal(deadlines.size, 0, 'the queue is empty once everything expired')
  deadlines.add(() => (second = true))
  while (!second) await sleep(5)
  t.pass('the second entry expired on its own timer')
})

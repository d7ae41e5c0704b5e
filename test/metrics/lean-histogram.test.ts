/**
 * The data plane's histograms: prom-client's text format, cumulative buckets, sum and count,
 * read by a real registry; and, through a real gateway, one observation per decision.
 */
import t from 'tap'
import { Histogram, Registry } from 'prom-client'
import { LeanHistogram } from '../../src/metrics/lean-histogram.js'
import { startTestGateway, call } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

t.test('prints exactly what a prom-client Histogram prints for the same observations', async (t) => {
  const buckets = [0.001, 0.01, 0.1, 1]
  const lean = new Registry()
  const reference = new Registry()
  const h = new LeanHistogram({ name: 'x_seconds', help: 'Some help.', labelName: 'decision', buckets, registers: [lean] })
  const p = new Histogram({ name: 'x_seconds', help: 'Some help.', labelNames: ['decision'] as const, buckets, registers: [reference] })
  const allow = h.child('allow')
  for (const v of [0, 0.001, 0.0011, 0.05, 0.1, 0.5, 1, 2, 30]) {
    allow.observe(v)
    p.observe({ decision: 'allow' }, v)
  }
  h.observe('deny', 0.002)
  p.observe({ decision: 'deny' }, 0.002)
  t.equal(await lean.metrics(), await reference.metrics())
  t.match(await lean.metrics(), /x_seconds_bucket\{le="\+Inf",decision="allow"\} 9\n/)
  t.match(await lean.metrics(), /x_seconds_bucket\{le="0.001",decision="allow"\} 2\n/, 'a value equal to a bound counts in that bucket')
  h.reset()
  t.equal(await lean.metrics(), '# HELP x_seconds Some help.\n# TYPE x_seconds histogram\n')
})

t.test('non-finite values are ignored, bounds must ascend', async (t) => {
  const registry = new Registry()
  const h = new LeanHistogram({ name: 'y_seconds', help: 'h', labelName: 'resource', buckets: [1], registers: [registry] })
  h.observe('a', Number.NaN)
  h.observe('a', Number.POSITIVE_INFINITY)
  h.observe('a', 0.5)
  t.match(await registry.metrics(), /y_seconds_count\{resource="a"\} 1\n/)
  t.throws(() => new LeanHistogram({ name: 'z', help: 'h', labelName: 'l', buckets: [1, 1], registers: [] }), RangeError)
})

t.test('a gateway observes one decision and one upstream time per forwarded request', async (t) => {
  const upstream = await startUpstream(t)
  const gw = await startTestGateway(t, {
    upstream: upstream.url,
    policy: 'resources:\n  - id: crm\n    upstream: UPSTREAM\n    match: { path_prefix: /crm }\n    max_ttl: 1h\n',
  })
  const { token } = await gw.issue({ resource: 'crm', scopes: ['GET /crm/**'], ttl: '1h' })
  for (let i = 0; i < 3; i++) t.equal((await call(`${gw.dataUrl}/crm/customers/1`, { token })).status, 200)
  t.equal((await call(`${gw.dataUrl}/crm/customers/1`)).status, 401)
  const metrics = (await call(`${gw.controlUrl}/metrics`)).text
  t.match(metrics, /jitgate_decision_duration_seconds_count\{decision="allow"\} 3\n/)
  t.match(metrics, /jitgate_decision_duration_seconds_count\{decision="deny"\} 1\n/)
  t.match(metrics, /jitgate_upstream_duration_seconds_count\{resource="crm"\} 3\n/)
  t.match(metrics, /# TYPE jitgate_upstream_duration_seconds histogram\n/)
})

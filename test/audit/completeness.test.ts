/**
 * Completeness under load and across a SIGTERM in the middle of traffic, with a real gateway
 * process: every request that got a response has exactly one access event, no event is written
 * without a response, the process exits 0 and the trail ends with its final signed checkpoint.
 */
import t from 'tap'
import { createServer } from 'node:http'
import { once } from 'node:events'
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { startGatewayProcess } from '../helpers/process.js'
import { rawCall } from '../helpers/gateway.js'
import { verifyAuditFiles } from '../../src/audit/verify.js'

const ADMIN = 'completeness-admin-token-0123456789'

t.test('SIGTERM under load: as many access events as responses, one per response, none lost', async (t) => {
  // An upstream slow enough that many requests are in flight when the signal arrives.
  const upstream = createServer((req, res) => {
    req.resume()
    setTimeout(() => res.writeHead(200, { 'content-type': 'text/plain' }).end('ok'), 80 + Math.random() * 120)
  })
  upstream.listen(0, '127.0.0.1')
  await once(upstream, 'listening')
  t.teardown(() => new Promise<void>((resolve) => (upstream.closeAllConnections(), upstream.close(() => resolve()))))

  const root = mkdtempSync(join(tmpdir(), 'jitgate-complete-'))
  mkdirSync(join(root, 'policies'))
  writeFileSync(
    join(root, 'policies', 'p.yaml'),
    `resources:\n  - id: api\n    upstream: http://127.0.0.1:${(upstream.address() as { port: number }).port}\n    match: { path_prefix: /api }\n    max_ttl: 1h\n`,
  )
  const auditFile = join(root, 'audit.log')
  const gw = await startGatewayProcess(t, {
    JITGATE_POLICY_DIR: join(root, 'policies'),
    JITGATE_DATA_DIR: join(root, 'data'),
    JITGATE_ADMIN_TOKEN: ADMIN,
    JITGATE_AUDIT_OUTPUT: auditFile,
  })
  const res = await request(`${gw.controlUrl}/v1/grants`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ subject: 'acme', resource: 'api', scopes: ['GET /api/**'], ttl: '10m' }),
  })
  const { token } = (await res.body.json()) as { token: string }

  const total = 600
  const concurrency = 40
  const ids: string[] = []
  let failed = 0
  let afterSignal = 0
  let signalled = false
  let next = 0
  const worker = async () => {
    while (next < total) {
      const i = next++
      try {
        // One in five without a token: denials count as decisions too.
        const r = await rawCall(gw.dataUrl, `/api/items/${i}`, i % 5 === 0 ? {} : { token })
        ids.push(String(r.headers['x-request-id']))
        if (signalled) afterSignal++
      } catch (err) {
        failed++
      }
      if (!signalled && ids.length >= total / 3) {
        signalled = true
        gw.proc.kill('SIGTERM')
      }
    }
  }
  const exited = once(gw.proc, 'exit') as Promise<[number | null]>
  await Promise.all(Array.from({ length: concurrency }, worker))
  const [code] = await exited
  t.equal(code, 0, 'drained and exited 0')
  t.ok(signalled && failed > 0, `SIGTERM came mid-traffic: ${ids.length} answered, ${failed} refused once the listener closed`)
  t.ok(afterSignal > 0, `${afterSignal} requests in flight at the signal were still answered`)

  const events = readFileSync(auditFile, 'utf8')
    .split('\n')
    .slice(0, -1)
    .map((l) => JSON.parse(l) as Record<string, unknown>)
  const access = events.filter((e) => e.event === 'access.allowed' || e.event === 'access.denied')
  // Every answered request has exactly one event. A request the gateway was still serving when
  // its client's connection broke has one too, truthfully `client_aborted` (499): no client saw
  // its response, but the decision was made and is on record.
  const answered = new Set(ids)
  const unanswered = access.filter((e) => !answered.has(String(e.request_id)))
  t.same(unanswered.filter((e) => e.code !== 'client_aborted'), [], 'an event without a response is a client_aborted one')
  t.equal(new Set(access.map((e) => e.request_id)).size, access.length, 'one event per request')
  t.same(access.filter((e) => answered.has(String(e.request_id))).map((e) => e.request_id).sort(), [...ids].sort(), 'every answered request has its event')
  t.ok(access.some((e) => e.event === 'access.denied') && access.some((e) => e.event === 'access.allowed'))
  t.match(events.slice(-2), [{ event: 'gateway.stopped' }, { event: 'audit.checkpoint', final: true }], 'every access event came before the stop')
  const report = await verifyAuditFiles([auditFile])
  t.ok(report.ok, `the trail verifies: ${JSON.stringify(report.problems)}`)
})

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
  // Exactly one event per answered request, and none for a request nobody got an answer to. (A
  // request arriving on a connection accepted just before the listener closed is drained like the
  // others: the drain waits for handlers that start during it, so none is cut off as a 499.)
  t.equal(access.length, ids.length, 'one access event per response')
  t.same(access.map((e) => String(e.request_id)).sort(), [...ids].sort(), 'and exactly the requests that were answered')
  t.ok(access.some((e) => e.event === 'access.denied') && access.some((e) => e.event === 'access.allowed'))
  t.match(events.slice(-2), [{ event: 'gateway.stopped' }, { event: 'audit.checkpoint', final: true }], 'every access event came before the stop')
  const report = await verifyAuditFiles([auditFile])
  t.ok(report.ok, `the trail verifies: ${JSON.stringify(report.problems)}`)
})

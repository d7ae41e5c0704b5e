/**
 * The baseline: jitgate's own forwarding module with no checks at all (no token, no grant, no
 * audit). jitgate's cost is measured as a ratio against this, in the same run.
 * argv: upstream origin. Prints its port.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createForwarder } from '../../src/forward/forwarder.js'

const origin = process.argv[2] as string
const upstreamHost = new URL(origin).host
const forwarder = createForwarder()
const server = createServer((req, res) => {
  const headers: Record<string, string | string[] | undefined> = { ...req.headers, host: upstreamHost }
  delete headers.connection
  void forwarder.forward(req, res, { origin, path: req.url ?? '/', headers, timeoutMs: 30_000 }).then((o) => {
    if (!o.ok && !o.responseStarted) res.writeHead(502).end()
  })
})
server.keepAliveTimeout = 30_000
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`))
process.on('SIGTERM', () => process.exit(0))

/**
 * A small example upstream for trying jitgate: an HTTP API that answers with what it received
 * (method, path, identity headers; whether a credential was injected, never its value) and a
 * WebSocket echo on /billing/events. Listens on 127.0.0.1:9001 (env UPSTREAM_PORT).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'

export function createExampleUpstream(): Server {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = JSON.stringify(
        {
          upstream: 'example',
          method: req.method,
          url: req.url,
          received: {
            x_jit_subject: req.headers['x-jit-subject'] ?? null,
            x_jit_grant: req.headers['x-jit-grant'] ?? null,
            x_forwarded_for: req.headers['x-forwarded-for'] ?? null,
            x_request_id: req.headers['x-request-id'] ?? null,
            // Shows that a credential arrived without echoing it back to the caller.
            credential_injected: req.headers.authorization !== undefined || req.headers['x-api-key'] !== undefined,
            body_bytes: Buffer.concat(chunks).length,
          },
        },
        null,
        2,
      )
      res.writeHead(200, { 'content-type': 'application/json' }).end(`${body}\n`)
    })
  })
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket, head) => {
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.send(JSON.stringify({ hello: req.headers['x-jit-subject'] ?? 'anonymous' }))
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    })
  })
  server.on('close', () => wss.close())
  return server
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const port = Number(process.env.UPSTREAM_PORT ?? 9001)
  const server = createExampleUpstream()
  server.listen(port, '127.0.0.1', () => {
    process.stderr.write(`example upstream listening on http://127.0.0.1:${(server.address() as AddressInfo).port}\n`)
  })
  process.on('SIGTERM', () => server.close(() => process.exit(0)))
  process.on('SIGINT', () => server.close(() => process.exit(0)))
}

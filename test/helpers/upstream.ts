/**
 * A real upstream for tests: an HTTP server on port 0 that records what it received and answers
 * with it, plus a WebSocket echo (the `ws` package) on any path.
 */
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer, type WebSocket } from 'ws'

export interface Received {
  readonly method: string
  readonly url: string
  readonly headers: IncomingHttpHeaders
  readonly rawHeaders: readonly string[]
  readonly body: string
}

export interface TestUpstream {
  readonly url: string
  readonly received: Received[]
  readonly sockets: Set<WebSocket>
  close(): Promise<void>
}

export async function startUpstream(t: { teardown(fn: () => unknown): void }): Promise<TestUpstream> {
  const received: Received[] = []
  const sockets = new Set<WebSocket>()
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const r = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: Buffer.concat(chunks).toString() }
      received.push(r)
      const body = JSON.stringify({ method: r.method, url: r.url })
      // `/slow/...` answers after 3 s: for upstream-timeout tests.
      if (r.url.startsWith('/slow')) {
        const timer = setTimeout(() => res.writeHead(200).end(body), 3000)
        res.on('close', () => clearTimeout(timer))
        return
      }
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
    })
  })
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket, head) => {
    received.push({ method: req.method ?? '', url: req.url ?? '', headers: req.headers, rawHeaders: req.rawHeaders, body: '' })
    wss.handleUpgrade(req, socket, head, (ws) => {
      sockets.add(ws)
      ws.on('close', () => sockets.delete(ws))
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  const close = () =>
    new Promise<void>((resolve) => {
      for (const ws of sockets) ws.terminate()
      wss.close()
      server.closeAllConnections()
      server.close(() => resolve())
    })
  t.teardown(close)
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, received, sockets, close }
}

/**
 * The guard the forwarder puts on undici 7's HTTP/1 parser (src/forward/forwarder.ts), in a
 * process of its own: the guard patches undici's parser prototype once per process, and this test
 * needs to see it unpatched first.
 */
import t from 'tap'
import { createServer } from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo, Socket } from 'node:net'
import { Client, buildConnector } from 'undici'
import { guardParser } from '../../src/forward/forwarder.js'

t.test("undici's parser, finished while paused (an upstream reset or close after a response without keep-alive), no longer throws", async (t) => {
  // The exact failure of a finding (a close-delimited response, then an RST while the parser was
  // paused for a client not reading) killed the process from undici's socket 'error' listener.
  // Reproducing that timing takes a sweep of body sizes; this drives the parser state itself.
  const server = createServer((_req, res) => res.writeHead(200, { 'content-length': '2' }).end('ok'))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => (server.closeAllConnections(), server.close(() => resolve()))))
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  let socket: Socket | undefined
  // undici's own connector: the forwarder's guards the parser on its first read, and this test
  // needs the parser unguarded first.
  const base = buildConnector({ timeout: 1000 })
  const pool = new Client(origin, { connect: (opts, cb) => base(opts, (...args) => ((socket = args[1] ?? undefined), cb(...args))) })
  t.teardown(() => pool.close())
  const res = await pool.request({ path: '/', method: 'GET' })
  await res.body.text()
  const { kParser } = createRequire(import.meta.url)('undici/lib/core/symbols.js') as { kParser: symbol }
  const parser = (socket as unknown as Record<symbol, { paused: boolean; finish(): unknown }>)[kParser] as { paused: boolean; finish(): unknown }
  t.ok(parser, 'the pooled connection has its parser')
  const proto = Object.getPrototypeOf(parser) as { finish(this: unknown): unknown }
  const original = proto.finish
  parser.paused = true
  t.throws(() => original.call(parser), { name: 'AssertionError' }, 'undici 7 asserts (when this fails, undici fixed #5360: drop the guard)')
  guardParser.call(socket as Socket)
  parser.paused = true
  t.doesNotThrow(() => parser.finish(), 'guarded: a paused parser finishes as undici 8 does')
})


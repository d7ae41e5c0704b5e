/**
 * The forwarder between real servers: client (undici, ws) → front server calling the forwarder
 * (the pipeline's part, reduced to what these tests need) → upstream (node:http, ws). 127.0.0.1 only.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { Agent as HttpAgent, createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import { createServer as createNetServer, connect as netConnect, type AddressInfo, type Socket } from 'node:net'
import { Readable } from 'node:stream'
import { Client, type Dispatcher } from 'undici'
import { WebSocket, WebSocketServer } from 'ws'
import {
  createForwarder,
  FrameCursor,
  type ForwardOutcome,
  type UpgradeHandle,
  type UpgradeOutcome,
} from '../../src/forward/forwarder.js'
import { buildUpstreamHeaders } from '../../src/forward/headers.js'

/** Values handed over between event handlers and the test body, in order. */
class Mailbox<T> {
  private readonly items: T[] = []
  private readonly waiters: Array<(item: T) => void> = []

  put(item: T): void {
    const waiter = this.waiters.shift()
    if (waiter) waiter(item)
    else this.items.push(item)
  }

  /** The next item; fails the test instead of hanging when none comes. */
  next(ms = 5_000): Promise<T> {
    const item = this.items.shift()
    if (item !== undefined) return Promise.resolve(item)
    return new Promise((resolve, reject) => {
      const waiter = (value: T): void => {
        clearTimeout(timer)
        resolve(value)
      }
      const timer = setTimeout(() => {
        // A waiter that gave up must not swallow the next item.
        this.waiters.splice(this.waiters.indexOf(waiter), 1)
        reject(new Error(`nothing arrived within ${ms} ms`))
      }, ms)
      this.waiters.push(waiter)
    })
  }
}

/** A promise with its resolver, for one-off signals between the two ends. */
function signal<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void
  const promise = new Promise<T>((r) => (resolve = r))
  return { promise, resolve }
}

async function listen(t: Test, server: Server): Promise<string> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** An origin nothing listens on. */
async function deadOrigin(): Promise<string> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise((resolve) => server.close(resolve))
  return `http://127.0.0.1:${port}`
}

interface Upstream {
  readonly origin: string
  /** TCP connections the upstream has accepted. */
  connections(): number
}

async function startUpstream(t: Test, handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<Upstream> {
  const server = createServer(handler)
  let connections = 0
  server.on('connection', () => connections++)
  const origin = await listen(t, server)
  return { origin, connections: () => connections }
}

interface Gateway {
  readonly origin: string
  readonly outcomes: Mailbox<ForwardOutcome>
  readonly upgrades: Mailbox<UpgradeOutcome>
  /** The client's headers as the front's caller sees them once `upgrade()` returned. */
  readonly callerHeaders: Mailbox<IncomingMessage['headers']>
  /** The raw sockets of upgrade requests, as the front received them. */
  readonly sockets: Mailbox<Socket>
}

/**
 * The front: builds the upstream headers, forwards, and writes the error response itself when the
 * outcome says the response has not started, as the pipeline does.
 */
async function startGateway(
  t: Test,
  upstreamOrigin: string,
  opts: { timeoutMs?: number; forwarder?: ReturnType<typeof createForwarder>; delayMs?: number } = {},
): Promise<Gateway> {
  const forwarder = opts.forwarder ?? createForwarder()
  t.teardown(() => forwarder.close())
  const timeoutMs = opts.timeoutMs ?? 5_000
  const outcomes = new Mailbox<ForwardOutcome>()
  const upgrades = new Mailbox<UpgradeOutcome>()
  const callerHeaders = new Mailbox<IncomingMessage['headers']>()
  const sockets = new Mailbox<Socket>()
  const target = (req: IncomingMessage, upgrade: boolean) => ({
    origin: upstreamOrigin,
    path: req.url ?? '/',
    timeoutMs,
    headers: buildUpstreamHeaders(req, {
      clientIp: req.socket.remoteAddress ?? '',
      proto: 'https',
      host: req.headers.host ?? '',
      requestId: 'req-1',
      identity: { subject: 'acme', grantId: 'g-1' },
      inject: [['x-upstream-key', 'k-123']],
      upstreamHost: new URL(upstreamOrigin).host,
      upgrade,
    }),
  })
  const status = (code: string) => (code === 'upstream_timeout' ? 504 : 502)

  // The pipeline decides before it forwards (a store round trip): a client can leave meanwhile.
  const delayed = (fn: () => void) => (opts.delayMs === undefined ? fn() : void setTimeout(fn, opts.delayMs))
  const server = createServer((req, res) => delayed(() => {
    void forwarder.forward(req, res, target(req, false)).then((outcome) => {
      if (!outcome.ok && !outcome.responseStarted) {
        res.writeHead(status(outcome.code), { 'content-type': 'application/json' })
        res.end(JSON.stringify({ error: { code: outcome.code } }))
      }
      outcomes.put(outcome)
    })
  }))
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    sockets.put(socket)
    void forwarder.upgrade(req, socket, head, target(req, true)).then((outcome) => {
      callerHeaders.put(req.headers)
      if (!outcome.ok && socket.writable) {
        socket.end(`HTTP/1.1 ${status(outcome.code)} Upstream\r\ncontent-length: 0\r\nconnection: close\r\n\r\n`)
      }
      upgrades.put(outcome)
    })
  })
  const origin = await listen(t, server)
  return { origin, outcomes, upgrades, callerHeaders, sockets }
}

function client(t: Test, origin: string): Client {
  const c = new Client(origin)
  t.teardown(() => c.destroy())
  return c
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

async function readAll(req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

t.test('HTTP', async (t) => {
  t.test('GET: status, headers and body come back; the path goes up byte for byte', async (t) => {
    const up = await startUpstream(t, (req, res) => {
      res.writeHead(201, { 'content-type': 'text/plain', 'x-upstream': '1' })
      res.end(`saw ${req.url}`)
    })
    const gw = await startGateway(t, up.origin)
    const res = await client(t, gw.origin).request({ path: '/a//b/%7E/c?q=1&q=2', method: 'GET' })
    t.equal(res.statusCode, 201)
    t.equal(res.headers['x-upstream'], '1')
    t.equal(await res.body.text(), 'saw /a//b/%7E/c?q=1&q=2')
    const outcome = await gw.outcomes.next()
    t.match(outcome, { ok: true, status: 201 })
    t.ok(outcome.upstreamMs >= 0)
  })

  t.test('request headers: credentials in; token, forged identity and hop-by-hop out', async (t) => {
    const up = await startUpstream(t, (req, res) => res.end(JSON.stringify(req.headers)))
    const gw = await startGateway(t, up.origin)
    // node:http rather than undici: undici will not send a Connection header that names others.
    const req = httpRequest(gw.origin + '/h', {
      headers: {
        authorization: 'Bearer eyJ.jit.token',
        'x-forwarded-for': '10.9.9.9',
        'x-jit-subject': 'admin',
        connection: 'close, X-Hop',
        'x-hop': 'gone',
        te: 'trailers',
        'x-upstream-key': 'forged',
        cookie: 'a=1',
      },
    }).end()
    const [res] = (await once(req, 'response')) as [IncomingMessage]
    const seen = JSON.parse((await readAll(res)).toString()) as Record<string, string>
    t.notOk('authorization' in seen, 'the JIT token never reaches the upstream')
    t.notOk('x-hop' in seen, 'a header the Connection header names stays on its hop')
    t.notOk('te' in seen)
    t.equal(seen['x-forwarded-for'], '127.0.0.1')
    t.equal(seen['x-forwarded-proto'], 'https')
    t.equal(seen['x-forwarded-host'], gw.origin.slice('http://'.length))
    t.equal(seen['x-jit-subject'], 'acme')
    t.equal(seen['x-jit-grant'], 'g-1')
    t.equal(seen['x-request-id'], 'req-1')
    t.equal(seen['x-upstream-key'], 'k-123', 'injected credential arrives, the client’s copy does not')
    t.equal(seen.host, up.origin.slice('http://'.length))
    t.equal(seen.cookie, 'a=1')
  })

  t.test('bodies: content-length and chunked, with every method', async (t) => {
    const up = await startUpstream(t, (req, res) => {
      void readAll(req).then((body) =>
        res.end(
          JSON.stringify({
            method: req.method,
            length: req.headers['content-length'] ?? null,
            chunked: req.headers['transfer-encoding'] === 'chunked',
            body: body.toString(),
          }),
        ),
      )
    })
    const gw = await startGateway(t, up.origin)
    const c = client(t, gw.origin)
    // A chunked body that has fully arrived by the time it is forwarded may go up with a
    // Content-Length instead (undici measures an ended stream): either framing is right, as
    // long as the body arrives whole. A bodiless request must go up with neither.
    const cases: Array<{ method: Dispatcher.HttpMethod; body?: string | (() => Readable); expected: string }> = [
      { method: 'POST', body: 'posted', expected: 'posted' },
      { method: 'PUT', body: () => Readable.from(['put ', 'in ', 'chunks']), expected: 'put in chunks' },
      { method: 'PATCH', body: 'patch', expected: 'patch' },
      { method: 'DELETE', body: () => Readable.from(['delete ', 'body']), expected: 'delete body' },
      { method: 'OPTIONS', body: () => Readable.from(['options ', 'body']), expected: 'options body' },
      { method: 'DELETE', body: 'del', expected: 'del' },
      { method: 'DELETE', expected: '' },
      { method: 'OPTIONS', expected: '' },
      { method: 'GET', expected: '' },
      { method: 'POST', body: '', expected: '' },
    ]
    for (const tc of cases) {
      const body = typeof tc.body === 'function' ? tc.body() : tc.body
      const res = await c.request({ path: '/b', method: tc.method, ...(body !== undefined ? { body } : {}) })
      const seen = (await res.body.json()) as { method: string; length: string | null; chunked: boolean; body: string }
      const label = `${tc.method} ${typeof tc.body === 'function' ? 'chunked' : tc.body === undefined ? 'without body' : `length ${tc.body.length}`}`
      t.equal(seen.method, tc.method, label)
      t.equal(seen.body, tc.expected, `${label}: body`)
      if (tc.body === undefined) t.same([seen.length, seen.chunked], [null, false], `${label}: no framing`)
      else t.ok(seen.chunked !== (seen.length === String(Buffer.byteLength(tc.expected))), `${label}: one framing, right length`)
      t.match(await gw.outcomes.next(), { ok: true, status: 200 })
    }
  })

  t.test('large bodies stream both ways without being buffered', async (t) => {
    const size = 8 * 1024 * 1024
    const chunk = Buffer.alloc(64 * 1024, 'x')
    const firstUpload = signal()
    const firstDownload = signal()
    const up = await startUpstream(t, (req, res) => {
      if (req.method === 'POST') {
        const hash = createHash('sha256')
        let bytes = 0
        req.on('data', (data: Buffer) => {
          if (bytes === 0) firstUpload.resolve()
          bytes += data.length
          hash.update(data)
        })
        req.on('end', () => res.end(JSON.stringify({ bytes, sha: hash.digest('hex') })))
        return
      }
      // Download: the rest only once the client has the first chunk, which only streaming allows.
      res.writeHead(200, { 'content-length': size })
      res.write(chunk)
      void firstDownload.promise.then(async () => {
        for (let sent = chunk.length; sent < size; sent += chunk.length) {
          if (!res.write(chunk)) await once(res, 'drain')
        }
        res.end()
      })
    })
    const gw = await startGateway(t, up.origin)
    const c = client(t, gw.origin)

    // Upload: the rest only once the upstream has the first chunk.
    async function* upload(): AsyncGenerator<Buffer> {
      yield chunk
      await firstUpload.promise
      for (let sent = chunk.length; sent < size; sent += chunk.length) yield chunk
    }
    const posted = await c.request({ path: '/up', method: 'POST', body: Readable.from(upload()) })
    t.same(await posted.body.json(), { bytes: size, sha: sha256(Buffer.alloc(size, 'x')) })

    const got = await c.request({ path: '/down', method: 'GET' })
    const hash = createHash('sha256')
    let bytes = 0
    for await (const data of got.body) {
      if (bytes === 0) firstDownload.resolve()
      bytes += (data as Buffer).length
      hash.update(data as Buffer)
    }
    t.equal(bytes, size)
    t.equal(hash.digest('hex'), sha256(Buffer.alloc(size, 'x')))
  })

  t.test('response: every set-cookie line kept, hop-by-hop headers dropped', async (t) => {
    const up = await startUpstream(t, (_req, res) => {
      res.setHeader('set-cookie', ['a=1; Path=/', 'b=2; HttpOnly', 'c=3'])
      res.setHeader('connection', 'keep-alive, x-hop')
      res.setHeader('x-hop', 'gone')
      res.setHeader('keep-alive', 'timeout=17')
      res.end('ok')
    })
    const gw = await startGateway(t, up.origin)
    const res = await client(t, gw.origin).request({ path: '/', method: 'GET' })
    t.same(res.headers['set-cookie'], ['a=1; Path=/', 'b=2; HttpOnly', 'c=3'])
    t.notOk('x-hop' in res.headers)
    t.not(res.headers['keep-alive'], 'timeout=17', 'the upstream’s keep-alive is not the client connection’s')
    t.equal(await res.body.text(), 'ok')
  })

  t.test('HEAD has no body; redirects are passed back, not followed', async (t) => {
    const up = await startUpstream(t, (req, res) => {
      if (req.url === '/moved') {
        res.writeHead(302, { location: '/elsewhere' }).end()
        return
      }
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '11' })
      res.end(req.method === 'HEAD' ? undefined : 'hello world')
    })
    const gw = await startGateway(t, up.origin)
    const c = client(t, gw.origin)
    const head = await c.request({ path: '/', method: 'HEAD' })
    t.equal(head.statusCode, 200)
    t.equal(head.headers['content-length'], '11')
    t.equal(await head.body.text(), '')
    const moved = await c.request({ path: '/moved', method: 'GET' })
    t.equal(moved.statusCode, 302)
    t.equal(moved.headers.location, '/elsewhere')
    await moved.body.dump()
    const after = await c.request({ path: '/', method: 'GET' })
    t.equal(await after.body.text(), 'hello world', 'the client connection is still usable after HEAD')
  })

  t.test('an interim 103 is not relayed; the final response is', async (t) => {
    const up = await startUpstream(t, (_req, res) => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload; as=style' })
      res.end('final')
    })
    const gw = await startGateway(t, up.origin)
    const res = await client(t, gw.origin).request({ path: '/', method: 'GET' })
    t.equal(res.statusCode, 200)
    t.equal(await res.body.text(), 'final')
  })

  t.test('keep-alive: sequential requests reuse the upstream connection', async (t) => {
    const up = await startUpstream(t, (_req, res) => res.end('ok'))
    const gw = await startGateway(t, up.origin)
    const c = client(t, gw.origin)
    for (let i = 0; i < 50; i++) {
      const res = await c.request({ path: `/${i}`, method: 'GET' })
      await res.body.dump()
    }
    t.ok(up.connections() <= 2, `50 requests over ${up.connections()} upstream connection(s)`)
  })

  t.test('upstream down → upstream_unavailable, answered by the caller', async (t) => {
    const gw = await startGateway(t, await deadOrigin())
    const res = await client(t, gw.origin).request({ path: '/', method: 'GET' })
    t.equal(res.statusCode, 502)
    t.same(await res.body.json(), { error: { code: 'upstream_unavailable' } })
    t.match(await gw.outcomes.next(), { ok: false, code: 'upstream_unavailable', responseStarted: false, detail: /ECONNREFUSED/ })
  })

  t.test('upstream slow → upstream_timeout within the bound, upstream request aborted', async (t) => {
    const upstreamClosed = signal()
    const up = await startUpstream(t, (_req, res) => res.on('close', () => upstreamClosed.resolve()))
    const gw = await startGateway(t, up.origin, { timeoutMs: 200 })
    const started = performance.now()
    const res = await client(t, gw.origin).request({ path: '/', method: 'GET' })
    const elapsed = performance.now() - started
    t.equal(res.statusCode, 504)
    t.same(await res.body.json(), { error: { code: 'upstream_timeout' } })
    t.ok(elapsed >= 190 && elapsed < 1_000, `answered after ${Math.round(elapsed)} ms`)
    t.match(await gw.outcomes.next(), { ok: false, code: 'upstream_timeout', responseStarted: false })
    await upstreamClosed.promise
  })

  t.test('an upstream that reads none of the request body → upstream_timeout', async (t) => {
    const up = await startUpstream(t, () => {}) // reads nothing, answers nothing
    const gw = await startGateway(t, up.origin, { timeoutMs: 200 })
    // More than every buffer on the way holds, and never ending: the upload stops at the upstream.
    const body = new Readable({
      read() {
        this.push(Buffer.alloc(64 * 1024, 'z'))
      },
    })
    const status = await client(t, gw.origin)
      .request({ path: '/', method: 'PUT', body })
      .then(
        async (res) => (await res.body.dump(), res.statusCode),
        () => 'connection ended',
      )
    const outcome = await gw.outcomes.next()
    t.match(outcome, { ok: false, code: 'upstream_timeout', detail: 'the upstream read none of the request body for 200 ms' })
    t.equal(status, outcome.ok === false && outcome.responseStarted ? 'connection ended' : 504)
    body.destroy()
  })

  t.test('a client that stops sending its request body → request_timeout, the upstream request dropped', async (t) => {
    const upstreamGone = signal()
    const up = await startUpstream(t, (req, res) => {
      req.resume() // reads all it gets, waits for the rest
      res.on('close', () => upstreamGone.resolve())
    })
    const gw = await startGateway(t, up.origin, { timeoutMs: 200 })
    const u = new URL(gw.origin)
    // The exact shape of the finding: a declared length, part of the body, then nothing. It was
    // audited upstream_timeout (504), blaming the upstream for the client's silence.
    const socket = netConnect(Number(u.port), u.hostname, () => socket.write('PUT /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n0123456789'))
    socket.on('error', () => {})
    t.teardown(() => socket.destroy())
    t.match(await gw.outcomes.next(), { ok: false, code: 'request_timeout', detail: 'the client sent none of its request body for 200 ms' })
    await upstreamGone.promise
    t.pass('the upstream request was dropped')
  })

  t.test('an upload waiting for an upstream connection is the upstream\'s delay: upstream_timeout on time', async (t) => {
    // The exact input of a finding: one connection per origin, held by a response that never
    // comes; a PUT sent whole waits in the pool. It was blamed on the client (request_timeout),
    // after twice the budget (its buffered body bytes counted as upload progress).
    const up = await startUpstream(t, (req, res) => {
      if (req.url === '/hold') return // never answers
      req.resume()
      req.on('end', () => res.end('ok'))
    })
    // One forwarder (one pool) behind two fronts: the holder's budget is long, the upload's short.
    const forwarder = createForwarder({ connectionsPerOrigin: 1 })
    const holder = await startGateway(t, up.origin, { timeoutMs: 3_000, forwarder })
    const gw = await startGateway(t, up.origin, { timeoutMs: 300, forwarder })
    const held = client(t, holder.origin).request({ path: '/hold', method: 'GET' }).then(() => undefined, () => undefined)
    await new Promise((r) => setTimeout(r, 50))
    const started = performance.now()
    const res = await client(t, gw.origin).request({ path: '/upload', method: 'PUT', body: 'all of it' })
    const elapsed = performance.now() - started
    await res.body.dump()
    t.equal(res.statusCode, 504)
    t.ok(elapsed < 550, `answered after ${Math.round(elapsed)} ms, within its 300 ms budget and some`)
    t.match(await gw.outcomes.next(), { ok: false, code: 'upstream_timeout', detail: 'no response headers in time' })
    t.match(await holder.outcomes.next(), { ok: false, code: 'upstream_timeout' })
    await held
  })

  t.test('a long upload is not cut while it moves: the upstream budget counts from its end', async (t) => {
    const up = await startUpstream(t, (req, res) => {
      let n = 0
      req.on('data', (c: Buffer) => (n += c.length))
      // The answer takes most of the budget again once the body is in.
      req.on('end', () => setTimeout(() => res.end(String(n)), 120))
    })
    const gw = await startGateway(t, up.origin, { timeoutMs: 200 })
    // 12 chunks, 80 ms apart: about 1 s of upload against a 200 ms budget.
    let sent = 0
    const body = new Readable({
      read() {
        if (sent === 12) return void this.push(null)
        sent++
        setTimeout(() => this.push(Buffer.alloc(1000, 'u')), 80)
      },
    })
    const res = await client(t, gw.origin).request({ path: '/upload', method: 'PUT', body })
    t.same([res.statusCode, await res.body.text()], [200, '12000'])
    t.match(await gw.outcomes.next(), { ok: true, status: 200 })
  })

  t.test('upstream dies mid-response → the client sees a broken response, nothing crashes', async (t) => {
    const up = await startUpstream(t, (_req, res) => {
      res.writeHead(200, { 'content-length': '100000' })
      res.write(Buffer.alloc(1000, 'y'), () => setTimeout(() => res.socket?.destroy(), 20))
    })
    const gw = await startGateway(t, up.origin)
    const res = await client(t, gw.origin).request({ path: '/', method: 'GET' })
    t.equal(res.statusCode, 200)
    await t.rejects(res.body.text(), 'the truncated body is an error, not a short success')
    t.match(await gw.outcomes.next(), { ok: false, code: 'upstream_unavailable', responseStarted: true })

    const again = await client(t, gw.origin).request({ path: '/', method: 'GET' })
    t.equal(again.statusCode, 200, 'the gateway keeps serving')
    await t.rejects(again.body.text())
  })

  t.test('upstream dies mid-upload → upstream_unavailable, blamed on the upstream', async (t) => {
    const up = await startUpstream(t, (req) => req.once('data', () => req.socket.destroy()))
    const gw = await startGateway(t, up.origin)
    const body = new Readable({ read() {} })
    body.push(Buffer.alloc(64 * 1024, 'z'))
    const status = await client(t, gw.origin)
      .request({ path: '/', method: 'PUT', body })
      .then(
        async (res) => (await res.body.dump(), res.statusCode),
        () => 'connection ended',
      )
    const outcome = await gw.outcomes.next()
    t.match(outcome, { ok: false, code: 'upstream_unavailable' })
    t.not(outcome.ok === false && outcome.detail, 'client closed the connection', 'blames the upstream')
    // Depending on where undici notices, the caller's 502 gets out before the unread body takes
    // the client connection down, or it does not; the outcome must say which.
    t.equal(status, outcome.ok === false && outcome.responseStarted ? 'connection ended' : 502)
  })

  t.test('client aborts while waiting → the upstream request is aborted', async (t) => {
    const received = signal()
    const upstreamClosed = signal<boolean>()
    const up = await startUpstream(t, (_req, res) => {
      received.resolve()
      res.on('close', () => upstreamClosed.resolve(res.writableFinished))
    })
    const gw = await startGateway(t, up.origin)
    const controller = new AbortController()
    const pending = client(t, gw.origin).request({ path: '/', method: 'GET', signal: controller.signal })
    await received.promise
    controller.abort()
    await t.rejects(pending)
    t.equal(await upstreamClosed.promise, false, 'closed before a response was sent')
    t.match(await gw.outcomes.next(), {
      ok: false,
      code: 'client_aborted',
      responseStarted: true,
      detail: 'client closed the connection',
    })
  })

  t.test('client aborts mid-response → the upstream request is aborted', async (t) => {
    const upstreamClosed = signal()
    const up = await startUpstream(t, (_req, res) => {
      res.writeHead(200)
      const timer = setInterval(() => res.write('tick\n'), 5)
      res.on('close', () => {
        clearInterval(timer)
        upstreamClosed.resolve()
      })
    })
    const gw = await startGateway(t, up.origin)
    const res = await client(t, gw.origin).request({ path: '/', method: 'GET' })
    for await (const _ of res.body) break // first chunk, then the client goes away
    await upstreamClosed.promise
    t.match(await gw.outcomes.next(), { ok: false, code: 'client_aborted', responseStarted: true, detail: 'client closed the connection' })
  })

  t.test('client aborts mid-upload → the upstream request is aborted', async (t) => {
    const gotData = signal()
    const upstreamClosed = signal()
    const up = await startUpstream(t, (req, res) => {
      req.once('data', () => gotData.resolve())
      res.on('close', () => upstreamClosed.resolve())
    })
    const gw = await startGateway(t, up.origin)
    const body = new Readable({ read() {} })
    body.push('first part of a body that never ends')
    const controller = new AbortController()
    const pending = client(t, gw.origin).request({ path: '/', method: 'PUT', body, signal: controller.signal })
    await gotData.promise
    controller.abort()
    await t.rejects(pending)
    await upstreamClosed.promise
    t.match(await gw.outcomes.next(), { ok: false, code: 'client_aborted', responseStarted: true, detail: 'client closed the connection' })
  })
})

interface WsUpstream {
  readonly origin: string
  readonly requests: Mailbox<IncomingMessage>
  readonly sockets: Mailbox<WebSocket>
}

async function startWsUpstream(t: Test): Promise<WsUpstream> {
  const server = createServer((_req, res) => res.writeHead(426).end())
  const wss = new WebSocketServer({ server })
  const requests = new Mailbox<IncomingMessage>()
  const sockets = new Mailbox<WebSocket>()
  wss.on('connection', (ws, req) => {
    requests.put(req)
    sockets.put(ws)
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
  })
  t.teardown(() => {
    for (const ws of wss.clients) ws.terminate()
    wss.close()
  })
  return { origin: await listen(t, server), requests, sockets }
}

function wsClient(t: Test, gw: Gateway, path: string, headers: Record<string, string> = {}): WebSocket {
  const ws = new WebSocket(gw.origin.replace('http:', 'ws:') + path, { headers })
  // Tests await the errors they expect; one more (terminating a failed handshake) is not a failure.
  ws.on('error', () => {})
  t.teardown(() => ws.terminate())
  return ws
}

async function opened(gw: Gateway, ws: WebSocket): Promise<UpgradeHandle> {
  await once(ws, 'open')
  const outcome = await gw.upgrades.next()
  if (!outcome.ok) throw new Error(`upgrade failed: ${outcome.code} ${outcome.detail}`)
  return outcome.handle
}

/** The close event's code and reason; `error` events are collected rather than thrown. */
function closeOf(ws: WebSocket): Promise<{ code: number; reason: string; errors: string[] }> {
  const errors: string[] = []
  ws.on('error', (err) => errors.push(err.message))
  return new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: reason.toString(), errors })))
}

/**
 * Calls back when the gateway drops an upgrade socket the upstream has not answered. Node leaves
 * the server side of an upgrade half-open, so the drop shows as 'end' (once reading), and the
 * upstream closes its side as a real one would.
 */
function dropped(socket: Socket, onDropped: () => void): void {
  socket.resume().on('end', () => {
    socket.end()
    onDropped()
  })
}

/**
 * An upstream that answers every request HTTP/1.0 style: the body, then it closes the connection
 * (python's http.server does this). `framing` picks Content-Length or a close-delimited body.
 */
async function startClosingUpstream(t: Test, body: Buffer, framing: 'length' | 'eof'): Promise<string> {
  const server = createNetServer((socket) => {
    socket.on('error', () => socket.destroy())
    socket.once('data', () => {
      // Head, body and FIN in one go: the gateway reads the FIN with the last bytes.
      const head = `HTTP/1.0 200 OK\r\ncontent-type: application/octet-stream\r\n${framing === 'length' ? `content-length: ${body.length}\r\n` : ''}\r\n`
      socket.end(Buffer.concat([Buffer.from(head), body]))
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const sockets = new Set<Socket>()
  server.on('connection', (s) => (sockets.add(s), s.on('close', () => sockets.delete(s))))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}

/** A raw GET to the front; reads nothing for `stallMs`, then everything; resolves with the body length. */
function slowGet(origin: string, stallMs: number): Promise<number> {
  const u = new URL(origin)
  return new Promise((resolve, reject) => {
    const socket = netConnect(Number(u.port), u.hostname, () => socket.write('GET /big HTTP/1.0\r\nHost: a\r\n\r\n'))
    const chunks: Buffer[] = []
    socket.pause()
    setTimeout(() => socket.resume(), stallMs)
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('error', reject)
    socket.on('close', () => {
      const text = Buffer.concat(chunks)
      resolve(text.length - (text.indexOf('\r\n\r\n') + 4))
    })
  })
}

t.test('an upstream that closes after each response, with a slow or vanishing client, never takes the gateway down', async (t) => {
  // The exact inputs of a finding: python's http.server upstream, a client that sent a request
  // and closed at once. undici's parser, paused for backpressure (a 40 KiB chunk is more than the
  // client response's buffer takes) when the upstream's FIN had already been read with the last
  // bytes, threw an uncatchable AssertionError (nodejs/undici#5360) and the process died.
  for (const [framing, size] of [['length', 6], ['eof', 6], ['length', 40 * 1024], ['eof', 40 * 1024], ['length', 100 * 1024], ['eof', 100 * 1024], ['length', 96 * 1024], ['eof', 96 * 1024], ['length', 1024 * 1024], ['eof', 1024 * 1024]] as const) {
    const body = Buffer.alloc(size, 0x61)
    const upstream = await startClosingUpstream(t, body, framing)
    const gw = await startGateway(t, upstream, { delayMs: 30 })
    const u = new URL(gw.origin)
    for (let i = 0; i < 10; i++) {
      // Half-closed right after the request (as a script's `sock.close()` does), then gone.
      const socket = netConnect(Number(u.port), u.hostname, () => {
        socket.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n')
        if (i % 2 === 0) socket.end()
        setTimeout(() => socket.destroy(), i % 2 === 0 ? 300 : i * 5)
      })
      socket.on('error', () => {})
      socket.on('data', () => {})
      const outcome = await gw.outcomes.next()
      t.ok(outcome.ok || outcome.code === 'client_aborted', `${framing} ${size}: vanishing client ${i}: ${outcome.ok ? 'ok' : outcome.code}`)
    }
    // A slow reader: the response is paused for backpressure again and again, the upstream's FIN
    // arrives meanwhile, and the whole body still reaches the client.
    for (const stallMs of [300, 50]) {
      t.equal(await slowGet(gw.origin, stallMs), body.length, `${framing} ${size}: slow client (${stallMs} ms) gets the whole body`)
      t.match(await gw.outcomes.next(), { ok: true, status: 200 })
    }
  }
})

t.test('an upstream that resets its connection after a close-delimited response, to a client not reading, never takes the gateway down', async (t) => {
  // The exact input of a finding: `Connection: close`, a close-delimited body, then an RST
  // (SO_LINGER 0) while the gateway's parser was paused for a client that does not read: undici
  // took the ECONNRESET for the end of the body and threw the same uncatchable assertion.
  const server = createNetServer((socket) => {
    socket.on('error', () => {})
    socket.once('data', (d: Buffer) => {
      const size = Number(/n=(\d+)/.exec(d.toString())?.[1] ?? 0)
      socket.write('HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n')
      socket.write(Buffer.alloc(size, 0x79), () => socket.resetAndDestroy())
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  const gw = await startGateway(t, `http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  const u = new URL(gw.origin)
  for (const size of [64 * 1024, 512 * 1024, 2 * 1024 * 1024, 2900 * 1024, 4 * 1024 * 1024]) {
    const socket = netConnect(Number(u.port), u.hostname, () => socket.write(`GET /reset?n=${size} HTTP/1.1\r\nHost: a\r\n\r\n`))
    socket.pause()
    socket.on('error', () => {})
    // The client reads nothing for a while (the reset arrives meanwhile), then leaves.
    setTimeout(() => socket.destroy(), 300)
    const outcome = await gw.outcomes.next()
    t.ok(outcome.ok || outcome.code === 'client_aborted' || outcome.code === 'upstream_unavailable', `${size} bytes then RST: ${outcome.ok ? 'ok' : outcome.code}`)
  }
  // Still serving.
  const probe = netConnect(Number(u.port), u.hostname, () => probe.write('GET /reset?n=10 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'))
  let text = ''
  probe.on('data', (c: Buffer) => (text += c.toString()))
  await new Promise((resolve) => probe.on('close', resolve).on('error', resolve))
  t.match(text, /^HTTP\/1\.1 (200|502) /, 'the gateway still answers')
})

/** An upstream speaking raw bytes: `reply` answers every chunk a connection sends (one request each). */
async function rawUpstream(t: Test, reply: (socket: Socket, request: string) => void): Promise<Upstream> {
  let connections = 0
  const sockets = new Set<Socket>()
  const server = createNetServer((socket) => {
    connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    socket.on('error', () => {})
    socket.on('data', (d: Buffer) => reply(socket, d.toString('latin1')))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { origin: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, connections: () => connections }
}

/** A GET through node:http's client, which reads a 304's Content-Length as RFC 9110 has it (undici 7 does not). */
function nodeGet(origin: string, path: string, agent: HttpAgent): Promise<{ status: number; headers: IncomingMessage['headers']; body: string; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(`${origin}${path}`, { agent }, (res) => {
      let body = ''
      res.setEncoding('latin1')
      res.on('data', (c: string) => (body += c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body, socket: res.socket }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a 204 or 304 ends with its headers, whatever Content-Length it declares', async (t) => {
  // The exact inputs of a finding: a 304 carrying its representation's Content-Length (which RFC
  // 9110 §8.6 allows) was failed by undici after its headers had gone out (the client got a cut
  // response, the audit a 502); a 204 declaring one (which it must not) went the same way.
  const up = await rawUpstream(t, (socket, request) => {
    if (request.startsWith('GET /304 ')) socket.write('HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\nContent-Length: 1234\r\n\r\n')
    else if (request.startsWith('GET /204 ')) socket.write('HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n')
    else socket.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
  })
  const gw = await startGateway(t, up.origin)
  const agent = new HttpAgent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())

  const notModified = await nodeGet(gw.origin, '/304', agent)
  t.equal(notModified.status, 304)
  t.equal(notModified.headers.etag, '"v1"')
  t.equal(notModified.headers['content-length'], '1234', "a 304 keeps its representation's length")
  t.equal(notModified.body, '')
  t.match(await gw.outcomes.next(), { ok: true, status: 304 })

  const noContent = await nodeGet(gw.origin, '/204', agent)
  t.equal(noContent.status, 204)
  t.notOk('content-length' in noContent.headers, 'a 204 goes out without the Content-Length it must not have')
  t.match(await gw.outcomes.next(), { ok: true, status: 204 })
  t.equal(noContent.socket, notModified.socket, 'the client connection stayed usable')

  const after = await nodeGet(gw.origin, '/after', agent)
  t.same([after.status, after.body], [200, 'ok'])
  t.equal(after.socket, notModified.socket)
  t.match(await gw.outcomes.next(), { ok: true, status: 200 })
})

t.test('an unsolicited 100 Continue is skipped: the final response follows', async (t) => {
  // The exact input of a finding: a server that sends 100 Continue whatever the request (the
  // gateway never forwards Expect) was answered 502, undici having dropped the connection.
  const up = await rawUpstream(t, (socket, request) => {
    socket.write('HTTP/1.1 100 Continue\r\n\r\n')
    const final = `HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n${request.startsWith('GET /split ') ? 'later' : 'final'}`
    if (request.startsWith('GET /split ')) setTimeout(() => socket.write(final), 30)
    else socket.write(final)
  })
  const gw = await startGateway(t, up.origin)
  const c = client(t, gw.origin)
  for (const [path, body] of [['/', 'final'], ['/split', 'later'], ['/', 'final']] as const) {
    const res = await c.request({ path, method: 'GET' })
    t.same([res.statusCode, await res.body.text()], [200, body], `${path}: the final response`)
    t.match(await gw.outcomes.next(), { ok: true, status: 200 })
  }
  t.equal(up.connections(), 1, 'the upstream connection was kept')
})

t.test('a close-delimited body ended by a reset is not passed off as whole; one ended by a close is', async (t) => {
  // The exact input of a finding: headers, a close-delimited body, then an RST. undici ends such
  // a body at a reset as at a close, so the client got a cut body as a complete 200.
  const up = await rawUpstream(t, (socket, request) => {
    socket.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n')
    if (request.startsWith('GET /reset ')) socket.write('partial', () => setTimeout(() => socket.resetAndDestroy(), 30))
    else socket.write('whole', () => setTimeout(() => socket.end(), 30))
  })
  const gw = await startGateway(t, up.origin)
  const cut = await client(t, gw.origin).request({ path: '/reset', method: 'GET' })
  t.equal(cut.statusCode, 200)
  await t.rejects(cut.body.text(), 'the client sees its response cut off, not ended')
  t.match(await gw.outcomes.next(), { ok: false, code: 'upstream_unavailable', responseStarted: true, detail: /reset the connection before the end of a close-delimited body/ })

  const whole = await client(t, gw.origin).request({ path: '/close', method: 'GET' })
  t.same([whole.statusCode, await whole.body.text()], [200, 'whole'])
  t.match(await gw.outcomes.next(), { ok: true, status: 200 })
})

t.test('a client that reads none of its response for the send timeout is cut, and the upstream request dropped', async (t) => {
  let upstreamGone = signal()
  const up = await startUpstream(t, (_req, res) => {
    res.on('close', () => upstreamGone.resolve())
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    // 256 MiB, with backpressure: far more than every buffer between here and a client not reading.
    Readable.from((function* () {
      for (let i = 0; i < 4096; i++) yield Buffer.alloc(64 * 1024, 0x7a)
    })()).pipe(res).on('error', () => {})
  })
  const gw = await startGateway(t, up.origin, { forwarder: createForwarder({ sendTimeoutMs: 300 }) })
  const u = new URL(gw.origin)
  const stalled = netConnect(Number(u.port), u.hostname, () => stalled.write('GET /big HTTP/1.1\r\nHost: a\r\n\r\n'))
  stalled.pause()
  stalled.on('error', () => {})
  t.teardown(() => stalled.destroy())
  const started = performance.now()
  t.match(await gw.outcomes.next(10_000), { ok: false, code: 'client_aborted', responseStarted: true, detail: 'no byte of the response could be sent to the client for 300 ms' })
  await upstreamGone.promise
  t.pass(`cut after ${Math.round(performance.now() - started)} ms; the upstream request was dropped`)
  await new Promise<void>((resolve) => (stalled.destroyed ? resolve() : stalled.once('close', () => resolve()).resume()))
  t.ok(stalled.destroyed, "the client's connection was closed")

  // A client that reads steadily (64 KiB every 50 ms) is not cut: each byte the kernel takes
  // re-arms the timer. The exact input of a finding: 'drain' alone came too late, and the client
  // was cut after about 1.5 s, audited as having read nothing.
  {
    const size = 64 * 1024 * 1024
    const steady = await startUpstream(t, (_req, res) => {
      res.writeHead(200, { 'content-length': String(size) })
      Readable.from((function* () {
        for (let i = 0; i < size / 65536; i++) yield Buffer.alloc(65536, 0x73)
      })()).pipe(res).on('error', () => {})
    })
    const gw3 = await startGateway(t, steady.origin, { forwarder: createForwarder({ sendTimeoutMs: 1_000 }) })
    const u3 = new URL(gw3.origin)
    const reader = netConnect(Number(u3.port), u3.hostname, () => reader.write('GET /steady HTTP/1.1\r\nHost: a\r\n\r\n'))
    reader.pause()
    reader.on('error', () => {})
    let total = 0
    const tick = setInterval(() => {
      const chunk = (reader.read(65536) ?? reader.read()) as Buffer | null
      if (chunk !== null) total += chunk.length
    }, 50)
    await new Promise((r) => setTimeout(r, 3_000))
    clearInterval(tick)
    await t.rejects(gw3.outcomes.next(1), /nothing arrived/, `still streaming after 3 s (the reader took ${total} bytes)`)
    reader.destroy()
    t.match(await gw3.outcomes.next(), { ok: false, code: 'client_aborted', detail: 'client closed the connection' })
  }

  // A client that pauses for less than the timeout, again and again, gets its whole response.
  upstreamGone = signal()
  const body = Buffer.alloc(8 * 1024 * 1024, 0x61)
  const slow = await startClosingUpstream(t, body, 'length')
  const gw2 = await startGateway(t, slow, { forwarder: createForwarder({ sendTimeoutMs: 2_000 }) })
  t.equal(await slowGet(gw2.origin, 200), body.length, 'a slow reader is not cut')
  t.match(await gw2.outcomes.next(), { ok: true, status: 200 })
})

t.test('WebSocket', async (t) => {
  t.test('echo through the tunnel; handshake headers prepared like any request', async (t) => {
    const up = await startWsUpstream(t)
    const gw = await startGateway(t, up.origin)
    const ws = wsClient(t, gw, '/ws//feed?x=1', { authorization: 'Bearer eyJ.jit.token', 'x-jit-subject': 'admin' })
    const handle = await opened(gw, ws)

    const req = await up.requests.next()
    t.equal(req.url, '/ws//feed?x=1', 'exact path, no slash collapsing')
    t.notOk('authorization' in req.headers)
    t.equal(req.headers['x-jit-subject'], 'acme')
    t.equal(req.headers['x-upstream-key'], 'k-123')
    t.equal(req.headers['x-forwarded-for'], '127.0.0.1')
    t.equal((await gw.callerHeaders.next()).authorization, 'Bearer eyJ.jit.token', 'the caller’s req.headers are given back')

    ws.send('hello')
    const [text] = (await once(ws, 'message')) as [Buffer]
    t.equal(text.toString(), 'hello')
    const big = Buffer.alloc(1024 * 1024, 7)
    ws.send(big)
    const [echoed] = (await once(ws, 'message')) as [Buffer]
    t.ok(echoed.equals(big), '1 MiB binary message echoed')

    ws.close(1000, 'bye')
    const upstreamWs = await up.sockets.next()
    const [code] = (await once(upstreamWs, 'close')) as [number]
    t.equal(code, 1000, 'the client’s close reaches the upstream')
    await handle.closed
  })

  t.test('close(1008, "grant revoked") reaches both sides and ends the tunnel', async (t) => {
    const up = await startWsUpstream(t)
    const gw = await startGateway(t, up.origin)
    const ws = wsClient(t, gw, '/ws')
    const handle = await opened(gw, ws)
    const upstreamWs = await up.sockets.next()
    const clientClose = closeOf(ws)
    const upstreamClose = closeOf(upstreamWs)

    handle.close(1008, 'grant revoked')
    handle.close(1000, 'second call is ignored')
    t.same(await clientClose, { code: 1008, reason: 'grant revoked', errors: [] })
    t.same(await upstreamClose, { code: 1008, reason: 'grant revoked', errors: [] })
    await handle.closed
  })

  t.test('close() waits for the frame in flight and cuts the reason on a character boundary', async (t) => {
    const up = await startWsUpstream(t)
    const gw = await startGateway(t, up.origin)
    const ws = wsClient(t, gw, '/ws')
    const handle = await opened(gw, ws)
    const upstreamWs = await up.sockets.next()
    const clientSocket = await gw.sockets.next()
    const received: number[] = []
    ws.on('message', (data: Buffer) => received.push(data.length))
    const clientClose = closeOf(ws)

    // The client stops reading, so a 32 MiB frame backs up in the tunnel; close() once part of it
    // has been written to the client lands in the middle of it: the close frame must wait.
    ws.pause()
    const size = 32 * 1024 * 1024
    const sentBefore = clientSocket.bytesWritten
    upstreamWs.send(Buffer.alloc(size, 1))
    while (clientSocket.bytesWritten < sentBefore + 64 * 1024) await new Promise((resolve) => setImmediate(resolve))
    handle.close(1008, 'é'.repeat(100))
    ws.resume()

    const closed = await clientClose
    t.same(closed.errors, [], 'no framing error at the client')
    t.equal(closed.code, 1008)
    t.equal(closed.reason, 'é'.repeat(61), '122 bytes: the 62nd é would have been split')
    t.same(received, [size], 'the frame in flight arrives whole before the close')
    await handle.closed
  })

  t.test('a close code that may not be sent goes out as 1008', async (t) => {
    const up = await startWsUpstream(t)
    const gw = await startGateway(t, up.origin)
    const ws = wsClient(t, gw, '/ws')
    const handle = await opened(gw, ws)
    const clientClose = closeOf(ws)
    handle.close(1006, 'abnormal is reserved')
    t.match(await clientClose, { code: 1008, reason: 'abnormal is reserved' })
  })

  t.test('a peer closing abruptly resolves closed and ends the other side', async (t) => {
    const up = await startWsUpstream(t)
    const gw = await startGateway(t, up.origin)
    const ws = wsClient(t, gw, '/ws')
    const handle = await opened(gw, ws)
    const upstreamWs = await up.sockets.next()
    const upstreamClose = closeOf(upstreamWs)
    ws.terminate()
    t.equal((await upstreamClose).code, 1006, 'upstream sees the connection drop')
    await handle.closed
  })

  t.test('upgrade refused by the upstream → ok:false, only the caller writes', async (t) => {
    const server = createServer()
    server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      socket.end('HTTP/1.1 403 Forbidden\r\ntransfer-encoding: chunked\r\n\r\n5\r\nnope!\r\n0\r\n\r\n')
    })
    const gw = await startGateway(t, await listen(t, server))
    const ws = wsClient(t, gw, '/ws')
    const [err] = (await once(ws, 'error')) as [Error]
    t.match(err.message, /Unexpected server response: 502/, 'the caller’s 502, not the upstream’s 403')
    t.match(await gw.upgrades.next(), { ok: false, code: 'upstream_unavailable', responseStarted: false, detail: /403/ })
  })

  t.test('upstream down → upstream_unavailable', async (t) => {
    const gw = await startGateway(t, await deadOrigin())
    const ws = wsClient(t, gw, '/ws')
    const [err] = (await once(ws, 'error')) as [Error]
    t.match(err.message, /Unexpected server response: 502/)
    t.match(await gw.upgrades.next(), { ok: false, code: 'upstream_unavailable', responseStarted: false, detail: /ECONNREFUSED/ })
  })

  t.test('no handshake answer → upstream_timeout within the bound', async (t) => {
    const server = createServer()
    const upstreamClosed = signal()
    server.on('upgrade', (_req: IncomingMessage, socket: Socket) => dropped(socket, upstreamClosed.resolve))
    const gw = await startGateway(t, await listen(t, server), { timeoutMs: 200 })
    const started = performance.now()
    const ws = wsClient(t, gw, '/ws')
    const [err] = (await once(ws, 'error')) as [Error]
    const elapsed = performance.now() - started
    t.match(err.message, /Unexpected server response: 504/)
    t.ok(elapsed >= 190 && elapsed < 1_000, `answered after ${Math.round(elapsed)} ms`)
    t.match(await gw.upgrades.next(), { ok: false, code: 'upstream_timeout', responseStarted: false })
    await upstreamClosed.promise
  })

  t.test('client socket destroyed during the handshake → the upstream request is dropped', async (t) => {
    const server = createServer()
    const arrived = signal()
    const upstreamClosed = signal()
    server.on('upgrade', (_req: IncomingMessage, socket: Socket) => {
      arrived.resolve()
      dropped(socket, upstreamClosed.resolve)
    })
    const gw = await startGateway(t, await listen(t, server))
    wsClient(t, gw, '/ws')
    await arrived.promise
    ;(await gw.sockets.next()).destroy() // e.g. the server shutting down
    await upstreamClosed.promise
    t.match(await gw.upgrades.next(), { ok: false, code: 'client_aborted', responseStarted: true, detail: 'client closed the connection' })
  })

  t.test('client gone silently during the handshake → the tunnel that follows closes', async (t) => {
    // The client socket is not read during the handshake, so its FIN goes unseen until the
    // upstream answers: then the tunnel must notice and close the upstream side.
    const server = createServer()
    const wss = new WebSocketServer({ noServer: true })
    const arrived = signal()
    const clientGone = signal()
    const upstreamWs = new Mailbox<WebSocket>()
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
      arrived.resolve()
      void clientGone.promise.then(() => wss.handleUpgrade(req, socket, head, (ws) => upstreamWs.put(ws)))
    })
    t.teardown(() => wss.close())
    const gw = await startGateway(t, await listen(t, server))
    const ws = wsClient(t, gw, '/ws')
    await arrived.promise
    const clientClosed = new Promise((resolve) => ws.once('close', resolve))
    ws.terminate()
    await clientClosed
    clientGone.resolve()
    const upstreamClose = closeOf(await upstreamWs.next())
    const outcome = await gw.upgrades.next()
    if (outcome.ok) await outcome.handle.closed
    t.equal((await upstreamClose).code, 1006, 'the upstream side is closed')
  })
})

t.test('FrameCursor follows frame boundaries across any chunking', async (t) => {
  const frame = (payloadLength: number, masked: boolean): Buffer => {
    const lengthBytes = payloadLength < 126 ? 0 : payloadLength < 65_536 ? 2 : 8
    const head = Buffer.alloc(2 + lengthBytes + (masked ? 4 : 0))
    head[0] = 0x82
    head[1] = (masked ? 0x80 : 0) | (lengthBytes === 0 ? payloadLength : lengthBytes === 2 ? 126 : 127)
    if (lengthBytes === 2) head.writeUInt16BE(payloadLength, 2)
    if (lengthBytes === 8) head.writeBigUInt64BE(BigInt(payloadLength), 2)
    return Buffer.concat([head, Buffer.alloc(payloadLength, 0x81)])
  }
  const frames = [frame(0, false), frame(5, true), frame(125, false), frame(126, true), frame(70_000, false), frame(3, true)]
  const stream = Buffer.concat(frames)
  const boundaries = new Set<number>([0])
  frames.reduce((at, f) => (boundaries.add(at + f.length), at + f.length), 0)

  for (const size of [1, 2, 3, 7, 13, 1000, stream.length]) {
    const cursor = new FrameCursor()
    let at = 0
    let exact = true
    while (at < stream.length) {
      const chunk = stream.subarray(at, at + size)
      cursor.advance(chunk, false)
      at += chunk.length
      if (cursor.atBoundary !== boundaries.has(at)) exact = false
    }
    t.ok(exact, `chunks of ${size}: atBoundary exactly at frame ends`)
  }

  const cursor = new FrameCursor()
  cursor.advance(stream.subarray(0, 2 + 5 + 4 + 3), false) // empty frame, masked 5-byte frame, 3 bytes into the next
  t.notOk(cursor.atBoundary)
  const rest = stream.subarray(14)
  const used = cursor.advance(rest, true)
  t.equal(14 + used, frames[0]!.length + frames[1]!.length + frames[2]!.length, 'stops at the end of the frame in flight')
  t.ok(cursor.atBoundary)
  t.equal(cursor.advance(rest.subarray(used), true), 0, 'already at a boundary: consumes nothing')
})

t.test('a closed forwarder refuses new work', async (t) => {
  const up = await startUpstream(t, (_req, res) => res.end('ok'))
  const forwarder = createForwarder()
  const gw = await startGateway(t, up.origin, { forwarder })
  const c = client(t, gw.origin)
  await (await c.request({ path: '/', method: 'GET' })).body.dump()
  await gw.outcomes.next()
  await forwarder.close()
  const res = await c.request({ path: '/', method: 'GET' })
  t.equal(res.statusCode, 502)
  await res.body.dump()
  t.match(await gw.outcomes.next(), { ok: false, code: 'upstream_unavailable', detail: 'forwarder closed' })
})

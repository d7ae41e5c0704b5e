/**
 * No request outlives its grant: a long download or a slow upload that was let through is cut
 * when the grant is revoked or ends, or the policy in force no longer allows it, as an open
 * WebSocket is closed. Real gateway, real upstream,
 * real clients.
 */
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { startTestGateway, type TestGateway } from '../helpers/gateway.js'

const POLICY = `
resources:
  - id: exports
    upstream: UPSTREAM
    match: { path_prefix: /exports }
    max_ttl: 1h
`

interface Upstream {
  readonly url: string
  /** Resolves when the upstream's side of the request at `path` has closed. */
  closed(path: string): Promise<void>
}

/** `/exports/stream`: 1 KiB every 50 ms for a minute. `/exports/slow`: answers after 3 s. `/exports/upload`: reads the body, answers at its end. */
async function startStreamingUpstream(t: Test): Promise<Upstream> {
  const closes = new Map<string, Promise<void>>()
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    closes.set(req.url ?? '', new Promise((resolve) => res.on('close', () => resolve())))
    if (req.url === '/exports/stream') {
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const timer = setInterval(() => res.write(Buffer.alloc(1024, 0x65)), 50)
      res.on('close', () => clearInterval(timer))
      return
    }
    if (req.url === '/exports/nolength') {
      // Chunked here, so no length for an HTTP/1.0 client: its response ends with the connection.
      setTimeout(() => (res.write('no '), res.end('length')), 100)
      return
    }
    if (req.url === '/exports/slow') {
      const timer = setTimeout(() => res.end('late'), 3_000)
      res.on('close', () => clearTimeout(timer))
      return
    }
    req.resume()
    req.on('end', () => res.end('stored'))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    server.closeAllConnections()
    return new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    closed: async (path) => {
      for (let i = 0; i < 100 && !closes.has(path); i++) await new Promise((r) => setTimeout(r, 20))
      await closes.get(path)
    },
  }
}

/** A raw client: sends `head` (and `body` pieces every 100 ms, if any); resolves with all it read once the gateway ends the connection. */
function rawClient(g: TestGateway, head: string, trickle?: string): { text: Promise<string>; received: () => number } {
  const u = new URL(g.dataUrl)
  let text = ''
  const socket = connect(Number(u.port), u.hostname, () => socket.write(head))
  socket.setEncoding('latin1')
  socket.on('data', (d: string) => (text += d))
  let timer: NodeJS.Timeout | undefined
  if (trickle !== undefined) timer = setInterval(() => socket.writable && socket.write(trickle), 100)
  const done = new Promise<string>((resolve) => {
    const end = () => {
      clearInterval(timer)
      resolve(text)
    }
    socket.on('close', end)
    socket.on('error', end)
  })
  setTimeout(() => socket.destroy(), 15_000).unref()
  return { text: done, received: () => text.length }
}

t.test('a download in flight is cut when its grant is revoked; the event says so', async (t) => {
  const upstream = await startStreamingUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url })
  const grant = await g.issue({ resource: 'exports', scopes: ['GET /exports/**', 'PUT /exports/**'], ttl: '10m' })
  const download = rawClient(g, `GET /exports/stream HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${grant.token}\r\n\r\n`)
  for (let i = 0; i < 100 && download.received() < 4096; i++) await new Promise((r) => setTimeout(r, 20))
  t.ok(download.received() >= 4096, 'the download is under way')
  t.equal(await g.revoke(grant.id, 'vendor offboarded'), 204)
  const text = await download.text
  t.match(text, /^HTTP\/1\.1 200 /, 'it had started')
  t.notOk(text.endsWith('0\r\n\r\n'), 'its chunked body is cut off, never ended as if whole')
  await upstream.closed('/exports/stream')
  t.pass('the upstream request was dropped')
  const ev = await g.waitForEvent((e) => e.event === 'access.allowed' && e.path === '/exports/stream', 3000)
  t.match(ev, { grant_id: grant.id, code: 'grant_revoked', status: 403, detail: 'grant revoked while the request was in flight' })
})

t.test('an upload in flight is refused when its grant is revoked, before the upstream answers', async (t) => {
  const upstream = await startStreamingUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url })
  const grant = await g.issue({ resource: 'exports', scopes: ['PUT /exports/**'], ttl: '10m' })
  const upload = rawClient(g, `PUT /exports/upload HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${grant.token}\r\nContent-Length: 100000\r\n\r\n`, 'x'.repeat(100))
  await new Promise((r) => setTimeout(r, 400))
  t.equal(await g.revoke(grant.id, 'incident'), 204)
  const revoked = Date.now()
  const text = await upload.text
  // Not left open for the rest of a body nobody will read (it waited for the keep-alive timeout).
  t.ok(Date.now() - revoked < 3_000, `the connection ended ${Date.now() - revoked} ms after the revocation`)
  t.notOk(/HTTP\/1\.1 200 /.test(text), 'the upload never completes')
  if (text !== '') t.match(text, /^HTTP\/1\.1 403 [^]*"code":"grant_revoked"/, 'answered grant_revoked while it could be')
  await upstream.closed('/exports/upload')
  const ev = await g.waitForEvent((e) => e.event === 'access.allowed' && e.path === '/exports/upload', 3000)
  t.match(ev, { grant_id: grant.id, code: 'grant_revoked', status: 403 })
})

t.test('a download in flight is cut once its grant expires', async (t) => {
  const upstream = await startStreamingUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url })
  const grant = await g.issue({ resource: 'exports', scopes: ['GET /exports/**'], ttl: '2s' })
  const started = Date.now()
  const download = rawClient(g, `GET /exports/stream HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${grant.token}\r\n\r\n`)
  const text = await download.text
  const lasted = Date.now() - started
  t.match(text, /^HTTP\/1\.1 200 /)
  t.ok(lasted >= 1_500 && lasted < 6_000, `cut ${lasted} ms after it started, once the 2 s grant ended`)
  const ev = await g.waitForEvent((e) => e.event === 'access.allowed' && e.path === '/exports/stream', 3000)
  t.match(ev, { grant_id: grant.id, code: 'grant_not_found', status: 403, detail: 'grant expired while the request was in flight' })
})

t.test('a download in flight is cut once the policy in force no longer allows it (a reload removed the entitlement)', async (t) => {
  const upstream = await startStreamingUpstream(t)
  const bound = (entitled: boolean) =>
    [
      POLICY.trim(),
      'approver_groups: [{ id: owners, members: [alice] }]',
      'approval_policies: [{ id: one, stages: [{ group: owners, approvals: 1 }], request_ttl: 1d }]',
      'subprocessors:',
      `  - { id: acme, name: ACME, contract_ends: "2099-12-31"${entitled ? ', entitlements: [{ resource: exports, approval: one, max_duration: 1h, scopes: ["GET /exports/**"] }]' : ''} }`,
      '',
    ].join('\n')
  const g = await startTestGateway(t, { policy: bound(true), upstream: upstream.url, config: 'policy: { watch: false }\n' })
  const grant = await g.issue({ subject: 'acme', resource: 'exports', scopes: ['GET /exports/**'], ttl: '10m' })
  const download = rawClient(g, `GET /exports/stream HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${grant.token}\r\n\r\n`)
  for (let i = 0; i < 100 && download.received() < 2048; i++) await new Promise((r) => setTimeout(r, 20))
  writeFileSync(join(g.policyDir, 'test.yaml'), bound(false).replaceAll('UPSTREAM', upstream.url))
  t.equal((await g.gw.reloadPolicy()).result, 'loaded')
  const text = await download.text
  t.match(text, /^HTTP\/1\.1 200 /, 'it had started')
  const ev = await g.waitForEvent((e) => e.event === 'access.allowed' && e.path === '/exports/stream', 3000)
  t.match(ev, { grant_id: grant.id, code: 'grant_not_entitled', status: 403, detail: /^no longer allowed while the request was in flight: / })
})

t.test("cutting a response under way ends the requests pipelined behind it, another grant's included, and says so", async (t) => {
  const upstream = await startStreamingUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url })
  const a = await g.issue({ resource: 'exports', scopes: ['GET /exports/**'], ttl: '10m' })
  const b = await g.issue({ resource: 'exports', scopes: ['GET /exports/**'], ttl: '10m' })
  // The exact input of a finding: B's request, queued behind A's download on one connection, kept
  // its upstream request for its whole time once A's was cut, and was audited as a 200 the client
  // never got.
  const both = rawClient(
    g,
    `GET /exports/stream HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${a.token}\r\n\r\nGET /exports/slow HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer ${b.token}\r\n\r\n`,
  )
  for (let i = 0; i < 100 && both.received() < 4096; i++) await new Promise((r) => setTimeout(r, 20))
  t.equal(await g.revoke(a.id, 'incident'), 204)
  await both.text
  const evA = await g.waitForEvent((e) => e.event === 'access.allowed' && e.grant_id === a.id, 3000)
  t.match(evA, { code: 'grant_revoked', status: 403 })
  const evB = await g.waitForEvent((e) => e.event === 'access.allowed' && e.grant_id === b.id, 3000)
  t.match(evB, { code: 'client_aborted', detail: /connection cut by the gateway/ }, "B's event says the gateway ended it")
  await upstream.closed('/exports/slow')
  t.pass("B's upstream request was dropped with it")
})

t.test('a response pipelined behind one that ends the connection is never audited as sent', async (t) => {
  const upstream = await startStreamingUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url })
  const grant = await g.issue({ resource: 'exports', scopes: ['GET /exports/**'], ttl: '10m' })
  // The exact input of a finding: HTTP/1.0 keep-alive, the first answer without a length (so it
  // ends with the connection), a second request behind it. The second was forwarded and audited
  // as a 200 the client never got.
  const auth = `Authorization: Bearer ${grant.token}\r\n`
  const both = rawClient(g, `GET /exports/nolength HTTP/1.0\r\nConnection: keep-alive\r\n${auth}\r\nGET /exports/upload HTTP/1.0\r\nConnection: keep-alive\r\n${auth}\r\n`)
  const text = await both.text
  t.equal(text.match(/HTTP\/1\.1 /g)?.length, 1, 'one answer reaches the client')
  t.match(text, /no length$/, 'the first, whole')
  const ev = await g.waitForEvent((e) => e.event === 'access.allowed' && e.path === '/exports/upload', 3000)
  t.match(ev, { code: 'client_aborted', status: 499, detail: /not forwarded|could be sent/ }, 'the second is not audited as sent')
})

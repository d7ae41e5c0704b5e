import t from 'tap'
import { createServer, type OutgoingHttpHeaders } from 'node:http'
import { connect, type AddressInfo } from 'node:net'
import {
  buildDownstreamHeaders,
  buildUpstreamHeaders,
  type ParsedHeaders,
  type UpstreamHeaderContext,
} from '../../src/forward/headers.js'

const ctx: UpstreamHeaderContext = {
  clientIp: '203.0.113.7',
  proto: 'https',
  host: 'gw.example.com',
  requestId: 'req-1',
  identity: { subject: 'acme', grantId: 'g-1' },
  inject: [['x-api-key', 'secret-key']],
  upstreamHost: '127.0.0.1:9001',
  upgrade: false,
}

/**
 * Sends `head` (request line and header lines, exactly as written) to a real server, which
 * answers with the headers `buildUpstreamHeaders` builds from the parsed request.
 */
async function upstreamHeadersFor(
  head: string[],
  context: UpstreamHeaderContext = ctx,
  body = '',
): Promise<OutgoingHttpHeaders> {
  const server = createServer((req, res) => {
    const built = buildUpstreamHeaders(req, context)
    req.resume().on('end', () => res.end(JSON.stringify(built)))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const { port } = server.address() as AddressInfo
    const socket = connect(port, '127.0.0.1')
    socket.end(`${head.join('\r\n')}\r\n\r\n${body}`)
    const chunks: Buffer[] = []
    for await (const chunk of socket) chunks.push(chunk as Buffer)
    const text = Buffer.concat(chunks).toString()
    // The last header block: an Expect: 100-continue request gets a 100 response first.
    return JSON.parse(text.slice(text.lastIndexOf('\r\n\r\n') + 4)) as OutgoingHttpHeaders
  } finally {
    server.closeAllConnections()
    server.close()
  }
}

t.test('sets the forwarding, identity, credential and Host headers', async (t) => {
  const h = await upstreamHeadersFor(['GET /x HTTP/1.1', 'Host: gw.example.com', 'Accept: text/plain', 'Connection: close'])
  t.same(h, {
    accept: 'text/plain',
    'x-api-key': 'secret-key',
    'x-forwarded-for': '203.0.113.7',
    'x-forwarded-proto': 'https',
    'x-forwarded-host': 'gw.example.com',
    'x-request-id': 'req-1',
    'x-jit-subject': 'acme',
    'x-jit-grant': 'g-1',
    host: '127.0.0.1:9001',
  })
})

t.test('removes hop-by-hop headers, the JIT token and Expect', async (t) => {
  const h = await upstreamHeadersFor(
    [
      'POST /x HTTP/1.1',
      'Host: gw.example.com',
      'Connection: close',
      'Keep-Alive: timeout=5',
      'Proxy-Connection: keep-alive',
      'Proxy-Authorization: Basic Zm9vOmJhcg==',
      'Proxy-Authenticate: Basic',
      'TE: trailers',
      'Trailer: x-checksum',
      'Transfer-Encoding: chunked',
      'Upgrade: websocket',
      'Authorization: Bearer eyJ.the.token',
      'Expect: 100-continue',
      'Content-Type: text/plain',
    ],
    ctx,
    '3\r\nabc\r\n0\r\n\r\n',
  )
  for (const name of [
    'connection',
    'keep-alive',
    'proxy-connection',
    'proxy-authorization',
    'proxy-authenticate',
    'te',
    'trailer',
    'transfer-encoding',
    'upgrade',
    'authorization',
    'expect',
  ]) {
    t.notOk(name in h, `${name} removed`)
  }
  t.equal(h['content-type'], 'text/plain', 'end-to-end headers kept')
})

t.test('removes the headers the Connection header names, never the gateway’s own', async (t) => {
  const h = await upstreamHeadersFor([
    'GET /x HTTP/1.1',
    'Host: gw.example.com',
    'Connection: keep-alive, X-Hop-One ,x-hop-two,, Host, X-Request-Id, X-Forwarded-For, X-Jit-Subject, X-API-Key',
    'X-Hop-One: 1',
    'X-Hop-Two: 2',
    'X-Kept: yes',
  ])
  t.notOk('x-hop-one' in h)
  t.notOk('x-hop-two' in h)
  t.equal(h['x-kept'], 'yes')
  t.equal(h.host, '127.0.0.1:9001')
  t.equal(h['x-request-id'], 'req-1')
  t.equal(h['x-forwarded-for'], '203.0.113.7')
  t.equal(h['x-jit-subject'], 'acme')
  t.equal(h['x-api-key'], 'secret-key', 'an injected credential survives its name in Connection')
})

t.test('replaces every client-sent forwarding and identity header', async (t) => {
  const h = await upstreamHeadersFor([
    'GET /x HTTP/1.1',
    'Host: evil.example',
    'X-Forwarded-For: 10.0.0.1',
    'X-Forwarded-For: 10.0.0.2',
    'X-Forwarded-Proto: http',
    'X-Forwarded-Host: evil.example',
    'X-Forwarded-Port: 1',
    'X-Forwarded-Prefix: /admin',
    'Forwarded: for=10.0.0.1',
    'X-Real-IP: 10.0.0.1',
    'X-Request-Id: forged',
    'X-Jit-Subject: admin',
    'X-Jit-Grant: forged',
    'X-Jit-Scopes: *',
    'X-API-Key: forged',
  ])
  t.same(
    Object.keys(h).sort(),
    [
      'host',
      'x-api-key',
      'x-forwarded-for',
      'x-forwarded-host',
      'x-forwarded-proto',
      'x-jit-grant',
      'x-jit-subject',
      'x-request-id',
    ],
    'no client forwarding header survives',
  )
  t.equal(h['x-forwarded-for'], '203.0.113.7', 'replaced, not appended to')
  t.equal(h['x-forwarded-host'], 'gw.example.com', 'the Host the gateway was given')
  t.equal(h['x-jit-subject'], 'acme')
  t.equal(h['x-api-key'], 'secret-key', 'an injected credential replaces the client header of that name')
})

t.test('underscore spellings of the gateway’s headers are dropped too (CGI/WSGI read them as the same header)', async (t) => {
  // The exact inputs of a finding: a WSGI upstream saw HTTP_X_JIT_SUBJECT="admin,acme".
  const h = await upstreamHeadersFor([
    'GET /x HTTP/1.1',
    'Host: gw.example.com',
    'X_Jit_Subject: admin',
    'X_Forwarded_For: 6.6.6.6',
    'x_forwarded-proto: http',
    'X_Real_IP: 6.6.6.6',
    'X_Request_Id: forged',
    'X_API_Key: forged',
    'Proxy_Authorization: Basic Zm9yZ2Vk',
    'Authori_zation: harmless-but-odd',
    'X_Custom_Header: kept',
  ])
  t.same(
    Object.keys(h).sort(),
    ['authori_zation', 'host', 'x-api-key', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-jit-grant', 'x-jit-subject', 'x-request-id', 'x_custom_header'],
    'only the gateway’s own spellings remain, and unrelated underscore headers pass',
  )
  t.equal(h['x-jit-subject'], 'acme')
  t.equal(h['x-api-key'], 'secret-key')
})

t.test('other spellings CGI servers merge (`.`, `~`, `!`) are judged the same way', async (t) => {
  const h = await upstreamHeadersFor([
    'GET /x HTTP/1.1',
    'Host: gw.example.com',
    'X.Jit.Subject: admin',
    'X~Forwarded~For: 6.6.6.6',
    'X.API.Key: forged',
    'X!Custom.Header: kept',
  ])
  t.same(
    Object.keys(h).sort(),
    ['host', 'x!custom.header', 'x-api-key', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-jit-grant', 'x-jit-subject', 'x-request-id'],
  )
  t.equal(h['x-jit-subject'], 'acme')
  t.equal(h.host, '127.0.0.1:9001')
})

t.test('a credential configured with `_` in its name: every client spelling of it is dropped', async (t) => {
  // The exact input of a finding: `header: X_Upstream_Token` let the client's `X-Upstream-Token` through.
  const h = await upstreamHeadersFor(
    ['GET /x HTTP/1.1', 'Host: gw.example.com', 'X-Upstream-Token: forged', 'X.Upstream.Token: forged', 'x_upstream_token: forged'],
    { ...ctx, inject: [['x_upstream_token', 'real-secret']] },
  )
  t.same(Object.keys(h).filter((n) => n.includes('upstream')), ['x_upstream_token'])
  t.equal(h.x_upstream_token, 'real-secret')
})

t.test('headers that reroute or redispatch a request behind the scope check are dropped', async (t) => {
  const h = await upstreamHeadersFor([
    'GET /x HTTP/1.1',
    'Host: gw.example.com',
    'X-Original-URL: /admin',
    'X-Original-URI: /admin',
    'X-Rewrite-URL: /admin',
    'X-HTTP-Method-Override: DELETE',
    'X-HTTP-Method: DELETE',
    'X-Method-Override: DELETE',
    'True-Client-IP: 6.6.6.6',
    'X-Client-IP: 6.6.6.6',
    'X-Cluster-Client-IP: 6.6.6.6',
    'CF-Connecting-IP: 6.6.6.6',
    'Fastly-Client-IP: 6.6.6.6',
    // The exact inputs of a finding: each reached the upstream unchanged.
    'X-Forwarded: for=6.6.6.6',
    'Forwarded-For: 6.6.6.6',
    'X-Original-Forwarded-For: 6.6.6.6',
    'Client-IP: 6.6.6.6',
    'X-Originating-IP: 6.6.6.6',
    'X-Remote-IP: 6.6.6.6',
    'X-Remote-Addr: 6.6.6.6',
    'X-ProxyUser-Ip: 6.6.6.6',
    'X-Host: evil.example',
    'X-HTTP-Host-Override: evil.example',
    'X-Original-Host: evil.example',
    'Front-End-Https: on',
    'X-Url-Scheme: https',
    'X-Scheme: https',
    'X-Envoy-Original-Path: /admin',
    'X-Override-URL: /admin',
    'X-Original-Method: DELETE',
    'Remote-User: admin',
    'X-Remote-User: admin',
    'X-Auth-Request-User: admin',
    'X-Auth-Request-Email: admin@example.com',
    'X-Middleware-Subrequest: middleware',
    'X_Auth_Request_User: admin',
  ])
  t.same(Object.keys(h).sort(), ['host', 'x-api-key', 'x-forwarded-for', 'x-forwarded-host', 'x-forwarded-proto', 'x-jit-grant', 'x-jit-subject', 'x-request-id'])
})

t.test('the gateway’s headers win over a credential of the same name', async (t) => {
  const h = await upstreamHeadersFor(['GET /x HTTP/1.1', 'Host: gw.example.com'], {
    ...ctx,
    inject: [
      ['x-jit-subject', 'someone-else'],
      ['authorization', 'Basic dXBzdHJlYW06cHc='],
    ],
  })
  t.equal(h['x-jit-subject'], 'acme')
  t.equal(h.authorization, 'Basic dXBzdHJlYW06cHc=', 'an injected Authorization is the upstream’s own credential')
})

t.test('keeps repeated header lines', async (t) => {
  const h = await upstreamHeadersFor([
    'GET /x HTTP/1.1',
    'Host: gw.example.com',
    'Cookie: a=1',
    'Cookie: b=2',
    'Accept: text/html',
    'Accept: application/json',
    'X-Multi: one',
    'X-Multi: two',
  ])
  t.equal(h.cookie, 'a=1; b=2', 'cookie lines joined as RFC 6265 §5.4 asks')
  t.equal(h.accept, 'text/html, application/json')
  t.equal(h['x-multi'], 'one, two')
})

t.test('keeps the WebSocket handshake headers for an upgrade', async (t) => {
  const head = [
    'GET /ws HTTP/1.1',
    'Host: gw.example.com',
    'Connection: keep-alive, Upgrade',
    'Upgrade: websocket',
    'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==',
    'Sec-WebSocket-Version: 13',
    'Sec-WebSocket-Protocol: chat',
  ]
  const upgraded = await upstreamHeadersFor(head, { ...ctx, upgrade: true })
  t.equal(upgraded.connection, 'upgrade')
  t.equal(upgraded.upgrade, 'websocket')
  t.equal(upgraded['sec-websocket-key'], 'dGhlIHNhbXBsZSBub25jZQ==')
  t.equal(upgraded['sec-websocket-version'], '13')
  t.equal(upgraded['sec-websocket-protocol'], 'chat')

  const plain = await upstreamHeadersFor(head, ctx)
  t.notOk('connection' in plain, 'a plain request never carries Connection')
  t.notOk('upgrade' in plain)
})

t.test('response headers: hop-by-hop and Connection-named removed, set-cookie lines kept', async (t) => {
  const upstream: ParsedHeaders = {
    connection: 'keep-alive, X-Hop',
    'keep-alive': 'timeout=5',
    'transfer-encoding': 'chunked',
    trailer: 'x-sum',
    upgrade: 'h2c',
    'proxy-authenticate': 'Basic',
    'x-hop': '1',
    'content-type': 'text/plain',
    'set-cookie': ['a=1', 'b=2', 'c=3'],
  }
  t.same(buildDownstreamHeaders(upstream), { 'content-type': 'text/plain', 'set-cookie': ['a=1', 'b=2', 'c=3'] })
  t.same(
    buildDownstreamHeaders({ connection: ['close', 'x-a'], 'x-a': '1', etag: '"e"' }),
    { etag: '"e"' },
    'repeated Connection lines',
  )
})

import t, { type Test } from 'tap'
import { compileRoutes, type ResourceRoute, type RouteTable } from '../../src/policy/routes.js'

function table(routes: readonly ResourceRoute[]): RouteTable {
  const compiled = compileRoutes(routes)
  if (compiled.errors.length > 0) throw new Error(compiled.errors.join('\n'))
  return compiled.table
}

/** Checks [host, path, expected id] rows against one table. */
function check(t: Test, routes: RouteTable, rows: [string | undefined, string, string | undefined][]): void {
  for (const [host, path, id] of rows) t.equal(routes.match(host, path), id, `${host ?? '(no host)'} ${path}`)
}

t.test('path prefixes match at segment boundaries', async (t) => {
  const routes = table([
    { id: 'crm', pathPrefix: '/crm' },
    { id: 'crm-admin', pathPrefix: '/crm/admin' },
    { id: 'deep', pathPrefix: '/a/b/c/d' },
  ])
  check(t, routes, [
    [undefined, '/crm', 'crm'],
    [undefined, '/crm/', 'crm'],
    [undefined, '/crm/x', 'crm'],
    [undefined, '/crm/x/y/', 'crm'],
    [undefined, '/crmx', undefined],
    [undefined, '/crm;x', undefined],
    [undefined, '/CRM', undefined],
    [undefined, '/', undefined],
    [undefined, '/other', undefined],
    // longest prefix wins
    [undefined, '/crm/admin', 'crm-admin'],
    [undefined, '/crm/admin/', 'crm-admin'],
    [undefined, '/crm/admin/users/1', 'crm-admin'],
    [undefined, '/crm/adminx', 'crm'],
    [undefined, '/crm/x/admin', 'crm'],
    [undefined, '/a/b/c/d', 'deep'],
    [undefined, '/a/b/c/d/e/f', 'deep'],
    [undefined, '/a/b/c', undefined],
    [undefined, '/a/b/c/de', undefined],
    // the host does not matter for host-less routes
    ['anything.example.com', '/crm/x', 'crm'],
    ['bad host:x', '/crm/x', 'crm'],
    // not a normalised path: never a match
    [undefined, 'crm', undefined],
    [undefined, '', undefined],
  ])
})

t.test('prefix / matches every path', async (t) => {
  const routes = table([
    { id: 'root', pathPrefix: '/' },
    { id: 'api', pathPrefix: '/api' },
  ])
  check(t, routes, [
    [undefined, '/', 'root'],
    [undefined, '/x', 'root'],
    [undefined, '/x/y/', 'root'],
    [undefined, '/apix', 'root'],
    [undefined, '/api', 'api'],
    [undefined, '/api/v1', 'api'],
  ])
})

t.test('host precedence', async (t) => {
  const routes = table([
    { id: 'api-host', host: 'api.example.com' },
    { id: 'api-v2', host: 'api.example.com', pathPrefix: '/v2' },
    { id: 'admin-host', host: 'admin.example.com', pathPrefix: '/console' },
    { id: 'crm', pathPrefix: '/crm' },
    { id: 'fallback', pathPrefix: '/' },
  ])
  check(t, routes, [
    // a host-only route takes every path on its host, even where a host-less prefix is longer
    ['api.example.com', '/', 'api-host'],
    ['api.example.com', '/crm/x', 'api-host'],
    // host + prefix beats host only
    ['api.example.com', '/v2', 'api-v2'],
    ['api.example.com', '/v2/items', 'api-v2'],
    ['api.example.com', '/v2x', 'api-host'],
    // a host whose routes do not cover the path falls back to host-less routes
    ['admin.example.com', '/console/x', 'admin-host'],
    ['admin.example.com', '/crm/x', 'crm'],
    ['admin.example.com', '/x', 'fallback'],
    // unknown or missing host: host-less routes only
    ['other.example.com', '/v2', 'fallback'],
    ['other.example.com', '/crm', 'crm'],
    [undefined, '/v2', 'fallback'],
    [undefined, '/console/x', 'fallback'],
  ])
})

t.test('request host: case, port, trailing dot, IPv6', async (t) => {
  const routes = table([
    { id: 'api', host: 'API.Example.COM' },
    { id: 'dotted', host: 'dotted.example.com.' },
    { id: 'v4', host: '127.0.0.1' },
    { id: 'v6', host: '[::1]' },
    { id: 'v6-long', host: '[2001:DB8:0:0:0:0:0:1]' },
  ])
  check(t, routes, [
    ['api.example.com', '/x', 'api'],
    ['API.EXAMPLE.COM', '/x', 'api'],
    ['api.example.com:8080', '/x', 'api'],
    ['api.example.com:', '/x', 'api'], // RFC 3986 §3.2.3: the port may be empty
    ['api.example.com.', '/x', 'api'],
    ['api.example.com.:443', '/x', 'api'],
    ['dotted.example.com', '/x', 'dotted'],
    ['dotted.example.com.', '/x', 'dotted'],
    ['127.0.0.1', '/x', 'v4'],
    ['127.0.0.1:8080', '/x', 'v4'],
    ['[::1]', '/x', 'v6'],
    ['[::1]:8080', '/x', 'v6'],
    ['[2001:db8::1]', '/x', 'v6-long'], // route hosts are rewritten to RFC 5952 form
    ['[2001:DB8::1]:443', '/x', 'v6-long'],
    // malformed hosts match no host route
    ['api.example.com:80a', '/x', undefined],
    ['api.example.com:80:80', '/x', undefined],
    ['api.example.com..', '/x', undefined],
    ['api.example.com x', '/x', undefined],
    ['api.example.co\u1e3f', '/x', undefined],
    ['\u212aapi.example.com', '/x', undefined], // KELVIN SIGN lowercases to "k": not ASCII, no match
    ['::1', '/x', undefined],
    ['[::1', '/x', undefined],
    ['[::1]x', '/x', undefined],
    ['[::1]:x', '/x', undefined],
    ['', '/x', undefined],
    [':8080', '/x', undefined],
    ['.', '/x', undefined],
    [undefined, '/x', undefined],
  ])
})

t.test('route errors are all reported', async (t) => {
  const compiled = compileRoutes([
    { id: 'ok', pathPrefix: '/ok' },
    { id: 'neither' },
    { id: '', pathPrefix: '/empty-id' },
    { id: 'relative', pathPrefix: 'crm' },
    { id: 'trailing', pathPrefix: '/crm/' },
    { id: 'dots', pathPrefix: '/a/../b' },
    { id: 'double', pathPrefix: '/a//b' },
    { id: 'escape', pathPrefix: '/%7euser' },
    { id: 'encoded-slash', pathPrefix: '/a%2Fb' },
    { id: 'port', host: 'api.example.com:8080' },
    { id: 'bare-v6', host: '::1' },
    { id: 'v6-port', host: '[::1]:8080' },
    { id: 'v6-zone', host: '[fe80::1%eth0]' },
    { id: 'not-v6', host: '[example.com]' },
    { id: 'wildcard', host: '*.example.com' },
    { id: 'underscore', host: 'my_host.example.com' },
    { id: 'unicode', host: 'bücher.example' },
    { id: 'long-label', host: 'a'.repeat(64) + '.example.com' },
    { id: 'hyphen', host: '-api.example.com' },
    { id: 'empty-host', host: '' },
    { id: 'dup', pathPrefix: '/ok' },
  ])
  t.strictSame(compiled.errors, [
    'routes[1] (id "neither"): a route needs a host, a pathPrefix, or both',
    'routes[2] (id ""): id must be a non-empty string',
    'routes[3] (id "relative"): pathPrefix "crm" cannot be normalised: not an origin-form path (must start with "/")',
    'routes[4] (id "trailing"): pathPrefix "/crm/" must not end with "/": prefixes match at segment boundaries, so "/crm" already covers it',
    'routes[5] (id "dots"): pathPrefix "/a/../b" is not in normalised form (it is compared with normalised paths): write "/b"',
    'routes[6] (id "double"): pathPrefix "/a//b" is not in normalised form (it is compared with normalised paths): write "/a/b"',
    'routes[7] (id "escape"): pathPrefix "/%7euser" is not in normalised form (it is compared with normalised paths): write "/~user"',
    'routes[8] (id "encoded-slash"): pathPrefix "/a%2Fb" cannot be normalised: encoded "/" (%2F)',
    'routes[9] (id "port"): host "api.example.com:8080" must not include a port (ports are ignored when matching; write IPv6 literals in brackets)',
    'routes[10] (id "bare-v6"): host "::1" must not include a port (ports are ignored when matching; write IPv6 literals in brackets)',
    'routes[11] (id "v6-port"): host "[::1]:8080" is not a bracketed IPv6 literal without zone (and must not carry a port)',
    'routes[12] (id "v6-zone"): host "[fe80::1%eth0]" is not a bracketed IPv6 literal without zone (and must not carry a port)',
    'routes[13] (id "not-v6"): host "[example.com]" is not a bracketed IPv6 literal without zone (and must not carry a port)',
    'routes[14] (id "wildcard"): host "*.example.com": wildcard hosts are not supported',
    'routes[15] (id "underscore"): host "my_host.example.com" is not a valid host name (ASCII letters, digits, "-" and "."; internationalised names in A-label form, "xn--…")',
    'routes[16] (id "unicode"): host "bücher.example" is not a valid host name (ASCII letters, digits, "-" and "."; internationalised names in A-label form, "xn--…")',
    `routes[17] (id "long-label"): host "${'a'.repeat(64)}.example.com" is not a valid host name (ASCII letters, digits, "-" and "."; internationalised names in A-label form, "xn--…")`,
    'routes[18] (id "hyphen"): host "-api.example.com" is not a valid host name (ASCII letters, digits, "-" and "."; internationalised names in A-label form, "xn--…")',
    'routes[19] (id "empty-host"): host "" is not a valid host name (ASCII letters, digits, "-" and "."; internationalised names in A-label form, "xn--…")',
    'routes[20] (id "dup"): same host and pathPrefix as routes[0] (id "ok"): any host /ok',
  ])
  t.equal(compiled.table.match(undefined, '/ok/x'), 'ok', 'the valid routes still form a table')
})

t.test('conflicts are found after canonicalisation', async (t) => {
  const compiled = compileRoutes([
    { id: 'a', host: 'api.example.com' },
    { id: 'b', host: 'API.example.com.', pathPrefix: '/' },
    { id: 'c', host: 'api.example.com', pathPrefix: '/v1' },
    { id: 'd', host: 'Api.Example.Com', pathPrefix: '/v1' },
    { id: 'e', host: '[::1]' },
    { id: 'f', host: '[0:0::1]' },
    { id: 'g', pathPrefix: '/v1' }, // another host: no conflict
    { id: 'h', host: 'other.example.com', pathPrefix: '/v1' }, // ditto
  ])
  t.strictSame(compiled.errors, [
    'routes[1] (id "b"): same host and pathPrefix as routes[0] (id "a"): api.example.com /',
    'routes[3] (id "d"): same host and pathPrefix as routes[2] (id "c"): api.example.com /v1',
    'routes[5] (id "f"): same host and pathPrefix as routes[4] (id "e"): [::1] /',
  ])
})

t.test('several routes may serve one resource', async (t) => {
  const routes = table([
    { id: 'crm', pathPrefix: '/crm' },
    { id: 'crm', host: 'crm.example.com' },
  ])
  check(t, routes, [
    [undefined, '/crm/x', 'crm'],
    ['crm.example.com', '/x', 'crm'],
    ['other.example.com', '/x', undefined],
  ])
})

t.test('no routes: nothing matches', async (t) => {
  const compiled = compileRoutes([])
  t.strictSame(compiled.errors, [])
  t.equal(compiled.table.match('a.example.com', '/'), undefined)
})

t.test('10,000 routes compile quickly and look up correctly', async (t) => {
  const routes: ResourceRoute[] = []
  for (let i = 0; i < 10_000; i++) {
    if (i % 4 === 0) routes.push({ id: `host-${i}`, host: `svc${i}.example.com` })
    else if (i % 4 === 1) routes.push({ id: `hostpath-${i}`, host: `svc${i - 1}.example.com`, pathPrefix: `/p${i}/v1` })
    else routes.push({ id: `path-${i}`, pathPrefix: `/team${i % 97}/svc${i}` })
  }
  const started = process.hrtime.bigint()
  const compiled = compileRoutes(routes)
  const compileMs = Number(process.hrtime.bigint() - started) / 1e6
  t.strictSame(compiled.errors, [])
  t.ok(compileMs < 1_000, `compiled in ${compileMs.toFixed(1)} ms`)

  const routesTable = compiled.table
  let wrong = 0
  for (let i = 0; i < 10_000; i++) {
    const route = routes[i] as ResourceRoute
    const host = route.host === undefined ? 'unrelated.example.com' : `${route.host.toUpperCase()}:443`
    const prefix = route.pathPrefix ?? ''
    for (const path of [prefix || '/', `${prefix}/`, `${prefix}/x/y`]) {
      if (routesTable.match(host, path) !== route.id) wrong++
    }
    if (route.pathPrefix !== undefined && routesTable.match(host, `${route.pathPrefix}x`) === route.id) wrong++
  }
  t.equal(wrong, 0, 'every route is found by its own host and prefix, and not past a segment boundary')
  t.equal(routesTable.match('svc0.example.com', '/p1/v1/items'), 'hostpath-1')
  t.equal(routesTable.match('svc0.example.com', '/p5/v1/items'), 'host-0', 'another host’s prefix does not apply')
  t.equal(routesTable.match(undefined, '/team2/svc2/x'), 'path-2')
  t.equal(routesTable.match(undefined, '/team2/svc3/x'), undefined)

  const lookups = 200_000
  const deepPath = '/team5/svc5/' + 'seg/'.repeat(50)
  const t0 = process.hrtime.bigint()
  for (let k = 0; k < lookups; k++) routesTable.match('svc4.example.com', deepPath)
  const perLookupUs = Number(process.hrtime.bigint() - t0) / 1e3 / lookups
  t.ok(perLookupUs < 20, `lookup cost independent of the route count (${perLookupUs.toFixed(2)} µs each)`)
})

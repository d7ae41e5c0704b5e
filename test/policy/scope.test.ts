import t from 'tap'
import { compileScopes, parseScope, type CompiledScope } from '../../src/policy/scope.js'
import { normalizePath } from '../../src/policy/path.js'

function compile(text: string): CompiledScope {
  const parsed = parseScope(text)
  if (!parsed.ok) throw new Error(`${text}: ${parsed.error}`)
  return parsed.scope
}

t.test('parse: methods', async (t) => {
  const cases: [string, string[] | '*'][] = [
    ['GET /a', ['GET', 'HEAD']],
    ['POST /a', ['POST']],
    ['HEAD /a', ['HEAD']],
    ['GET,POST /a', ['GET', 'POST', 'HEAD']],
    ['GET,HEAD /a', ['GET', 'HEAD']],
    ['PUT,PATCH,DELETE /a', ['PUT', 'PATCH', 'DELETE']],
    ['PROPFIND,MKCOL /dav/**', ['PROPFIND', 'MKCOL']],
    ['* /a', '*'],
  ]
  for (const [text, methods] of cases) {
    const scope = compile(text)
    t.strictSame(scope.methods === '*' ? '*' : [...scope.methods], methods, text)
    t.equal(scope.source, text)
  }
})

t.test('parse: whitespace around and between the parts', async (t) => {
  for (const text of ['GET /a', '  GET /a  ', 'GET   /a', 'GET\t/a', '\tGET \t /a\n']) {
    const scope = compile(text)
    t.ok(scope.matches('GET', '/a'), JSON.stringify(text))
    t.equal(scope.source, text)
  }
})

t.test('parse: errors', async (t) => {
  const cases: [string, RegExp][] = [
    ['', /expected "METHODS PATH"/],
    ['   ', /expected "METHODS PATH"/],
    ['GET', /expected "METHODS PATH"/],
    ['/a', /expected "METHODS PATH"/],
    ['GET /a /b', /expected "METHODS PATH"/],
    ['GET, POST /a', /expected "METHODS PATH"/],
    ['GTE /a', /unknown method "GTE"/],
    ['FETCH /a', /unknown method "FETCH"/],
    ['M-SEARCH /a', /unknown method "M-SEARCH"/],
    ['get /a', /method "get" must be uppercase.*RFC 9110 §9\.1.*"GET"/],
    ['Get /a', /method "Get" must be uppercase/],
    ['GET,post /a', /method "post" must be uppercase/],
    ['GET, /a', /empty method in "GET,"/],
    [',GET /a', /empty method/],
    ['GET,,POST /a', /empty method/],
    ['GET,* /a', /"\*" means any method and must stand alone/],
    ['*,GET /a', /must stand alone/],
    ['** /a', /must stand alone/],
    ['GE* /a', /must stand alone/],
    ['GET,GET /a', /method "GET" is listed twice/],
    ['G@T /a', /method "G@T" is not an HTTP method token \(RFC 9110 §5\.6\.2\)/],
    ['GET() /a', /not an HTTP method token/],
    ['GÉT /a', /not an HTTP method token/],
    ['GET a', /path "a" must start with "\/"/],
    ['GET *', /must start with "\/"/],
    ['GET http://example.com/a', /must start with "\/"/],
    ['GET /a/*.json', /segment "\*\.json".*partial wildcards.*not supported/],
    ['GET /a*', /segment "a\*".*not supported/],
    ['GET /a/b*c', /segment "b\*c"/],
    ['GET /a/***', /segment "\*\*\*"/],
    ['GET /a/**/**', /"\*\*" twice in a row/],
    ['GET /**/**/a', /"\*\*" twice in a row/],
    ['GET /a//b', /not in normalised form.*write "\/a\/b"/],
    ['GET /a/./b', /not in normalised form.*write "\/a\/b"/],
    ['GET /a/../b', /not in normalised form.*write "\/b"/],
    ['GET /a/*/..', /not in normalised form/],
    ['GET /a/%2e', /not in normalised form/],
    ['GET /a/%7e', /not in normalised form.*write "\/a\/~"/],
    ['GET /a/%c3%a9', /not in normalised form.*write "\/a\/%C3%A9"/],
    ['GET /a/{id}', /not in normalised form.*write "\/a\/%7Bid%7D"/],
    ['GET /..', /cannot be normalised: "\.\." climbs above the root/],
    ['GET /a%2Fb', /cannot be normalised: encoded "\/"/],
    ['GET /a\\b', /cannot be normalised: backslash/],
    ['GET /a?x=1', /cannot be normalised: query delimiter/],
    ['GET /a#b', /cannot be normalised: fragment/],
    ['GET /%C0%AF', /cannot be normalised: percent-escapes are not valid UTF-8/],
  ]
  for (const [text, error] of cases) {
    const parsed = parseScope(text)
    t.equal(parsed.ok, false, JSON.stringify(text))
    if (!parsed.ok) t.match(parsed.error, error, JSON.stringify(text))
  }
})

/** [pattern, path, expected] (method GET) */
const pathCases: [string, string, boolean][] = [
  // literal
  ['/', '/', true],
  ['/', '/a', false],
  ['/a/b', '/a/b', true],
  ['/a/b', '/a/b/', false],
  ['/a/b', '/a', false],
  ['/a/b', '/a/bc', false],
  ['/a/b', '/A/B', false],
  ['/a/b/', '/a/b/', true],
  ['/a/b/', '/a/b', false],
  ['/a;v=1', '/a;v=1', true],
  ['/a;v=1', '/a', false],
  ['/%C3%A9', '/%C3%A9', true],
  // * : exactly one non-empty segment
  ['/crm/customers/*', '/crm/customers/42', true],
  ['/crm/customers/*', '/crm/customers/42;x=1', true],
  ['/crm/customers/*', '/crm/customers', false],
  ['/crm/customers/*', '/crm/customers/', false],
  ['/crm/customers/*', '/crm/customers/42/', false],
  ['/crm/customers/*', '/crm/customers/42/notes', false],
  ['/crm/customers/*', '/crm/customersX/42', false],
  ['/crm/customers/*', '/crm/admin', false],
  ['/crm/customers/*', '/crm/admin/42', false],
  ['/*', '/a', true],
  ['/*', '/', false],
  ['/*', '/a/', false],
  ['/*', '/a/b', false],
  ['/*/', '/a/', true],
  ['/*/', '/a', false],
  ['/a/*/c', '/a/b/c', true],
  ['/a/*/c', '/a/c', false],
  ['/a/*/c', '/a/b/b/c', false],
  ['/*/*', '/a/b', true],
  ['/*/*', '/a', false],
  // ** at the end
  ['/crm/tickets/**', '/crm/tickets', true],
  ['/crm/tickets/**', '/crm/tickets/', true],
  ['/crm/tickets/**', '/crm/tickets/1', true],
  ['/crm/tickets/**', '/crm/tickets/1/comments/2/', true],
  ['/crm/tickets/**', '/crm/ticketsX', false],
  ['/crm/tickets/**', '/crm/ticketsX/1', false],
  ['/crm/tickets/**', '/crm', false],
  ['/crm/tickets/**', '/crm/', false],
  ['/crm/tickets/**', '/', false],
  ['/**', '/', true],
  ['/**', '/a', true],
  ['/**', '/a/b/c/', true],
  // ** at the start
  ['/**/x', '/x', true],
  ['/**/x', '/a/x', true],
  ['/**/x', '/a/b/c/x', true],
  ['/**/x', '/x/x', true],
  ['/**/x', '/x/', false],
  ['/**/x', '/a/xy', false],
  ['/**/x', '/', false],
  ['/**/', '/', true],
  ['/**/', '/a/b/', true],
  ['/**/', '/a/b', false],
  // ** in the middle
  ['/a/**/b', '/a/b', true],
  ['/a/**/b', '/a/x/b', true],
  ['/a/**/b', '/a/x/y/z/b', true],
  ['/a/**/b', '/a/b/b', true],
  ['/a/**/b', '/a/b/c', false],
  ['/a/**/b', '/a/b/', false],
  ['/a/**/b', '/b', false],
  ['/a/**/b', '/x/a/b', false],
  ['/a/**/b/*', '/a/b/c', true],
  ['/a/**/b/*', '/a/x/b/c', true],
  ['/a/**/b/*', '/a/b/b/c', true],
  ['/a/**/b/*', '/a/b', false],
  ['/a/**/b/*', '/a/x/b/', false],
  ['/a/**/b/*', '/a/x/b/c/d', false],
  ['/a/**/*/c', '/a/b/c', true],
  ['/a/**/*/c', '/a/c', false],
  // several **
  ['/**/a/**/b', '/a/b', true],
  ['/**/a/**/b', '/x/a/y/z/b', true],
  ['/**/a/**/b', '/a/a/b/b', true],
  ['/**/a/**/b', '/b/a', false],
  ['/**/a/**/b', '/a/b/c', false],
  ['/**/a/*/**', '/a/b', true],
  ['/**/a/*/**', '/x/a/b/c/d', true],
  ['/**/a/*/**', '/x/a', false],
  ['/**/a/*/**', '/x/a/', false],
]

t.test('path matching', async (t) => {
  for (const [pattern, path, expected] of pathCases) {
    t.equal(compile(`GET ${pattern}`).matches('GET', path), expected, `${pattern} vs ${path}`)
  }
})

t.test('method matching', async (t) => {
  const cases: [string, string, boolean][] = [
    ['GET /a', 'GET', true],
    ['GET /a', 'HEAD', true], // HEAD is allowed wherever GET is
    ['GET /a', 'POST', false],
    ['GET /a', 'get', false], // methods are case-sensitive (RFC 9110 §9.1)
    ['GET /a', 'OPTIONS', false],
    ['HEAD /a', 'HEAD', true],
    ['HEAD /a', 'GET', false], // ... but HEAD does not imply GET
    ['POST /a', 'HEAD', false],
    ['POST,PUT /a', 'PUT', true],
    ['POST,PUT /a', 'GET', false],
    ['POST,PUT /a', 'HEAD', false],
    ['* /a', 'GET', true],
    ['* /a', 'DELETE', true],
    ['* /a', 'M-SEARCH', true],
    ['* /a', 'CONNECT', true],
  ]
  for (const [text, method, expected] of cases) {
    t.equal(compile(text).matches(method, '/a'), expected, `${text} with ${method}`)
  }
  t.equal(compile('* /a').matches('GET', '/b'), false, 'any method, but still the path')
})

t.test('a path that is not normalised never matches', async (t) => {
  const scope = compile('* /**')
  t.equal(scope.matches('GET', ''), false)
  t.equal(scope.matches('GET', 'a/b'), false)
  t.equal(scope.matches('GET', 'http://x/a'), false)
})

t.test('/crm/customers/* cannot be escaped into /crm/admin', async (t) => {
  const scopes = [compile('GET /crm/customers/*'), compile('GET /crm/customers/**')]
  const attacks = [
    '/crm/customers/../admin',
    '/crm/customers/../../crm/admin',
    '/crm/customers/%2e%2e/admin',
    '/crm/customers/%2E%2e/admin',
    '/crm/customers/.%2e/admin',
    '/crm/customers/%2e./admin',
    '/crm/customers/..%2fadmin',
    '/crm/customers/..%2Fadmin',
    '/crm/customers/%2e%2e%2fadmin',
    '/crm/customers/..%5cadmin',
    '/crm/customers/..\\admin',
    '/crm/customers/..;/admin',
    '/crm/customers/..;x/admin',
    '/crm/customers/.;/../admin',
    '/crm/customers/%2e%2e;/admin',
    '/crm/customers/..%3B/admin',
    '/crm/customers/%c0%ae%c0%ae/admin',
    '/crm/customers/%C0%AE%C0%AE%C0%AFadmin',
    '/crm/customers/%00/../admin',
    '/crm/customers/x#/../../admin',
    '/crm/customers/x?/../../admin',
    '/crm/customers/./../admin',
    '/crm/customers//../admin',
    '/crm/customers/1/../../admin',
    '/crm/customers/1/%2e%2e/%2e%2e/admin',
  ]
  for (const attack of attacks) {
    const n = normalizePath(attack)
    if (!n.ok) {
      t.pass(`${attack}: rejected (${n.reason})`)
      continue
    }
    t.notOk(n.path.startsWith('/crm/customers/'), `${attack} → ${n.path}: outside the customers subtree`)
    for (const scope of scopes) t.equal(scope.matches('GET', n.path), false, `${scope.source} denies ${attack}`)
  }
})

/** A reference matcher over split segments: plain recursion with a memo, for the differential test. */
function referenceMatch(pattern: readonly string[], path: readonly string[]): boolean {
  const memo = new Map<number, boolean>()
  const go = (i: number, j: number): boolean => {
    const key = i * (path.length + 1) + j
    const cached = memo.get(key)
    if (cached !== undefined) return cached
    let result: boolean
    if (i === pattern.length) result = j === path.length
    else if (pattern[i] === '**') result = go(i + 1, j) || (j < path.length && go(i, j + 1))
    else if (j === path.length) result = false
    else if (pattern[i] === '*') result = path[j] !== '' && go(i + 1, j + 1)
    else result = pattern[i] === path[j] && go(i + 1, j + 1)
    memo.set(key, result)
    return result
  }
  return go(0, 0)
}

t.test('random patterns and paths agree with a reference matcher', async (t) => {
  const patternPieces = ['a', 'b', '*', '**']
  const pathPieces = ['a', 'b', 'c']
  let seed = 0x1234567
  const rand = (n: number) => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) % n
  }
  let matched = 0
  let checked = 0
  for (let k = 0; k < 20_000; k++) {
    const pattern: string[] = []
    for (let n = rand(6); n > 0; n--) {
      const piece = patternPieces[rand(patternPieces.length)] as string
      if (piece === '**' && pattern[pattern.length - 1] === '**') continue
      pattern.push(piece)
    }
    if (rand(4) === 0) pattern.push('')
    const path: string[] = []
    for (let n = rand(7); n > 0; n--) path.push(pathPieces[rand(pathPieces.length)] as string)
    if (rand(3) === 0 || path.length === 0) path.push('')
    const patternText = '/' + pattern.join('/')
    const pathText = '/' + path.join('/')
    const expected = referenceMatch(pattern.length === 0 ? [''] : pattern, path)
    const actual = compile(`GET ${patternText}`).matches('GET', pathText)
    checked++
    if (expected) matched++
    if (actual !== expected) t.fail(`${patternText} vs ${pathText}: got ${actual}, expected ${expected}`)
  }
  t.ok(checked > 10_000 && matched > 1_000, `meaningful sample: ${checked} checked, ${matched} matches`)
})

t.test('no exponential blow-up with many **', async (t) => {
  const scope = compile('GET /**/a/**/a/**/a/**/a/**/a/**/b')
  const path = '/a'.repeat(3_000)
  const started = process.hrtime.bigint()
  t.equal(scope.matches('GET', path), false)
  t.equal(scope.matches('GET', path + '/b'), true)
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  t.ok(ms < 2_000, `quadratic at worst (${ms.toFixed(1)} ms)`)
})

t.test('compileScopes', async (t) => {
  const set = compileScopes(['GET /crm/customers/*', 'GET,POST /crm/tickets/**', 'DELETE /crm/tickets/*/draft'])
  t.equal(set.scopes.length, 3)
  t.strictSame(set.invalid, [])
  const cases: [string, string, string | undefined][] = [
    ['GET', '/crm/customers/1', 'GET /crm/customers/*'],
    ['HEAD', '/crm/customers/1', 'GET /crm/customers/*'],
    ['POST', '/crm/customers/1', undefined],
    ['POST', '/crm/tickets', 'GET,POST /crm/tickets/**'],
    ['GET', '/crm/tickets/9/comments', 'GET,POST /crm/tickets/**'],
    ['DELETE', '/crm/tickets/9/draft', 'DELETE /crm/tickets/*/draft'],
    ['DELETE', '/crm/tickets/9', undefined],
    ['GET', '/crm/admin', undefined],
  ]
  for (const [method, path, source] of cases) {
    t.equal(set.find(method, path)?.source, source, `${method} ${path}`)
    t.equal(set.allows(method, path), source !== undefined, `${method} ${path}`)
  }

  const empty = compileScopes([])
  t.equal(empty.allows('GET', '/'), false, 'no scopes allow nothing')
})

t.test('compileScopes: invalid patterns allow nothing and are reported', async (t) => {
  const set = compileScopes(['get /a', 'GET /b', 'GET /c/*.json', 'GET /x//y'])
  t.strictSame(
    set.scopes.map((s) => s.source),
    ['GET /b'],
  )
  t.strictSame(
    set.invalid.map((i) => i.source),
    ['get /a', 'GET /c/*.json', 'GET /x//y'],
  )
  t.match(set.invalid[0]?.error, /uppercase/)
  t.equal(set.allows('GET', '/a'), false)
  t.equal(set.allows('GET', '/b'), true)
  t.equal(set.allows('GET', '/c/x.json'), false)
  t.equal(set.allows('GET', '/x/y'), false)
})

t.test('compiled values are frozen', async (t) => {
  const set = compileScopes(['GET /a'])
  t.ok(Object.isFrozen(set))
  t.ok(Object.isFrozen(set.scopes))
  t.ok(Object.isFrozen(set.scopes[0]))
})

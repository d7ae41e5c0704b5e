/**
 * The approvers' console as the control plane serves it, over real HTTP on a real gateway: the
 * page and its files with their content types and security headers, 404 for anything else under
 * /console/, path tricks that stay inside the API's own rules, and the served scripts checked for
 * the sinks a console must never use.
 */
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { startTestGateway, call, rawCall, ADMIN_TOKEN } from '../helpers/gateway.js'
import { CONSOLE_FILE_NAMES, CONSOLE_STATIC_DIR, CONSOLE_ASSETS_FILE, renderConsoleAssets } from '../../scripts/console-assets.js'
import { CONSOLE_PATHS } from '../../src/console/site.js'

const POLICY = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 8h
`

const REQUIRED_HEADERS = {
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
}

const EXPECTED: Record<string, { file: string; type: string }> = {
  '/console/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/console/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8' },
  '/console/api.js': { file: 'api.js', type: 'text/javascript; charset=utf-8' },
  '/console/views.js': { file: 'views.js', type: 'text/javascript; charset=utf-8' },
  '/console/console.css': { file: 'console.css', type: 'text/css; charset=utf-8' },
  '/console/favicon.svg': { file: 'favicon.svg', type: 'image/svg+xml' },
}

const staticFile = (name: string): string => readFileSync(CONSOLE_STATIC_DIR + name, 'utf8')

function checkSecurityHeaders(t: Test, headers: Record<string, string | string[] | undefined>, what: string): void {
  const csp = String(headers['content-security-policy'] ?? '')
  t.match(csp, /(^|; )default-src 'self'(;|$)/, `${what}: CSP default-src 'self'`)
  t.match(csp, /(^|; )frame-ancestors 'none'(;|$)/, `${what}: CSP frame-ancestors 'none'`)
  t.notMatch(csp, /unsafe-inline|unsafe-eval|\*/, `${what}: nothing in the CSP loosens it`)
  for (const [name, value] of Object.entries(REQUIRED_HEADERS)) t.equal(headers[name], value, `${what}: ${name}`)
}

t.test('the console files are served from the control plane with their types and security headers', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  t.same([...CONSOLE_PATHS].sort(), Object.keys(EXPECTED).sort(), 'exactly the expected paths')
  for (const [path, { file, type }] of Object.entries(EXPECTED)) {
    const res = await call(`${g.controlUrl}${path}`)
    t.equal(res.status, 200, `${path}: 200`)
    t.equal(res.headers['content-type'], type, `${path}: ${type}`)
    t.equal(res.text, staticFile(file), `${path}: the file from src/console/static/${file}`)
    t.equal(Number(res.headers['content-length']), Buffer.byteLength(res.text), `${path}: content-length`)
    checkSecurityHeaders(t, res.headers, path)
  }
  const head = await rawCall(g.controlUrl, '/console/', { method: 'HEAD' })
  t.equal(head.status, 200, 'HEAD works')
  t.equal(head.text, '', 'without a body')
  t.equal(head.headers['content-type'], 'text/html; charset=utf-8')

  const bare = await rawCall(g.controlUrl, '/console')
  t.equal(bare.status, 308, '/console redirects')
  t.equal(bare.headers.location, '/console/', 'to /console/ (relative URLs in the page need the slash)')
  t.equal((await call(`${g.controlUrl}/console/app.js?v=1`)).status, 200, 'a query string is ignored')
  t.equal((await call(`${g.controlUrl}/console/`, { headers: { authorization: 'Bearer nonsense' } })).status, 200, 'the page needs no credential: it holds no data')
})

t.test('the page loads nothing inline: its CSP leaves no room for inline script or style', async (t) => {
  const html = staticFile('index.html')
  const scripts = [...html.matchAll(/<script\b([^>]*)>([\s\S]*?)<\/script>/g)]
  t.equal(scripts.length, 1, 'one script element')
  t.match(scripts[0]?.[1], /type="module"/)
  t.match(scripts[0]?.[1], /src="app\.js"/)
  t.equal(scripts[0]?.[2]?.trim(), '', 'with no inline code')
  t.notMatch(html, /<style\b/i, 'no style element')
  t.notMatch(html, /\sstyle=/i, 'no style attribute')
  t.notMatch(html, /\son[a-z]+=/i, 'no inline event handler')
  t.notMatch(html, /javascript:/i, 'no javascript: URL')
  t.notMatch(html, /(src|href)="(https?:)?\/\//i, 'nothing from another origin')
  t.notMatch(html, /<form\b[^>]*\saction=/i, 'no form posts anywhere by itself')
})

t.test('the served scripts use no HTML or code sinks, no storage, and no console output', async (t) => {
  for (const name of CONSOLE_FILE_NAMES.filter((n) => n.endsWith('.js'))) {
    const js = staticFile(name)
    for (const [pattern, what] of [
      [/innerHTML/, 'innerHTML'],
      [/outerHTML/, 'outerHTML'],
      [/insertAdjacentHTML/, 'insertAdjacentHTML'],
      [/createContextualFragment|DOMParser|srcdoc/, 'HTML parsing'],
      [/document\.write/, 'document.write'],
      [/\beval\s*\(/, 'eval'],
      [/\bnew\s+Function\b|\bFunction\s*\(/, 'the Function constructor'],
      [/set(Timeout|Interval)\s*\(\s*['"`]/, 'string timers'],
      [/localStorage|sessionStorage|indexedDB|document\.cookie|caches\./, 'browser storage'],
      [/\bconsole\s*\./, 'console output (a credential must never be logged)'],
      [/\bimport\s*\(/, 'dynamic import'],
    ] as const) {
      t.notMatch(js, pattern, `${name}: no ${what}`)
    }
    const imports = [...js.matchAll(/^import .* from '([^']+)'$/gm)].map((m) => m[1])
    t.ok(imports.every((i) => i === './api.js' || i === './views.js'), `${name}: imports only the console's own modules`)
  }
})

t.test('the scripts are valid ES modules', async (t) => {
  const run = promisify(execFile)
  for (const name of CONSOLE_FILE_NAMES.filter((n) => n.endsWith('.js'))) {
    // `--check` parses without running (app.js needs a browser to run).
    await t.resolves(run(process.execPath, ['--check', CONSOLE_STATIC_DIR + name]), `${name} parses`)
  }
})

t.test('src/console/assets.ts is fresh (run `node --import tsx scripts/console-assets.ts` after editing src/console/static/)', async (t) => {
  t.equal(readFileSync(CONSOLE_ASSETS_FILE, 'utf8'), renderConsoleAssets())
})

t.test('anything else under /console/ is 404, other methods 405, and both carry the headers', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  for (const path of [
    '/console/nope.js',
    '/console/index.html',
    '/console/app.js/',
    '/console//app.js',
    '/console/APP.JS',
    '/console/app',
    '/console/.env',
    '/console/api.d.ts',
    '/console/assets.ts',
    '/console/static/app.js',
    '/console/%61pp.js',
    '/console/app.js%00',
    '/console/app.js%20',
  ]) {
    const res = await rawCall(g.controlUrl, path)
    t.equal(res.status, 404, `${path}: 404`)
    t.match(res.json, { error: { code: 'not_found' } }, `${path}: the API's not_found`)
    checkSecurityHeaders(t, res.headers, path)
  }
  for (const method of ['POST', 'PUT', 'DELETE', 'OPTIONS']) {
    const res = await rawCall(g.controlUrl, '/console/', { method })
    t.equal(res.status, 405, `${method} /console/: 405`)
    t.match(res.json, { error: { code: 'method_not_allowed' } })
  }
  t.ok(g.audit.some((e) => e.event === 'admin.denied' && e.code === 'not_found' && e.path === '/console/nope.js'), 'refused like every other control-plane call')
})

t.test('path tricks do not escape /console/: they reach the API under its own rules, or nothing', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY })
  await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '5m' })
  // The URL parser resolves dot segments (%2e included) before routing, so these ARE /v1/grants:
  // the API answers, and wants the operator token as always.
  for (const path of ['/console/../v1/grants', '/console/%2e%2e/v1/grants', '/console/.%2e/v1/grants', '/console/%2E%2E/v1/grants', '/console/./../v1/grants']) {
    const res = await rawCall(g.controlUrl, path)
    t.equal(res.status, 401, `${path}: the API's 401, not a console file`)
    t.match(res.json, { error: { code: 'unauthorized' } })
    t.notOk(res.headers['content-security-policy'], `${path}: answered by the API, not the console`)
  }
  const withToken = await rawCall(g.controlUrl, '/console/../v1/grants', { token: ADMIN_TOKEN })
  t.equal(withToken.status, 200, 'with the operator token it is simply the grant list')
  t.notOk(withToken.text.includes('"token"'), 'which never holds a token')
  // Encoded separators are not separators: one unknown segment under /console/.
  for (const path of [
    '/console/..%2fv1%2fgrants',
    '/console/%2e%2e%2fv1%2fgrants',
    '/console/..%5c..%5cpackage.json',
    '/console/%2e%2e%2f%2e%2e%2fpackage.json',
    '/console/..%252f..%252fpackage.json',
    '/console/%c0%ae%c0%ae/package.json',
  ]) {
    const res = await rawCall(g.controlUrl, path)
    t.equal(res.status, 404, `${path}: 404`)
    t.match(res.json, { error: { code: 'not_found' } })
  }
  for (const path of ['/console/../../../etc/passwd', '/console/%2e%2e/%2e%2e/package.json', '/console/../src/console/static/app.js']) {
    const res = await rawCall(g.controlUrl, path)
    t.equal(res.status, 404, `${path}: resolved above /console/, where nothing is served from disk`)
    t.notOk(res.text.includes('root:') || res.text.includes('"name": "jitgate"') || res.text.includes('createApiClient'), `${path}: no file content`)
  }
  const dotted = await rawCall(g.controlUrl, '/console/./app.js')
  t.equal(dotted.status, 200, '/console/./app.js is app.js')
  t.equal(dotted.text, staticFile('app.js'))
})

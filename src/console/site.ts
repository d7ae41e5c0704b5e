/**
 * The approvers' web console on the control plane (DESIGN.md, "Listeners"): one page and its
 * scripts and stylesheet under `/console/`. The page holds no data and no secret; its script
 * talks only to the JSON API (`/v1/requests*`, and `/v1/grants` to list and revoke grants) with the
 * approver's own credential, so the console can do nothing the API would not let that approver do.
 *
 * The files come from a table built once at load from `assets.ts` (generated from `static/`):
 * a URL path is only ever a key looked up in that table, never a filesystem path. Every answer
 * carries a CSP that allows the page's own files and nothing else (no inline script or style, no
 * framing), so a value that somehow became markup still could not run.
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { ApiError } from '../control/errors.js'
import { CONSOLE_FILES } from './assets.js'

export const CONSOLE_PREFIX = '/console/'

/**
 * `default-src 'self'`: scripts, styles, images and fetches from this origin only, and no inline
 * code. `base-uri` and `form-action` do not fall back to `default-src`: without a base element no
 * relative URL can be redirected, and a form can never be submitted natively, so a code typed
 * into one never ends up in a URL if the script failed to load.
 */
export const CONSOLE_CSP = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

/** On every console answer, the 404s and 405s included. */
export const CONSOLE_HEADERS: Readonly<Record<string, string>> = Object.freeze({
  'content-security-policy': CONSOLE_CSP,
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
  'x-frame-options': 'DENY',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
})

const CONTENT_TYPES: Readonly<Record<string, string>> = {
  html: 'text/html; charset=utf-8',
  js: 'text/javascript; charset=utf-8',
  css: 'text/css; charset=utf-8',
  svg: 'image/svg+xml',
}

interface Asset {
  readonly body: Buffer
  readonly type: string
}

/** URL path → file. `index.html` is the page at `/console/`. */
const ASSETS: ReadonlyMap<string, Asset> = new Map(
  Object.entries(CONSOLE_FILES).map(([name, text]) => {
    const type = CONTENT_TYPES[name.slice(name.lastIndexOf('.') + 1)]
    if (type === undefined) throw new Error(`console file ${name}: no content type for its extension`)
    return [name === 'index.html' ? CONSOLE_PREFIX : CONSOLE_PREFIX + name, { body: Buffer.from(text, 'utf8'), type }]
  }),
)

/** The URL paths the console serves. */
export const CONSOLE_PATHS: readonly string[] = [...ASSETS.keys()]

/**
 * Serves `/console` (a redirect to `/console/`) and the files under `/console/`. Resolves false
 * for any other path; throws the API's `not_found` or `method_not_allowed` for a path under
 * `/console/` that is not a console file, or a method other than GET and HEAD.
 * `path` is the URL's pathname, dot segments already resolved by the URL parser.
 */
export function serveConsole(req: IncomingMessage, res: ServerResponse, path: string): boolean {
  if (path !== '/console' && !path.startsWith(CONSOLE_PREFIX)) return false
  // Set before anything can throw: the API's error answer (sendError) keeps them.
  for (const [name, value] of Object.entries(CONSOLE_HEADERS)) res.setHeader(name, value)
  const asset = path === '/console' ? undefined : ASSETS.get(path)
  if (path !== '/console' && asset === undefined) throw new ApiError('not_found')
  if (req.method !== 'GET' && req.method !== 'HEAD') throw new ApiError('method_not_allowed')
  if (asset === undefined) {
    // The page's relative URLs (app.js, console.css) need the trailing slash.
    res.writeHead(308, { location: CONSOLE_PREFIX, 'content-length': 0 }).end()
    return true
  }
  res.writeHead(200, { 'content-type': asset.type, 'content-length': asset.body.length })
  res.end(asset.body)
  return true
}

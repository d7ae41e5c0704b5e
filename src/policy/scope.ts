/**
 * Scope patterns: `METHODS PATH` (DESIGN.md, "Scope patterns"), compiled once and matched against
 * the normalised request path (see path.ts) without regular expressions or allocation.
 *
 * METHODS is `*` (any method) or a comma-separated list of methods, e.g. `GET,POST`. Methods are
 * case-sensitive (RFC 9110 §9.1) and must be RFC 9110 §5.6.2 tokens written in uppercase; `*` stands
 * alone. A scope that allows `GET` also allows `HEAD`: HEAD is GET without the content
 * (RFC 9110 §9.3.2), so it reveals nothing GET does not, and gateways commonly treat it so (nginx's
 * `limit_except GET` allows HEAD too). The converse does not hold: `HEAD` alone does not allow `GET`.
 *
 * PATH starts with `/` and is split into segments at `/`. A segment is
 * - a literal, compared exactly (case-sensitive) with the path segment;
 * - `*`: exactly one non-empty segment;
 * - `**`: zero or more segments, of any content. It may appear anywhere, but not twice in a row.
 * Wildcards are whole segments: `*.json`, `a*` or `***` are errors. A pattern cannot name a literal
 * `*` segment.
 *
 * The pattern must be written in normalised form (path.ts): no `.`/`..` or empty segments, escapes
 * only where needed and in uppercase hex. Otherwise the pattern is an error (with the normalised form
 * in the message), since a literal that normalisation would change could never match.
 *
 * Trailing slash: a path ending in `/` has an empty last segment, so `/a/b` and `/a/b/` are different
 * paths, as they are to an upstream, and a literal pattern matches only its own spelling. `/a/*`
 * matches `/a/x` but neither `/a`, `/a/` nor `/a/x/` (the same pattern with a trailing slash matches
 * `/a/x/` only); `/a/**` matches `/a`, `/a/`, `/a/x` and `/a/x/y/`; `/` matches only `/`, and `/**`
 * matches every path.
 */
import { normalizePath } from './path.js'

/** A parsed, compiled scope pattern. */
export interface CompiledScope {
  /** The pattern's text as given. */
  readonly source: string
  /** `'*'` for any method; otherwise the allowed methods, `HEAD` added where `GET` is listed. */
  readonly methods: ReadonlySet<string> | '*'
  /**
   * True when the method and path are inside this scope.
   * @param method - the request method, exactly as received (case-sensitive).
   * @param path - a path normalised by {@link normalizePath}; anything else is a caller bug.
   */
  matches(method: string, path: string): boolean
}

export type ParseScopeResult =
  | { readonly ok: true; readonly scope: CompiledScope }
  | { readonly ok: false; readonly error: string }

const SLASH = 0x2f

/** Any number of segments (zero included). */
const ANY = '**'
/** Exactly one non-empty segment. */
const ONE = '*'

/** RFC 9110 §5.6.2 `tchar`, restricted to uppercase letters and without `*` (reserved for "any"). */
const METHOD_TOKEN = /^[!#$%&'+\-.^_`|~0-9A-Z]+$/
const TCHAR = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * Parses and compiles one scope pattern. Run it where scopes enter the system (policy load, grant
 * issuance) so that a bad pattern is reported to whoever wrote it.
 *
 * @param text - `METHODS PATH`; the two parts are separated by spaces or tabs, and surrounding
 *   whitespace is ignored.
 * @returns the compiled scope, or an error message naming the problem.
 */
export function parseScope(text: string): ParseScopeResult {
  const parts = text.trim().split(/[ \t]+/)
  const [methodText, path] = parts
  if (parts.length !== 2 || methodText === undefined || path === undefined) {
    return { ok: false, error: 'expected "METHODS PATH", e.g. "GET /crm/customers/*"' }
  }

  const parsedMethods = parseMethods(methodText)
  if ('error' in parsedMethods) return { ok: false, error: parsedMethods.error }
  const methodSet = parsedMethods.methods

  const pattern = parsePath(path)
  if (typeof pattern === 'string') return { ok: false, error: pattern }

  const scope: CompiledScope & { readonly [PATTERN]: PathPattern } = Object.freeze({
    source: text,
    methods: methodSet,
    matches:
      methodSet === '*'
        ? (_method: string, p: string) => matchPath(pattern, p)
        : (method: string, p: string) => methodSet.has(method) && matchPath(pattern, p),
    [PATTERN]: pattern,
  })
  return { ok: true, scope }
}

/**
 * The path pattern behind a compiled scope, for the comparisons below: a symbol-keyed property
 * (never serialised, not part of the interface) rather than a WeakMap, whose entries cost the
 * garbage collector dearly when many scopes are compiled (a policy of 10,000 entitlements).
 */
const PATTERN = Symbol('pattern')
const patternOf = (scope: CompiledScope): PathPattern | undefined => (scope as { [PATTERN]?: PathPattern })[PATTERN]

/**
 * True when `outer` allows every request `inner` allows: the methods of `inner` are among those of
 * `outer`, and every path `inner` matches, `outer` matches. Used to check that a grant's or an
 * auto-approval's scopes lie within an entitlement.
 *
 * The comparison is symbolic, on the patterns (no sample paths): a literal segment of `inner` is
 * covered by the same literal or a wildcard of `outer`, its `*` by a `*` or `**`, its `**` only by a
 * `**`, after rewriting runs of wildcards to one canonical form (`**` then `*` becomes `*` then `**`).
 * It is sound: true means covered. It is conservative: for a few unusual pairs of spellings (a
 * leading `**` before a literal, inside a leading `*` before a `**`) it answers false, so write the
 * narrower scope in the shape of the wider one. A false answer denies, never allows.
 */
export function scopeCovers(outer: CompiledScope, inner: CompiledScope): boolean {
  if (outer.methods !== '*') {
    if (inner.methods === '*') return false
    for (const m of inner.methods) if (!outer.methods.has(m)) return false
  }
  const q = patternOf(outer)
  const p = patternOf(inner)
  if (q === undefined || p === undefined) return false
  return tokensCover(canonicalWildcards(q.tokens), canonicalWildcards(p.tokens))
}

/**
 * True when the scope can match some path at or below `prefix` (a normalised path prefix without
 * trailing slash, or `/`): a scope that cannot is dead on a resource served under that prefix,
 * usually a typo.
 */
export function scopeReaches(scope: CompiledScope, prefix: string): boolean {
  const pattern = patternOf(scope)
  if (pattern === undefined) return false
  if (prefix === '/') return true
  const segments = prefix.slice(1).split('/')
  const { tokens } = pattern
  for (let i = 0; i < segments.length; i++) {
    const tok = tokens[i]
    if (tok === undefined) return false
    if (tok === ANY) return true
    if (tok !== ONE && tok !== segments[i]) return false
  }
  return true
}

/** Rewrites each run of wildcard tokens holding a `**` as its `*`s followed by one `**`. */
function canonicalWildcards(tokens: readonly string[]): readonly string[] {
  const out: string[] = []
  let i = 0
  while (i < tokens.length) {
    const tok = tokens[i] as string
    if (tok !== ONE && tok !== ANY) {
      out.push(tok)
      i++
      continue
    }
    let ones = 0
    let any = false
    for (; i < tokens.length && (tokens[i] === ONE || tokens[i] === ANY); i++) {
      if (tokens[i] === ONE) ones++
      else any = true
    }
    for (let k = 0; k < ones; k++) out.push(ONE)
    if (any) out.push(ANY)
  }
  return out
}

/** Whether pattern tokens `q` cover pattern tokens `p` (see {@link scopeCovers}); O(|q|·|p|). */
function tokensCover(q: readonly string[], p: readonly string[]): boolean {
  const memo = new Map<number, boolean>()
  const width = p.length + 1
  const cover = (i: number, j: number): boolean => {
    const key = i * width + j
    const known = memo.get(key)
    if (known !== undefined) return known
    let result: boolean
    if (i === q.length) result = j === p.length
    else if (q[i] === ANY) result = cover(i + 1, j) || (j < p.length && cover(i, j + 1))
    else if (j === p.length || p[j] === ANY) result = false
    else if (q[i] === ONE) result = p[j] !== '' && cover(i + 1, j + 1)
    else result = q[i] === p[j] && cover(i + 1, j + 1)
    memo.set(key, result)
    return result
  }
  return cover(0, 0)
}

/**
 * Methods a scope may name: RFC 9110 §9, PATCH (RFC 5789) and WebDAV (RFC 4918, 3253, 5323).
 * Any token is a valid method on the wire, but in a scope an unknown one is almost surely a typo
 * (`GTE`) that would silently allow nothing.
 */
const KNOWN_METHODS: ReadonlySet<string> = new Set([
  'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH',
  'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'REPORT', 'SEARCH',
])

function parseMethods(text: string): { readonly methods: ReadonlySet<string> | '*' } | { readonly error: string } {
  if (text === '*') return { methods: '*' }
  const set = new Set<string>()
  for (const m of text.split(',')) {
    if (m === '') return { error: `empty method in "${text}"` }
    if (m.includes('*')) return { error: `"*" means any method and must stand alone (got "${text}")` }
    if (!METHOD_TOKEN.test(m)) {
      if (TCHAR.test(m)) {
        return {
          error: `method "${m}" must be uppercase: methods are case-sensitive (RFC 9110 §9.1), write "${m.toUpperCase()}"`,
        }
      }
      return { error: `method "${m}" is not an HTTP method token (RFC 9110 §5.6.2)` }
    }
    if (!KNOWN_METHODS.has(m)) {
      return { error: `unknown method "${m}" (known: ${[...KNOWN_METHODS].join(', ')}); a typo would make a scope that allows nothing` }
    }
    if (set.has(m)) return { error: `method "${m}" is listed twice` }
    set.add(m)
  }
  if (set.has('GET')) set.add('HEAD')
  return { methods: set }
}

/** A compiled PATH. */
interface PathPattern {
  /** Segments: a literal, {@link ONE} or {@link ANY}; a trailing slash is a final ''. */
  readonly tokens: readonly string[]
  /** How many tokens, from the start, are literals. */
  readonly lead: number
  /** Those literal tokens as path text (`/crm/customers`), compared in one `startsWith`. */
  readonly leadText: string
}

/** The compiled path, or an error message. */
function parsePath(path: string): PathPattern | string {
  if (path.charCodeAt(0) !== SLASH) return `path "${path}" must start with "/"`
  const normalised = normalizePath(path)
  if (!normalised.ok) return `path "${path}" cannot be normalised: ${normalised.reason}`
  if (normalised.path !== path) {
    return `path "${path}" is not in normalised form (literal segments are compared with the normalised request path): write "${normalised.path}"`
  }
  // Normalised: no empty segment except a trailing one, which stays as '' (see the module comment).
  const tokens = path.slice(1).split('/')
  for (let i = 0; i < tokens.length; i++) {
    const seg = tokens[i] as string
    if (seg === ANY) {
      if (tokens[i - 1] === ANY) return `path "${path}" has "**" twice in a row`
    } else if (seg !== ONE && seg.includes('*')) {
      return `segment "${seg}" of "${path}": wildcards must be whole segments ("*" or "**"); partial wildcards such as "*.json" are not supported`
    }
  }
  let lead = 0
  while (lead < tokens.length && tokens[lead] !== ONE && tokens[lead] !== ANY) lead++
  return Object.freeze({ tokens: Object.freeze(tokens), lead, leadText: '/' + tokens.slice(0, lead).join('/') })
}

/**
 * Segment-wise glob match of a normalised path, walking the path string in place (no split, no
 * allocation). The leading literal segments are compared at once; then `**` is handled like `*` in
 * the classic greedy wildcard matcher: remember the last `**` and, on a mismatch, let it absorb one
 * more segment and retry from there. Backtracking to the last `**` only is sufficient (an earlier one
 * could absorb nothing a later one cannot), so the work is O(path segments × pattern segments);
 * there is no exponential case.
 */
function matchPath(pattern: PathPattern, path: string): boolean {
  const { tokens, lead, leadText } = pattern
  const n = tokens.length
  if (lead === n) return path === leadText
  const len = path.length
  // `p` is the start of the current path segment; `len + 1` means every segment was consumed.
  let p = 1
  if (lead > 0) {
    if (!path.startsWith(leadText)) return false
    const q = leadText.length
    if (q < len && path.charCodeAt(q) !== SLASH) return false
    p = q + 1
  } else if (path.charCodeAt(0) !== SLASH) {
    return false
  }
  let ti = lead
  let starTi = -1
  let starP = 0
  while (p <= len) {
    if (ti < n) {
      const tok = tokens[ti] as string
      if (tok === ANY) {
        starTi = ti++
        starP = p
        continue
      }
      const e = segmentEnd(path, p)
      if (tok === ONE ? e > p : e - p === tok.length && path.startsWith(tok, p)) {
        ti++
        p = e + 1
        continue
      }
    }
    if (starTi < 0) return false
    ti = starTi + 1
    starP = segmentEnd(path, starP) + 1
    p = starP
  }
  while (ti < n && tokens[ti] === ANY) ti++
  return ti === n
}

function segmentEnd(path: string, start: number): number {
  const e = path.indexOf('/', start)
  return e < 0 ? path.length : e
}

/** A pattern rejected by {@link compileScopes}. */
export interface InvalidScope {
  readonly source: string
  readonly error: string
}

/** The scopes of one grant. */
export interface ScopeSet {
  /** The valid scopes, in the given order. */
  readonly scopes: readonly CompiledScope[]
  /** Patterns that failed to parse; they allow nothing. */
  readonly invalid: readonly InvalidScope[]
  /** The first scope that allows this request, for the decision's reason; undefined when none does. */
  find(method: string, path: string): CompiledScope | undefined
  /** True when any scope allows this request. */
  allows(method: string, path: string): boolean
}

/**
 * Compiles a grant's scopes into a set that allows a request when any of its scopes does.
 *
 * Never throws: a pattern that does not parse allows nothing and is listed in `invalid` (fail
 * closed). Scopes are validated with {@link parseScope} when a grant is issued, so an invalid one
 * here means the grammar changed under a stored grant; the caller should log it.
 *
 * The set is scanned in order: grants carry a handful of scopes, and each check is allocation-free.
 * Compile once per distinct scope list and reuse the set across requests.
 *
 * @param list - scope patterns, `METHODS PATH` each.
 */
export function compileScopes(list: readonly string[]): ScopeSet {
  const scopes: CompiledScope[] = []
  const invalid: InvalidScope[] = []
  for (const source of list) {
    const parsed = parseScope(source)
    if (parsed.ok) scopes.push(parsed.scope)
    else invalid.push(Object.freeze({ source, error: parsed.error }))
  }
  const find = (method: string, path: string): CompiledScope | undefined => {
    for (const scope of scopes) if (scope.matches(method, path)) return scope
    return undefined
  }
  return Object.freeze({
    scopes: Object.freeze(scopes),
    invalid: Object.freeze(invalid),
    find,
    allows: (method: string, path: string) => find(method, path) !== undefined,
  })
}

/**
 * The route table: which resource serves a request's host and normalised path (DESIGN.md,
 * "Concepts": a resource is reached through a path prefix, a host name, or both).
 *
 * Matching rules:
 * - Host: compared case-insensitively (RFC 9110 §4.2.3, RFC 4343), with the port and one trailing
 *   dot removed: `API.example.com.:8080` is `api.example.com`. An IPv6 literal keeps its brackets
 *   (`[::1]:8080` is `[::1]`) and is compared in the RFC 5952 form that route hosts are rewritten to.
 *   A request host that cannot be parsed (bad port, unbracketed `:`, non-ASCII) matches no host route.
 * - Path prefix: matched at segment boundaries of the normalised path: `/crm` matches `/crm`, `/crm/`
 *   and `/crm/x`, never `/crmx`. The prefix `/` matches every path; a route without a prefix is a
 *   route with prefix `/`.
 * - Precedence: routes naming the request's host are tried first, longest prefix winning; only when
 *   none of them matches the path are routes without a host tried, again longest prefix first. So a
 *   host-only route takes every path on its host, and a route without a host serves any host.
 *
 * A lookup costs at most one Map probe per path segment (up to the deepest prefix configured),
 * whatever the number of routes.
 */
import { isIPv6 } from 'node:net'
import { normalizePath } from './path.js'

/** How a resource is reached: a host, a path prefix, or both. */
export interface ResourceRoute {
  /** Resource id returned by a match. Several routes may share one id. */
  readonly id: string
  /** Host name (ASCII, A-label form), IPv4 address or bracketed IPv6 literal; no port. */
  readonly host?: string
  /** A normalised path without trailing slash (`/` alone is allowed); default `/`. */
  readonly pathPrefix?: string
}

export interface RouteTable {
  /**
   * The id of the resource serving this request, or undefined (`route_not_found`).
   * @param host - the request's `Host` (or `:authority`), port included, as received; undefined when
   *   absent, in which case only routes without a host apply.
   * @param path - a path normalised by {@link normalizePath}.
   */
  match(host: string | undefined, path: string): string | undefined
}

export interface CompileRoutesResult {
  /** The table of the valid routes. Use it only when `errors` is empty. */
  readonly table: RouteTable
  /** Every problem found, each naming the route (`routes[i] (id "…")`); empty when all is well. */
  readonly errors: readonly string[]
}

/** Prefix → id for one host, plus the depth (segment count) of its deepest prefix. */
interface PrefixIndex {
  readonly byPrefix: Map<string, string>
  maxDepth: number
}

const SLASH = 0x2f
const DOT = 0x2e
const COLON = 0x3a

/** RFC 1123 §2.1 host name: LDH labels of 1–63 characters, 253 characters in all. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/

/**
 * Validates and compiles resource routes. Every problem is reported at once (invalid host or prefix,
 * a route with neither, two routes with the same host and prefix after canonicalisation); the caller
 * must refuse the policy when `errors` is not empty. 10,000 routes compile in tens of milliseconds.
 *
 * @param routes - the routes of every resource.
 */
export function compileRoutes(routes: readonly ResourceRoute[]): CompileRoutesResult {
  const errors: string[] = []
  const byHost = new Map<string, PrefixIndex>()
  const anyHost: PrefixIndex = { byPrefix: new Map(), maxDepth: 0 }
  /** `host prefix` → index of the route that took it, to name both sides of a conflict. */
  const owner = new Map<string, number>()

  routes.forEach((route, i) => {
    const where = `routes[${i}] (id ${JSON.stringify(route.id)})`
    const problems: string[] = []
    if (typeof route.id !== 'string' || route.id === '') problems.push('id must be a non-empty string')
    if (route.host === undefined && route.pathPrefix === undefined) {
      problems.push('a route needs a host, a pathPrefix, or both')
    }
    const host = route.host === undefined ? undefined : canonicalRouteHost(route.host)
    if (host !== undefined && !host.ok) problems.push(host.error)
    const prefix = route.pathPrefix ?? '/'
    const prefixError = checkPrefix(prefix)
    if (prefixError !== undefined) problems.push(prefixError)
    if (problems.length > 0) {
      for (const p of problems) errors.push(`${where}: ${p}`)
      return
    }

    const hostKey = host?.ok === true ? host.host : undefined
    const key = `${hostKey ?? '*'} ${prefix}`
    const first = owner.get(key)
    if (first !== undefined) {
      const other = routes[first]
      errors.push(
        `${where}: same host and pathPrefix as routes[${first}] (id ${JSON.stringify(other?.id)}): ${hostKey ?? 'any host'} ${prefix}`,
      )
      return
    }
    owner.set(key, i)

    let index = anyHost
    if (hostKey !== undefined) {
      index = byHost.get(hostKey) ?? { byPrefix: new Map(), maxDepth: 0 }
      byHost.set(hostKey, index)
    }
    index.byPrefix.set(prefix, route.id)
    index.maxDepth = Math.max(index.maxDepth, depthOf(prefix))
  })

  const table: RouteTable = Object.freeze({
    match(host: string | undefined, path: string): string | undefined {
      if (path.charCodeAt(0) !== SLASH) return undefined
      if (host !== undefined && byHost.size > 0) {
        const key = requestHostKey(host)
        const index = key === undefined ? undefined : byHost.get(key)
        const id = index === undefined ? undefined : longestPrefix(index, path)
        if (id !== undefined) return id
      }
      return longestPrefix(anyHost, path)
    },
  })
  return Object.freeze({ table, errors: Object.freeze(errors) })
}

/**
 * The id of the longest prefix of `path` (at a segment boundary) in `index`. Candidates are tried
 * from the deepest configured depth upwards: `/a/b/c` with prefixes up to two segments deep tries
 * `/a/b`, `/a`, then `/`.
 */
function longestPrefix(index: PrefixIndex, path: string): string | undefined {
  const len = path.length
  let end = 0
  for (let depth = 0; depth < index.maxDepth; depth++) {
    const next = path.indexOf('/', end + 1)
    if (next < 0) {
      end = len
      break
    }
    end = next
  }
  // A trailing slash is not part of any prefix: `/crm/` is looked up as `/crm`.
  if (end === len && end > 1 && path.charCodeAt(end - 1) === SLASH) end--
  while (end > 0) {
    const id = index.byPrefix.get(end === len ? path : path.slice(0, end))
    if (id !== undefined) return id
    end = path.lastIndexOf('/', end - 1)
  }
  return index.byPrefix.get('/')
}

/** Number of segments of a valid prefix: `/` → 0, `/a` → 1, `/a/b` → 2. */
function depthOf(prefix: string): number {
  if (prefix === '/') return 0
  let depth = 0
  for (let i = 0; i < prefix.length; i++) if (prefix.charCodeAt(i) === SLASH) depth++
  return depth
}

/** An error message for an invalid prefix, or undefined. */
function checkPrefix(prefix: string): string | undefined {
  const normalised = normalizePath(prefix)
  if (!normalised.ok) return `pathPrefix ${JSON.stringify(prefix)} cannot be normalised: ${normalised.reason}`
  if (normalised.path !== prefix) {
    return `pathPrefix ${JSON.stringify(prefix)} is not in normalised form (it is compared with normalised paths): write ${JSON.stringify(normalised.path)}`
  }
  if (prefix.length > 1 && prefix.charCodeAt(prefix.length - 1) === SLASH) {
    return `pathPrefix ${JSON.stringify(prefix)} must not end with "/": prefixes match at segment boundaries, so ${JSON.stringify(prefix.slice(0, -1))} already covers it`
  }
  return undefined
}

/** A route's host in the form request hosts are compared in (lowercase, no trailing dot). */
function canonicalRouteHost(
  raw: string,
): { readonly ok: true; readonly host: string } | { readonly ok: false; readonly error: string } {
  let host = raw.toLowerCase()
  if (host.charCodeAt(host.length - 1) === DOT) host = host.slice(0, -1)
  if (host.startsWith('[')) {
    const inner = host.endsWith(']') ? host.slice(1, -1) : ''
    // Zone identifiers (`%eth0`) name a local interface: meaningless in a Host header (RFC 6874 §4).
    if (!isIPv6(inner) || inner.includes('%')) {
      return { ok: false, error: `host ${JSON.stringify(raw)} is not a bracketed IPv6 literal without zone (and must not carry a port)` }
    }
    // The URL parser serialises IPv6 in RFC 5952 form (`[0:0::1]` → `[::1]`).
    return { ok: true, host: new URL(`http://${host}/`).hostname }
  }
  if (host.includes(':')) {
    return { ok: false, error: `host ${JSON.stringify(raw)} must not include a port (ports are ignored when matching; write IPv6 literals in brackets)` }
  }
  if (host.includes('*')) return { ok: false, error: `host ${JSON.stringify(raw)}: wildcard hosts are not supported` }
  if (!HOST_NAME.test(host)) {
    return {
      ok: false,
      error: `host ${JSON.stringify(raw)} is not a valid host name (ASCII letters, digits, "-" and "."; internationalised names in A-label form, "xn--…")`,
    }
  }
  return { ok: true, host }
}

/**
 * The lookup key of a request's host: port and one trailing dot removed, lowercased. Undefined for a
 * host that is empty, has a non-numeric port, an unbracketed `:` (RFC 3986 §3.2.2 requires brackets
 * around IPv6), or characters outside printable ASCII; such a host matches no host route.
 */
function requestHostKey(host: string): string | undefined {
  let end = host.length
  if (host.startsWith('[')) {
    const close = host.indexOf(']')
    if (close < 0 || (close + 1 < end && !isPort(host, close + 1))) return undefined
    end = close + 1
  } else {
    const colon = host.indexOf(':')
    if (colon >= 0) {
      if (!isPort(host, colon)) return undefined
      end = colon
    }
    if (end > 0 && host.charCodeAt(end - 1) === DOT) end--
  }
  if (end === 0) return undefined
  for (let i = 0; i < end; i++) {
    const c = host.charCodeAt(i)
    if (c <= 0x20 || c >= 0x7f) return undefined
  }
  return (end === host.length ? host : host.slice(0, end)).toLowerCase()
}

/** True when `host[at]` is `:` followed by digits only (RFC 3986 §3.2.3: the port may be empty). */
function isPort(host: string, at: number): boolean {
  if (host.charCodeAt(at) !== COLON) return false
  for (let i = at + 1; i < host.length; i++) {
    const c = host.charCodeAt(i)
    if (c < 0x30 || c > 0x39) return false
  }
  return true
}

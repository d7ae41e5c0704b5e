/**
 * Header rewriting at the gateway's two hops. Upstream: the client's end-to-end headers minus
 * everything the gateway owns or must not pass on, plus the gateway's forwarding, identity and
 * credential headers. Downstream: the upstream's response headers minus its hop-by-hop ones.
 */

import type { IncomingMessage, OutgoingHttpHeaders } from 'node:http'
import { cgiHeaderName } from '../util/header-name.js'

/** What the gateway knows about an allowed request that the upstream must be told. */
export interface UpstreamHeaderContext {
  /** The client's address as the gateway saw it (after any trusted-proxy resolution). */
  readonly clientIp: string
  readonly proto: 'http' | 'https'
  /** The client's Host header. */
  readonly host: string
  readonly requestId: string
  readonly identity: { readonly subject: string; readonly grantId: string }
  /** Configured upstream credentials, names lowercased. */
  readonly inject: ReadonlyArray<readonly [name: string, value: string]>
  /** The Host sent upstream, e.g. `127.0.0.1:9001`. */
  readonly upstreamHost: string
  /** True for a WebSocket handshake: keeps `Connection: upgrade` and the client's `Upgrade`. */
  readonly upgrade: boolean
}

/** Hop-by-hop headers (RFC 9110 §7.6.1): they describe one connection, never the next hop's. */
const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'proxy-authenticate',
  'proxy-authorization',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
])

/**
 * Client headers never passed on, whatever else the request carries:
 * - hop-by-hop headers;
 * - `authorization`: the vendor's JIT token is the gateway's credential, never the upstream's;
 * - forwarding and identity headers, which only the gateway may assert (the client's are forgeable),
 *   and the client-address headers other proxies and CDNs assert;
 * - headers that make frameworks route or dispatch differently from the request line the scope was
 *   checked against (`X-Original-URL`, `X-Rewrite-URL`, method overrides): a grant for `GET /a`
 *   must not reach `POST /admin`;
 * - `expect`: the gateway answers `100-continue` to the client itself (once the request is allowed), and undici refuses
 *   to send the header at all.
 * `x-forwarded*`, `x-jit-*`, `x-auth-request-*` (oauth2-proxy's identity headers) and `x-envoy-*`
 * are matched by prefix in {@link isStrippedFromRequest}.
 */
const REQUEST_STRIPPED: ReadonlySet<string> = new Set([
  ...HOP_BY_HOP,
  'authorization',
  'forwarded',
  'x-real-ip',
  'x-client-ip',
  'x-cluster-client-ip',
  'true-client-ip',
  'cf-connecting-ip',
  'fastly-client-ip',
  'x-request-id',
  'x-original-url',
  'x-original-uri',
  'x-rewrite-url',
  'x-http-method-override',
  'x-http-method',
  'x-method-override',
  'expect',
  // More client-address, host, scheme, path and method claims that frameworks and proxies honour.
  'forwarded-for',
  'x-original-forwarded-for',
  'client-ip',
  'x-originating-ip',
  'x-remote-ip',
  'x-remote-addr',
  'x-proxyuser-ip',
  'x-host',
  'x-http-host-override',
  'x-original-host',
  'front-end-https',
  'x-url-scheme',
  'x-scheme',
  'x-override-url',
  'x-original-method',
  // Identity asserted by an authenticating proxy in front of the upstream: only the gateway's counts.
  'remote-user',
  'x-remote-user',
  // Framework-internal (Next.js skips its middleware, auth included, for a subrequest).
  'x-middleware-subrequest',
])

/** Prefixes of header families only a trusted proxy sets (`x-forwarded` also catches the bare name). */
const STRIPPED_PREFIXES = ['x-forwarded', 'x-jit-', 'x-auth-request-', 'x-envoy-'] as const

function isStrippedFromRequest(name: string): boolean {
  if (REQUEST_STRIPPED.has(name)) return true
  // Only `x-` names can be in a stripped family: most headers skip the prefix checks.
  if (name.charCodeAt(0) !== 0x78 || name.charCodeAt(1) !== 0x2d) return false
  for (const prefix of STRIPPED_PREFIXES) if (name.startsWith(prefix)) return true
  return false
}

const NOT_PLAIN = /[^a-z0-9-]/

/**
 * The CGI spellings of a resource's injected credential names, computed once per resource (the
 * list is the policy's own, frozen with it).
 */
const injectedSpellings = new WeakMap<UpstreamHeaderContext['inject'], ReadonlySet<string>>()
function injectedNames(inject: UpstreamHeaderContext['inject']): ReadonlySet<string> {
  let names = injectedSpellings.get(inject)
  if (names === undefined) {
    names = new Set(inject.map(([name]) => cgiHeaderName(name)))
    injectedSpellings.set(inject, names)
  }
  return names
}

/**
 * A client header the upstream could take for one the gateway strips or sets: judged by its CGI
 * spelling, so no variant of such a header reaches the upstream beside the gateway's own.
 */
function isStrippedVariant(name: string, injected: ReadonlySet<string>): boolean {
  const plain = cgiHeaderName(name)
  return isStrippedFromRequest(plain) || plain === 'host' || injected.has(plain)
}

const NONE: ReadonlySet<string> = new Set()

function isHopByHop(name: string): boolean {
  return HOP_BY_HOP.has(name)
}

/** Connection values naming only headers that are dropped anyway (both names are hop-by-hop). */
const USUAL_CONNECTION: ReadonlySet<string> = new Set(['keep-alive', 'Keep-Alive', 'upgrade', 'Upgrade'])

/**
 * The extra header names a `Connection` header declares hop-by-hop (RFC 9110 §7.6.1), or undefined
 * when it names none beyond the ones `alwaysStripped` already drops (the usual `keep-alive`, `close`,
 * `upgrade`), which spares the common case a Set.
 */
function connectionOptions(
  value: string | string[] | undefined,
  alwaysStripped: (name: string) => boolean,
): ReadonlySet<string> | undefined {
  // The usual values name nothing beyond the headers always dropped: no parsing per request.
  if (value === undefined || (typeof value === 'string' && USUAL_CONNECTION.has(value))) return undefined
  let names: Set<string> | undefined
  for (const token of (typeof value === 'string' ? value : value.join(',')).split(',')) {
    const name = token.trim().toLowerCase()
    if (name !== '' && !alwaysStripped(name)) (names ??= new Set()).add(name)
  }
  return names
}

/**
 * Builds the headers sent upstream for an allowed request.
 *
 * Iterates `req.headers` once: Node has already lowercased the names, and it joins repeated
 * lines the way RFC 9110 §5.3 allows (`, `; `cookie` with `; ` as RFC 6265 §5.4 asks; `set-cookie`
 * kept as an array), so the upstream sees exactly the header values the gateway checked.
 *
 * The gateway's own headers are written after the client's are filtered, so neither a client header
 * of the same name nor a name listed in the client's `Connection` header can displace them. Injected
 * credentials replace any client header of the same name; the forwarding and identity headers are
 * written last and win even over a credential of the same name.
 */
export function buildUpstreamHeaders(req: IncomingMessage, ctx: UpstreamHeaderContext): OutgoingHttpHeaders {
  const src = req.headers
  const declaredHopByHop = connectionOptions(src.connection, isStrippedFromRequest)
  const out: OutgoingHttpHeaders = {}

  const injected = ctx.inject.length === 0 ? undefined : injectedNames(ctx.inject)
  for (const name of Object.keys(src)) {
    if (isStrippedFromRequest(name) || declaredHopByHop?.has(name) === true) continue
    if (NOT_PLAIN.test(name)) {
      if (isStrippedVariant(name, injected ?? NONE)) continue
    } else if (injected?.has(name) === true) {
      // A credential configured as `X_Upstream_Token`: the client's `X-Upstream-Token` is its twin.
      continue
    }
    out[name] = src[name]
  }

  if (ctx.upgrade) {
    // RFC 6455 §4.1: the handshake needs both, and `Connection` must name `Upgrade` for this hop.
    out.connection = 'upgrade'
    if (src.upgrade !== undefined) out.upgrade = src.upgrade
  }

  for (const [name, value] of ctx.inject) out[name] = value

  out['x-forwarded-for'] = ctx.clientIp
  out['x-forwarded-proto'] = ctx.proto
  out['x-forwarded-host'] = ctx.host
  out['x-request-id'] = ctx.requestId
  out['x-jit-subject'] = ctx.identity.subject
  out['x-jit-grant'] = ctx.identity.grantId
  out.host = ctx.upstreamHost
  return out
}

/** Response headers as undici parses them: names lowercased, repeated fields as arrays. */
export type ParsedHeaders = Readonly<Record<string, string | string[] | undefined>>

/**
 * Builds the response headers sent to the client from the upstream's: hop-by-hop headers and the
 * ones the upstream's `Connection` header names are dropped (Node frames the client's response
 * itself); every `set-cookie` line stays its own array entry.
 */
export function buildDownstreamHeaders(upstream: ParsedHeaders): OutgoingHttpHeaders {
  const declaredHopByHop = connectionOptions(upstream.connection, isHopByHop)
  const out: OutgoingHttpHeaders = {}
  for (const name of Object.keys(upstream)) {
    if (isHopByHop(name) || declaredHopByHop?.has(name) === true) continue
    out[name] = upstream[name]
  }
  return out
}

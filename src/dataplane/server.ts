/**
 * The data plane listener: sub-processor traffic only. Per request:
 * decide (route → token → grant → scope) → forward or deny → audit + metrics.
 * WebSocket upgrades pass the same decision and are then tracked until their grant ends.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import type { Decider, Decision, Deny } from '../decision/decide.js'
import type { DenyCode } from '../decision/codes.js'
import { DENY_CODES } from '../decision/codes.js'
import type { ForwardControl, Forwarder, ForwardOutcome, ForwardTarget } from '../forward/forwarder.js'
import { buildUpstreamHeaders } from '../forward/headers.js'
import { upstreamPath } from '../policy/policy.js'
import { bounded, type AuditLog } from '../audit/audit-log.js'
import type { GatewayMetrics } from '../metrics/metrics.js'
import { writeDeny, writeDenyToSocket } from './respond.js'
import type { ConnectionRegistry } from './connections.js'
import type { Grant } from '../grants/types.js'
import { clientAddress, pathOfTarget } from '../util/request.js'

export interface DataPlaneDeps {
  readonly decider: Decider
  readonly forwarder: Forwarder
  readonly audit: AuditLog
  readonly metrics: GatewayMetrics
  readonly connections: ConnectionRegistry
  readonly log: Logger
  readonly upstreamTimeoutMs: number
  /** Requests one grant may have in flight at once; 0 = no limit. */
  readonly maxInflightPerGrant: number
  readonly publicProto: 'http' | 'https'
  /** The clock grants' expiries are read against; default Date.now. */
  readonly now?: () => number
}

/** One forwarded request in flight: what it is (for the policy recheck), how to end it early, and why it was. */
interface InFlightCall {
  readonly grant: Grant
  readonly method: string
  readonly path: string
  readonly res: ServerResponse
  control: ForwardControl | undefined
  cut: { readonly code: DenyCode; readonly detail: string } | undefined
}

interface GrantFlight {
  expiresAt: number
  readonly calls: Set<InFlightCall>
}

/** How often requests in flight are held against their grants' expiry and the policy in force. */
const CUT_SWEEP_MS = 1000

export interface DataPlane {
  readonly server: Server
  /**
   * Cuts the requests of a grant that are in flight (its revocation, from any replica): each is
   * answered with `code` if its response has not started, else its connection is cut, and its
   * upstream request is dropped; their `access.allowed` events carry `code` and `detail`.
   * Returns how many were cut.
   */
  cutGrant(grantId: string, code: DenyCode, detail: string): number
  /** The grant's expiry moved (an extension): requests in flight live until then. */
  extendGrant(grantId: string, expiresAt: number): void
  /** Requests and WebSocket connections being handled right now (until their audit event is written). */
  inflight(): number
  /**
   * Resolves when every handler in flight has finished, audit event included, or after
   * `timeoutMs`; resolves with the number still running.
   */
  settled(timeoutMs: number): Promise<number>
}

export function createDataPlane(deps: DataPlaneDeps): DataPlane {
  const { decider, forwarder, audit, metrics, log } = deps
  const countRequest = metrics.countRequest
  const decisionSeconds = { allow: metrics.decisionSeconds.child('allow'), deny: metrics.decisionSeconds.child('deny') }
  const observeDecision = (decision: 'allow' | 'deny', started: number): void => decisionSeconds[decision].observe((performance.now() - started) / 1000)
  // A handler counts as in flight until its audit event is written (not merely until the response
  // closes): graceful shutdown waits on these so no decision's event is lost or written late. A
  // count, not a set of promises: nothing is chained onto each request's handler.
  let running = 0
  let idle: (() => void)[] = []
  function enter(): void {
    running++
  }
  function leave(): void {
    if (--running > 0 || idle.length === 0) return
    const waiting = idle
    idle = []
    for (const wake of waiting) wake()
  }

  // Forwarded requests in flight per grant: one vendor's stalled calls must not hold every
  // upstream connection of a resource (the pool has a fixed number per origin), and none outlives
  // its grant: a revocation (cutGrant) or the grant's end (the sweep below) cuts them.
  const inFlight = new Map<string, GrantFlight>()
  const maxInflight = deps.maxInflightPerGrant
  const now = deps.now ?? Date.now

  /**
   * A refusal. One that ends its connection (Node ends it after refusing an `Expect: 100-continue`
   * request, whose body may still come) marks it: requests pipelined behind it are not forwarded.
   */
  function refuse(res: ServerResponse, code: DenyCode, requestId: string): void {
    writeDeny(res, code, requestId)
    if (closesConnection(res)) endsAfterRefusal.add(res.req.socket)
  }

  function cutCall(call: InFlightCall, code: DenyCode, detail: string): boolean {
    if (call.cut !== undefined) return false
    call.cut = { code, detail }
    // A response under way is cut with its connection: requests pipelined behind it on that
    // connection end with it, and their events say who ended it.
    if (call.res.headersSent) cutByGateway.add(call.res.socket ?? call.res.req.socket)
    call.control?.cancel(detail)
    return true
  }

  function cutGrant(grantId: string, code: DenyCode, detail: string): number {
    const flight = inFlight.get(grantId)
    if (flight === undefined) return 0
    let n = 0
    for (const call of flight.calls) if (cutCall(call, code, detail)) n++
    return n
  }

  // Once a second: requests whose grant has ended since they were let through (a long download, a
  // slow upload) are cut, and so are those the policy in force no longer allows (a window enforced
  // at use that closed, a contract that ended, an entitlement a reload removed), as open
  // WebSockets are.
  const sweep = setInterval(() => {
    if (inFlight.size === 0) return
    const t = now()
    for (const [grantId, flight] of inFlight) {
      if (flight.expiresAt <= t) {
        cutGrant(grantId, 'grant_not_found', 'grant expired while the request was in flight')
        continue
      }
      for (const call of flight.calls) {
        if (call.cut !== undefined) continue
        const denied = decider.stillEntitled(call.grant, call.method, call.path)
        if (denied !== undefined) cutCall(call, denied.code, `no longer allowed while the request was in flight: ${denied.detail}`)
      }
    }
  }, CUT_SWEEP_MS)
  sweep.unref()

  // Connections a refusal on them ends (after it is sent): requests pipelined behind it are not forwarded.
  const endsAfterRefusal = new WeakSet<Socket>()

  // Connections whose bytes after a `Connection: close` request were recorded as ignored.
  const ignoredAfterClose = new WeakSet<Socket>()

  // Connections the gateway cut because of a later request on them: the earlier request's event
  // then says so, rather than blaming the client for leaving.
  const cutByGateway = new WeakSet<object>()
  function cut(socket: Duplex): void {
    cutByGateway.add(socket)
    socket.destroy()
  }

  async function decideSafely(req: IncomingMessage, upgrade: boolean): Promise<Decision> {
    try {
      return await decider.decide({ method: req.method ?? 'GET', url: req.url ?? '', host: req.headers.host, rawHeaders: req.rawHeaders, upgrade })
    } catch (err) {
      // A bug, not a denial reason: fail closed and say so loudly.
      log.error({ err }, 'decision failed')
      return { allow: false, code: 'internal_error', detail: 'decision failed' }
    }
  }

  function recordDeny(req: IncomingMessage, clientIp: string, d: Deny, requestId: string, started: number, protocol: 'http' | 'websocket'): void {
    countRequest(d.resource?.id ?? '', 'deny', d.code)
    audit.emit('access.denied', {
      request_id: requestId,
      ...(d.subject !== undefined ? { subject: d.subject } : {}),
      ...(d.grantId !== undefined ? { grant_id: d.grantId } : {}),
      ...(d.resource ? { resource: d.resource.id } : {}),
      method: bounded(req.method ?? ''),
      path: d.auditPath ?? d.path ?? bounded(pathOfTarget(req.url ?? '')),
      status: DENY_CODES[d.code].status,
      code: d.code,
      detail: d.detail,
      client_ip: clientIp,
      duration_ms: elapsed(started),
      protocol,
    })
  }

  /** The first use of a grant with a claim-by window started its clock (decided once, across replicas). */
  function recordClaim(clientIp: string, d: Decision & { allow: true }, requestId: string): void {
    const claimedAt = d.grant.claim?.claimedAt
    if (d.claimed !== true || claimedAt === undefined) return
    audit.emit('grant.claimed', {
      request_id: requestId,
      actor: d.grant.subject,
      subject: d.grant.subject,
      grant_id: d.grant.id,
      resource: d.resource.id,
      claimed_at: new Date(claimedAt).toISOString(),
      expires_at: new Date(d.grant.expiresAt).toISOString(),
      client_ip: clientIp,
    })
  }

  function targetFor(req: IncomingMessage, clientIp: string, d: Decision & { allow: true }, requestId: string, upgrade: boolean): ForwardTarget {
    return {
      origin: d.resource.origin,
      path: upstreamPath(d.resource, d.path) + d.query,
      timeoutMs: d.resource.timeoutMs ?? deps.upstreamTimeoutMs,
      headers: buildUpstreamHeaders(req, {
        clientIp,
        proto: deps.publicProto,
        host: req.headers.host ?? '',
        requestId,
        identity: { subject: d.grant.subject, grantId: d.grant.id },
        inject: d.resource.inject,
        upstreamHost: d.resource.upstreamHost,
        upgrade,
      }),
    }
  }

  /**
   * `expectContinue`: the client sent `Expect: 100-continue` and holds its body back until told to
   * send it. It is told only once the request is allowed: a refused one never uploads its body
   * (Node then closes the connection after the refusal, since the body may still come).
   */
  async function onRequest(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): Promise<void> {
    const started = performance.now()
    const requestId = randomUUID()
    const clientIp = clientAddress(req)
    const connection = req.socket
    const d = await decideSafely(req, false)
    observeDecision(d.allow ? 'allow' : 'deny', started)
    if (!d.allow) {
      if (!res.headersSent && !res.destroyed) refuse(res, d.code, requestId)
      recordDeny(req, clientIp, d, requestId, started, 'http')
      return
    }
    const grantId = d.grant.id
    let flight = inFlight.get(grantId)
    const inflight = flight?.calls.size ?? 0
    if (maxInflight > 0 && inflight >= maxInflight) {
      const busy: Deny = { allow: false, code: 'too_many_requests', detail: `${inflight} requests of this grant in flight`, resource: d.resource, subject: d.grant.subject, grantId, path: d.path, ...(d.auditPath !== undefined ? { auditPath: d.auditPath } : {}) }
      if (!res.headersSent && !res.destroyed) refuse(res, busy.code, requestId)
      recordDeny(req, clientIp, busy, requestId, started, 'http')
      return
    }
    recordClaim(clientIp, d, requestId)
    // The client learns the request id on allowed responses too, to quote it to the operator.
    res.setHeader('x-request-id', requestId)
    if (expectContinue) res.writeContinue()
    let outcome: ForwardOutcome
    let cutCode: DenyCode | undefined
    if (cutByGateway.has(connection) || endsAfterRefusal.has(connection) || queuedBehindClosingResponse(connection, res)) {
      // Pipelined behind a response that ends the connection (a refusal of an `Expect:
      // 100-continue` request, one answered while its body was still coming, a cut): this answer
      // could never be sent, so nothing is forwarded for it.
      outcome = { ok: false, code: 'client_aborted', upstreamMs: 0, detail: NOT_FORWARDED_BEHIND_CLOSE, responseStarted: true }
    } else {
      // Each request has read the grant afresh: its expiry is the latest (an extension moves it).
      if (flight === undefined) inFlight.set(grantId, (flight = { expiresAt: d.grant.expiresAt, calls: new Set() }))
      else flight.expiresAt = d.grant.expiresAt
      const call: InFlightCall = { grant: d.grant, method: req.method ?? 'GET', path: d.path, res, control: undefined, cut: undefined }
      flight.calls.add(call)
      try {
        outcome = await forwarder.forward(req, res, targetFor(req, clientIp, d, requestId, false), call)
      } finally {
        flight.calls.delete(call)
        if (flight.calls.size === 0 && inFlight.get(grantId) === flight) inFlight.delete(grantId)
      }
      cutCode = call.cut?.code
    }
    metrics.upstreamSeconds.observe(d.resource.id, outcome.upstreamMs / 1000)
    let code: DenyCode | 'ok' = 'ok'
    let status: number
    let detail = ''
    if (outcome.ok) {
      status = outcome.status
    } else {
      const failed: DenyCode = outcome.code === 'cancelled' ? (cutCode ?? 'internal_error') : outcome.code
      code = failed
      status = DENY_CODES[failed].status
      detail = code === 'client_aborted' && cutByGateway.has(connection) ? CUT_BY_GATEWAY : outcome.detail
      if (!outcome.responseStarted && !res.headersSent && !res.destroyed) {
        // The rest of a body still on its way would only be read to be thrown away: the
        // connection ends with this answer.
        if (!req.complete) {
          res.shouldKeepAlive = false
          endsAfterRefusal.add(connection)
        }
        writeDeny(res, failed, requestId)
      }
    }
    countRequest(d.resource.id, 'allow', code)
    audit.emit('access.allowed', {
      request_id: requestId,
      subject: d.grant.subject,
      grant_id: d.grant.id,
      resource: d.resource.id,
      method: bounded(req.method ?? ''),
      path: d.auditPath ?? d.path,
      status,
      ...(code !== 'ok' ? { code, detail: bounded(detail) } : {}),
      client_ip: clientIp,
      duration_ms: elapsed(started),
      upstream_ms: round(outcome.upstreamMs),
      protocol: 'http',
    })
  }

  async function onUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const started = performance.now()
    const requestId = randomUUID()
    const clientIp = clientAddress(req)
    socket.on('error', () => socket.destroy())
    if (responsePending(socket)) {
      // Pipelined behind a request still being answered: a 101 or a refusal now would be read as
      // that request's answer, and its response would then land inside the tunnel.
      cut(socket)
      const d: Deny = { allow: false, code: 'malformed_request', detail: `upgrade ${PIPELINED}` }
      recordDeny(req, clientIp, d, requestId, started, 'websocket')
      return
    }
    if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket' || req.method !== 'GET') {
      // RFC 6455 §4.1: a WebSocket handshake is a GET; anything else is not one this gateway serves.
      const what = req.method !== 'GET' ? `${bounded(req.method ?? '')} with upgrade` : 'upgrade'
      const d: Deny = { allow: false, code: 'upgrade_not_supported', detail: `${what} ${bounded(req.headers.upgrade ?? '')}` }
      writeDenyToSocket(socket, d.code, requestId)
      recordDeny(req, clientIp, d, requestId, started, 'websocket')
      return
    }
    const d = await decideSafely(req, true)
    observeDecision(d.allow ? 'allow' : 'deny', started)
    if (!d.allow) {
      writeDenyToSocket(socket, d.code, requestId)
      recordDeny(req, clientIp, d, requestId, started, 'websocket')
      return
    }
    recordClaim(clientIp, d, requestId)
    const result = await forwarder.upgrade(req, socket, head, targetFor(req, clientIp, d, requestId, true))
    const base = {
      request_id: requestId,
      subject: d.grant.subject,
      grant_id: d.grant.id,
      resource: d.resource.id,
      method: bounded(req.method ?? ''),
      path: d.auditPath ?? d.path,
      client_ip: clientIp,
      protocol: 'websocket' as const,
    }
    if (!result.ok) {
      writeDenyToSocket(socket, result.code, requestId)
      countRequest(d.resource.id, 'allow', result.code)
      audit.emit('access.allowed', {
        ...base,
        status: DENY_CODES[result.code].status,
        code: result.code,
        detail: bounded(result.detail),
        duration_ms: elapsed(started),
      })
      return
    }
    countRequest(d.resource.id, 'allow', 'ok')
    audit.emit('access.allowed', { ...base, status: 101, duration_ms: elapsed(started) })
    metrics.websockets.inc({ resource: d.resource.id })
    const closed = deps.connections.track(d.grant.id, d.grant.expiresAt, result.handle, () =>
      decider.stillEntitled(d.grant, req.method ?? 'GET', d.path),
    )
    // A revocation or an extension while the upstream took its time to answer the handshake found
    // no connection to act on: the grant is read once more, now that this one is tracked (later
    // changes reach it through the store's events). A store that cannot say closes it: fail closed.
    decider.lookup(d.grant.id).then(
      (now) => {
        if (now.status === 'active') {
          if (now.grant.expiresAt !== d.grant.expiresAt) deps.connections.extendGrant(d.grant.id, now.grant.expiresAt)
        } else if (now.status === 'revoked') deps.connections.closeGrant(d.grant.id, 'grant_revoked', 'grant revoked')
        else deps.connections.closeGrant(d.grant.id, 'grant_expired', 'grant expired')
      },
      () => deps.connections.closeOne(d.grant.id, result.handle, 'store_unavailable', 'grant store unavailable'),
    )
    const reason = await closed
    metrics.websockets.dec({ resource: d.resource.id })
    audit.emit('connection.closed', { ...base, reason, duration_ms: elapsed(started) })
  }

  async function handleRequest(req: IncomingMessage, res: ServerResponse, expectContinue: boolean): Promise<void> {
    enter()
    try {
      await onRequest(req, res, expectContinue)
    } catch (err) {
      log.error({ err }, 'request handling failed')
      if (!res.headersSent) res.writeHead(500).end()
      else res.destroy()
    } finally {
      leave()
    }
  }

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    enter()
    try {
      await onUpgrade(req, socket, head)
    } catch (err) {
      log.error({ err }, 'upgrade handling failed')
      socket.destroy()
    } finally {
      leave()
    }
  }

  const server = createServer({ requestTimeout: 0 }, (req, res) => void handleRequest(req, res, false))
  // With a listener here Node no longer answers `100 Continue` by itself (see onRequest).
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => void handleRequest(req, res, true))
  // Any other expectation: refused (RFC 9110 §10.1.1: 417) like any other request, coded and
  // audited, rather than by Node on its own; the body it holds back may follow, so the connection
  // ends with the answer.
  server.on('checkExpectation', (req: IncomingMessage, res: ServerResponse) => {
    const started = performance.now()
    const requestId = randomUUID()
    const d: Deny = { allow: false, code: 'expectation_failed', detail: `Expect: ${bounded(req.headers.expect ?? '')}` }
    res.shouldKeepAlive = false
    refuse(res, d.code, requestId)
    recordDeny(req, clientAddress(req), d, requestId, started, 'http')
  })
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => void handleUpgrade(req, socket, head))
  server.on('clientError', (err: NodeJS.ErrnoException & { rawPacket?: Buffer }, socket: Duplex) => {
    // Malformed HTTP never reaches the pipeline: it is denied here, coded and audited like any
    // other denial, where the socket can still be answered.
    if (err.code === 'ECONNRESET' || !socket.writable) return void socket.destroy()
    const conn = socket as Socket
    if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') {
      // The client never finished its headers (headersTimeout): a stalled connection, not a request.
      if (responsePending(socket)) return void socket.destroy()
      return void socket.end('HTTP/1.1 408 Request Timeout\r\nconnection: close\r\ncontent-length: 0\r\n\r\n')
    }
    // Words go only to a connection nothing has been answered on and no response is pending for.
    // Otherwise the refusal would land inside an earlier response, or after it as an answer nobody
    // asked for (bad chunk bytes in the body of a request already answered): the connection is cut.
    const untouched = !responsePending(socket) && conn.bytesWritten === 0
    if (err.code === 'HPE_INVALID_EOF_STATE' && !untouched) {
      // The client hung up in the middle of a body: the request it belongs to has its own event
      // (client_aborted); this is no second request.
      return void socket.destroy()
    }
    if (err.code === 'HPE_CLOSED_CONNECTION') {
      // Bytes after a request that said `Connection: close` (a request pipelined behind it, say):
      // RFC 9112 §9.6, they are not processed, and the connection closes once that request is
      // answered. Cutting it now would lose that answer. Recorded once, never answered, and no
      // more is read (Node would report each later packet again).
      conn.pause()
      if (ignoredAfterClose.has(conn)) return
      ignoredAfterClose.add(conn)
      const requestId = randomUUID()
      countRequest('', 'deny', 'malformed_request')
      audit.emit('access.denied', {
        request_id: requestId,
        method: '',
        path: '',
        status: DENY_CODES.malformed_request.status,
        code: 'malformed_request',
        detail: 'data after a request with Connection: close: ignored, the connection closes once that request is answered',
        client_ip: conn.remoteAddress ?? '',
        duration_ms: 0,
        protocol: 'http',
      })
      return
    }
    const requestId = randomUUID()
    const code: DenyCode = err.code === 'HPE_HEADER_OVERFLOW' ? 'request_header_too_large' : 'malformed_request'
    if (untouched) writeDenyToSocket(socket, code, requestId)
    else cut(socket)
    countRequest('', 'deny', code)
    // The request line is audited only from the connection's very first packet: a later packet
    // may start with an earlier request, or with bytes a client shaped to look like a request line.
    const firstPacket = untouched && err.rawPacket !== undefined && conn.bytesRead === err.rawPacket.length
    const { method, path } = firstPacket ? requestLineOf(err.rawPacket) : NO_REQUEST_LINE
    audit.emit('access.denied', {
      request_id: requestId,
      method,
      path,
      status: DENY_CODES[code].status,
      code,
      detail: untouched ? bounded(err.code ?? 'parse error') : `${bounded(err.code ?? 'parse error')}: connection cut, an earlier request on it was answered or in progress`,
      client_ip: conn.remoteAddress ?? '',
      duration_ms: 0,
      protocol: 'http',
    })
  })
  server.on('connect', (req: IncomingMessage, socket: Duplex) => {
    // CONNECT asks for a tunnel to any host: a forward proxy's job, never this gateway's.
    const requestId = randomUUID()
    socket.on('error', () => socket.destroy())
    const pending = responsePending(socket)
    const d: Deny = { allow: false, code: 'connect_not_supported', detail: pending ? `CONNECT ${PIPELINED}` : 'CONNECT' }
    if (pending) cut(socket)
    else writeDenyToSocket(socket, d.code, requestId)
    recordDeny(req, clientAddress(req), d, requestId, performance.now(), 'http')
  })
  server.on('close', () => clearInterval(sweep))
  return {
    server,
    cutGrant,
    extendGrant(grantId, expiresAt) {
      const flight = inFlight.get(grantId)
      if (flight !== undefined && expiresAt > flight.expiresAt) flight.expiresAt = expiresAt
    },
    inflight: () => running,
    async settled(timeoutMs) {
      if (running === 0) return 0
      // Until the count reaches zero, whenever that is: a request can still arrive on a connection
      // accepted before the listener closed, and its handler (and audit event) counts as much as
      // the ones already running.
      let timer: NodeJS.Timeout | undefined
      await new Promise<void>((resolve) => {
        idle.push(resolve)
        timer = setTimeout(resolve, timeoutMs)
      })
      clearTimeout(timer)
      return running
    },
  }
}

const PIPELINED = 'pipelined behind a request still being answered: connection cut'
const CUT_BY_GATEWAY = 'connection cut by the gateway: another request on it was refused or cut'
const NOT_FORWARDED_BEHIND_CLOSE = 'pipelined behind a response that closes the connection: not forwarded'

/** A response to an earlier request on this connection is still being written. */
function responsePending(socket: Duplex): boolean {
  return (socket as Duplex & { _httpMessage?: unknown })._httpMessage != null
}

/**
 * `res` waits behind another request's response on its connection, and that one closes the
 * connection: `res` would never be sent. (A connection already gone is the forwarder's to see.)
 */
function queuedBehindClosingResponse(socket: Socket, res: ServerResponse): boolean {
  const current = (socket as Socket & { _httpMessage?: ServerResponse | null })._httpMessage
  return current != null && current !== res && closesConnection(current)
}

/**
 * Node ends the connection after `res`: keep-alive is off, or (Node's `_last`, set with the head)
 * the response is delimited by the connection's end (an HTTP/1.0 response without a length).
 */
function closesConnection(res: ServerResponse): boolean {
  return !res.shouldKeepAlive || (res as ServerResponse & { _last?: boolean })._last === true
}

const NO_REQUEST_LINE = Object.freeze({ method: '', path: '' })

/**
 * A request line at the very start of a packet: a method token, a space and a request target
 * (origin, absolute or asterisk form), then ` HTTP/x.y` or the end of the bytes looked at (a path
 * too long to fit). Anything else (a header line, body bytes, `Bearer …`) is not a request line.
 */
const REQUEST_LINE = /^([A-Z][A-Z-]{0,31}) ((?:\/|\*|[A-Za-z][A-Za-z0-9+.-]*:\/\/)[!-~]*)(?: HTTP\/\d\.\d\r\n|$)/
const REQUEST_LINE_SCAN = 8192

/**
 * Method and path of a request the parser refused, for its audit event: what the SIEM needs to
 * see who tried what. Empty unless the packet starts with a well-formed request line.
 */
function requestLineOf(raw: Buffer | undefined): { method: string; path: string } {
  if (raw === undefined || raw.length === 0) return NO_REQUEST_LINE
  const m = REQUEST_LINE.exec(raw.subarray(0, REQUEST_LINE_SCAN).toString('latin1'))
  if (m === null) return NO_REQUEST_LINE
  return { method: m[1] as string, path: bounded(pathOfTarget(m[2] as string)) }
}

function elapsed(started: number): number {
  return round(performance.now() - started)
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100
}

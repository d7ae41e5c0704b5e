/**
 * The forwarding stage: moves an allowed request to its upstream and the response back.
 *
 * Plain HTTP goes through undici (one keep-alive `Pool` per origin, the core `dispatch` API, no
 * intermediate streams). WebSocket handshakes go through http-proxy, whose ws pass is taken over
 * where it would otherwise answer the client itself (see {@link UpgradeExchange}). Neither path
 * throws or writes an error response: failures come back as a {@link ForwardFailure} and the caller
 * answers the client with the code's JSON error.
 */

import { randomFillSync } from 'node:crypto'
import { createRequire } from 'node:module'
import type { ClientRequest, IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { performance } from 'node:perf_hooks'
import httpProxy from 'http-proxy'
import { Pool, buildConnector } from 'undici'
import type { Dispatcher } from 'undici'
import { buildDownstreamHeaders, type ParsedHeaders } from './headers.js'

/** Where and how to send one request. */
export interface ForwardTarget {
  /** Scheme, host and port only, e.g. `http://127.0.0.1:9001`. */
  readonly origin: string
  /** Path and query sent upstream, byte for byte (the path the decision checked). */
  readonly path: string
  /** The upstream request headers, from `buildUpstreamHeaders`. */
  readonly headers: OutgoingHttpHeaders
  /**
   * Budget until the upstream's response headers (101 for upgrades) arrive, counted from the call,
   * or for a request with a body from the end of the upload: while the body moves, the upstream is
   * not late. An upload that stops moving for as long fails as `request_timeout` (the client sent
   * nothing) or `upstream_timeout` (the upstream read nothing).
   */
  readonly timeoutMs: number
}

/**
 * Why forwarding failed: `upstream_unavailable` (connection refused or reset, protocol error,
 * upgrade refused: 502) or `upstream_timeout` (no response headers within `timeoutMs`, or the
 * upstream stalled mid-body: 504). A client that goes away first is reported as
 * `client_aborted` (audited with nginx's 499) with `responseStarted: true`: the upstream is not to blame.
 */
export type ForwardFailureCode = 'upstream_unavailable' | 'upstream_timeout' | 'client_aborted' | 'request_timeout'

/** `C`: an HTTP forward may also end `cancelled` (see {@link ForwardControl}); an upgrade may not. */
export interface ForwardFailure<C extends string = ForwardFailureCode> {
  readonly ok: false
  readonly code: C
  /** Milliseconds from the call until the failure. */
  readonly upstreamMs: number
  /** For logs only (the upstream's error, status or the stage that failed); never sent to the client. */
  readonly detail: string
  /**
   * False: nothing has been written, the caller writes the error response. True: the caller must
   * not write, because the response had started (the client response has been destroyed, so the
   * client sees a broken response) or the client connection is gone: the client left, or the
   * failure came while the request body was still streaming, which ends the client connection
   * (its unread rest makes it unusable).
   */
  readonly responseStarted: boolean
}

export type ForwardOutcome =
  | {
      readonly ok: true
      readonly status: number
      /** Milliseconds from the call until the upstream's response body ended. */
      readonly upstreamMs: number
    }
  | ForwardFailure<ForwardFailureCode | 'cancelled'>

/** An open WebSocket tunnel. */
export interface UpgradeHandle {
  /**
   * Closes the tunnel from the gateway's side: a close frame with `code` and `reason` (truncated to
   * 123 bytes of UTF-8) to the client and, masked, to the upstream, each sent at the next frame
   * boundary of its direction so it never lands inside a frame in flight; then both sockets end.
   * Codes that may not be sent (RFC 6455 §7.4) go out as 1008. Idempotent.
   */
  close(code: number, reason: string): void
  /** Resolves once both sockets have closed, whoever ended the connection. Never rejects. */
  readonly closed: Promise<void>
}

/** A forward in progress, for its caller to end early. */
export interface ForwardControl {
  /**
   * Ends it on the caller's behalf (the grant behind it ended): the upstream request is dropped and
   * the forward settles as `cancelled` with `detail`. A response not started yet is left to the
   * caller, as for any failure; one started is cut.
   */
  cancel(detail: string): void
}

export type UpgradeOutcome = { readonly ok: true; readonly handle: UpgradeHandle; readonly status: 101 } | ForwardFailure

export interface Forwarder {
  /**
   * Forwards one HTTP request: streams the body up and the response (status, end-to-end headers,
   * body) back; no redirect is followed. Resolves when the response has been written or forwarding
   * has failed; never rejects. `holder.control` is set, as the forward starts, to what ends it early.
   */
  forward(req: IncomingMessage, res: ServerResponse, target: ForwardTarget, holder?: { control: ForwardControl | undefined }): Promise<ForwardOutcome>
  /**
   * Forwards a WebSocket handshake (GET with `Upgrade: websocket` in `target.headers`) and, once
   * the upstream answers 101, tunnels the connection. On failure nothing has been written to
   * `socket`: the caller answers with an HTTP error on it if it is still writable. Anything but
   * a WebSocket handshake fails as `upstream_unavailable` without contacting the upstream; the
   * pipeline should reject those earlier. Never rejects.
   */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer, target: ForwardTarget): Promise<UpgradeOutcome>
  /**
   * Closes every pool once its in-flight requests are done; later calls fail as
   * `upstream_unavailable`. Open tunnels belong to their handles and are left to them.
   */
  close(): Promise<void>
}

export interface ForwarderOptions {
  /** Upper bound of open connections to one origin. Default 128. */
  readonly connectionsPerOrigin?: number
  /** How long an idle upstream connection is kept for reuse. Default 4000 (undici's). */
  readonly keepAliveTimeoutMs?: number
  /** TCP (and TLS) connect budget, also bounded by each request's `timeoutMs`. Default 5000. */
  readonly connectTimeoutMs?: number
  /**
   * How long a client may leave the response unread (the gateway's send buffer full, the upstream
   * paused) before its connection is cut and the upstream request dropped. Default 60000. Any byte
   * the kernel takes re-arms it; a reader so slow that the connection's send buffer stays full
   * that long counts as not reading (the kernel reports room only in large steps).
   */
  readonly sendTimeoutMs?: number
}

/** How long a closing tunnel waits for peers to finish their close handshakes before cutting them off. */
const TUNNEL_CLOSE_GRACE_MS = 5_000

/** The failure detail when the client went away first (no one is left to answer). */
const CLIENT_GONE = 'client closed the connection'
/** The failure detail when the connection ended before a response queued on it could be sent. */
const NEVER_SENT = 'the connection ended before this pipelined response could be sent'

/** Node's own request-target check (`INVALID_PATH_REGEX`): http-proxy's request line is not validated again. */
const INVALID_PATH = /[^\u0021-\u00ff]/

/*
 * undici 7 (the line that runs on Node 20) throws an uncatchable AssertionError from a socket's
 * 'end' listener when an upstream closes its connection after a response (`Connection: close`,
 * HTTP/1.0, a close-delimited body) while the response parser is paused for backpressure
 * (nodejs/undici#5360, fixed in undici 8, which needs Node 22). A departed client did take the
 * gateway down that way: a write to its destroyed response refused the bytes, the parser was
 * paused for a 'drain' that never comes, and the upstream's FIN ended the process. The handler
 * now never pauses for a departed client (see `onResponseData`); as a second line, every upstream
 * socket gets an 'end' listener ahead of undici's that resumes a still-paused parser, with
 * {@link upstreamEnding} set so the handler does not pause it again: the response's last bytes,
 * already in memory, go to Node's buffer for the client, and undici finishes the response as it
 * would have unpaused. Should undici's internals change shape, the listener does nothing.
 */
const { kParser } = createRequire(import.meta.url)('undici/lib/core/symbols.js') as { kParser: symbol }

interface PausableParser {
  readonly paused: boolean
  resume(): void
}

/** True while an upstream connection's end is being processed: no response may pause then. */
let upstreamEnding = false

function resumeBeforeEnd(this: Socket): void {
  const parser = (this as Socket & Record<symbol, PausableParser | null | undefined>)[kParser]
  if (parser == null || !parser.paused) return
  upstreamEnding = true
  try {
    parser.resume()
  } finally {
    upstreamEnding = false
  }
}

/**
 * The same assertion on a reset or a close (undici takes ECONNRESET or a close after a response
 * without keep-alive for its end): the socket is destroyed by then, so there is nothing to resume.
 * Before undici's own listener runs, its parser's `finish` is made to clear the paused flag first,
 * which is the upstream fix (nodejs/undici#5389): llhttp answers "paused" again and the response
 * ends as an error, the client's connection cut, instead of the process.
 *
 * And an unsolicited `100 Continue` (the gateway never forwards `Expect`, yet some servers send one
 * anyway): RFC 9110 §15.2 has a client parse 1xx responses it did not ask for, and undici 7 instead
 * destroys the connection ("bad response"), which answered the client 502. The parser's
 * `onHeadersComplete` hands undici a 100 as {@link UNSOLICITED_INTERIM}, an interim like any other:
 * the handler skips interims and the final response follows on the same request.
 *
 * Both patches go on the shared parser prototype, once per process, as soon as the first upstream
 * connection has a parser: on its first 'readable', before any response byte is parsed (or on an
 * error, end or close that comes first).
 */
const PARSER_GUARDED = Symbol('jitgate.parserGuarded')

/** What an unsolicited 100 is passed on as: an unassigned 1xx, which every handler reads as an interim. */
export const UNSOLICITED_INTERIM = 199

interface GuardableParser {
  paused: boolean
  finish(): unknown
  onHeadersComplete(statusCode: number, upgrade: boolean, shouldKeepAlive: boolean): number
}

/** Exported for tests only. */
export function guardParser(this: Socket): void {
  const parser = (this as Socket & Record<symbol, object | null | undefined>)[kParser]
  if (parser == null) return
  const proto = Object.getPrototypeOf(parser) as Partial<GuardableParser> & { [PARSER_GUARDED]?: true }
  if (proto[PARSER_GUARDED] === true) return
  proto[PARSER_GUARDED] = true
  const finish = proto.finish
  if (typeof finish === 'function') {
    proto.finish = function guardedFinish(this: GuardableParser) {
      if (this.paused) this.paused = false
      return finish.call(this)
    }
  }
  const onHeadersComplete = proto.onHeadersComplete
  if (typeof onHeadersComplete === 'function') {
    proto.onHeadersComplete = function guardedHeadersComplete(this: GuardableParser, statusCode, upgrade, shouldKeepAlive) {
      return onHeadersComplete.call(this, statusCode === 100 ? UNSOLICITED_INTERIM : statusCode, upgrade, shouldKeepAlive)
    }
  }
}

function guardOnFirstRead(this: Socket): void {
  if ((this as Socket & Record<symbol, unknown>)[kParser] == null) return
  this.off('readable', guardOnFirstRead)
  guardParser.call(this)
}

/**
 * True while undici handles an upstream connection's ECONNRESET. undici ends a close-delimited
 * body at a reset as it would at a close (client-h1 `onHttpSocketError`), so a body cut short looks
 * whole; only a close says it is. Set before undici's 'error' listener runs, cleared once it has.
 */
let upstreamResetting = false

function clearResetting(): void {
  upstreamResetting = false
}

function noteReset(err: NodeJS.ErrnoException): void {
  if (err.code !== 'ECONNRESET') return
  upstreamResetting = true
  queueMicrotask(clearResetting)
}

/** The upstream connector with the guards above. Exported for tests only. */
export function guardedConnector(timeoutMs: number): buildConnector.connector {
  const connect = buildConnector({ timeout: timeoutMs })
  return (options, callback) =>
    connect(options, (...args) => {
      const socket = args[1]
      if (socket != null) {
        socket.prependListener('readable', guardOnFirstRead)
        socket.prependListener('end', guardParser)
        socket.prependListener('end', resumeBeforeEnd)
        socket.prependListener('error', guardParser)
        socket.prependListener('error', noteReset)
        socket.prependListener('close', guardParser)
      }
      callback(...args)
    })
}

/** Creates a forwarder. Each instance owns its pools; tests build their own. */
export function createForwarder(opts: ForwarderOptions = {}): Forwarder {
  const poolOptions: Pool.Options = {
    connections: opts.connectionsPerOrigin ?? 128,
    keepAliveTimeout: opts.keepAliveTimeoutMs ?? 4_000,
    connect: guardedConnector(opts.connectTimeoutMs ?? 5_000),
  }
  const sendTimeoutMs = opts.sendTimeoutMs ?? 60_000
  const pools = new Map<string, Pool>()
  const proxy = httpProxy.createProxyServer({ ws: true, xfwd: false })
  // http-proxy emits `proxyReqWs` synchronously inside `proxy.ws()`, with the IncomingMessage but
  // nothing else of ours: this map finds the exchange that is being started.
  const starting = new WeakMap<IncomingMessage, UpgradeExchange>()
  proxy.on('proxyReqWs', (proxyReq, req) => starting.get(req)?.attach(proxyReq))
  let closed = false

  function poolFor(origin: string): Pool {
    let pool = pools.get(origin)
    if (pool === undefined) {
      pool = new Pool(origin, poolOptions)
      pools.set(origin, pool)
    }
    return pool
  }

  return {
    forward(req, res, target, holder) {
      const started = performance.now()
      if (closed) return Promise.resolve(failure('upstream_unavailable', started, 'forwarder closed', false))
      // The client left while the request was being decided: its 'close' has been emitted already,
      // and nobody would read the upstream's answer.
      if (res.destroyed || req.socket.destroyed) return Promise.resolve(failure('client_aborted', started, CLIENT_GONE, true))
      let pool: Pool
      try {
        pool = poolFor(target.origin)
      } catch (err) {
        return Promise.resolve(failure('upstream_unavailable', started, describe(err), false))
      }
      return new Promise((resolve) => {
        const body = hasRequestBody(req)
        const exchange = new HttpExchange(req, res, body, target.timeoutMs, sendTimeoutMs, started, resolve)
        if (holder !== undefined) holder.control = exchange
        pool.dispatch(
          {
            path: target.path,
            method: req.method ?? 'GET',
            headers: target.headers as IncomingHttpHeaders,
            body: body ? req : null,
          },
          exchange,
        )
      })
    },

    upgrade(req, socket, head, target) {
      const started = performance.now()
      const upgradeHeader = target.headers.upgrade
      if (closed) return Promise.resolve(failure('upstream_unavailable', started, 'forwarder closed', false))
      if (req.method !== 'GET' || typeof upgradeHeader !== 'string' || upgradeHeader.toLowerCase() !== 'websocket') {
        // http-proxy would silently destroy the socket (ws-incoming.js checkMethodAndHeader).
        return Promise.resolve(failure('upstream_unavailable', started, 'not a WebSocket handshake', false))
      }
      if (INVALID_PATH.test(target.path)) {
        return Promise.resolve(failure('upstream_unavailable', started, 'invalid request path', false))
      }
      return new Promise((resolve) => {
        new UpgradeExchange(req, socket, target, started, resolve).start(proxy, starting, head)
      })
    },

    async close() {
      if (closed) return
      closed = true
      // The http-proxy instance holds nothing to release: each handshake uses its own connection
      // (agent: false) and nothing listens. Only the pools own sockets.
      const all = [...pools.values()]
      pools.clear()
      await Promise.all(all.map((pool) => pool.close()))
    },
  }
}

function failure<C extends ForwardFailureCode | 'cancelled'>(code: C, started: number, detail: string, responseStarted: boolean): ForwardFailure<C> {
  return { ok: false, code, upstreamMs: performance.now() - started, detail, responseStarted }
}

function describe(err: unknown): string {
  if (!(err instanceof Error)) return String(err)
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' ? `${code}: ${err.message}` : err.message
}

/** undici's timeout errors; any other upstream error means the upstream is not usable. */
function failureCode(err: unknown): ForwardFailureCode {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT'
    ? 'upstream_timeout'
    : 'upstream_unavailable'
}

/**
 * RFC 9112 §6.3: a request has a body exactly when it carries Transfer-Encoding or a Content-Length
 * (a zero length sends no bytes). Handing undici `req` only then keeps bodiless requests from
 * being sent chunked; a chunked DELETE or OPTIONS body is streamed like any other.
 */
function hasRequestBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length']
  return req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0')
}

/**
 * One HTTP request in flight: the undici handler that streams the response into `res`, with the
 * header-timeout timer and the client-abort watch. Settles exactly once.
 */
class HttpExchange implements Dispatcher.DispatchHandler, ForwardControl {
  private controller: Dispatcher.DispatchController | undefined
  private readonly timer: NodeJS.Timeout
  /** Runs while the upstream is paused for a client that has not read what was sent. */
  private sendTimer: NodeJS.Timeout | undefined
  /** What the client connection had handed to the kernel when {@link sendTimer} was last armed. */
  private deliveredMark = 0
  private status = 0
  private settled = false
  private abandoned = false
  /** Kept: Node clears `req.socket` once the request is destroyed. */
  private readonly clientSocket: Socket
  /** The request body is still coming in (see {@link onTimeout}). */
  private uploading: boolean
  /** Its response waits behind another on the connection (see the constructor). */
  private readonly queued: boolean
  /** The upstream's answer, complete, while its response still waits behind another (see onResponseEnd). */
  private unsent: ForwardOutcome | undefined
  /** The client connection's `bytesRead` when the timer was last armed during the upload. */
  private readMark = 0

  constructor(
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
    hasBody: boolean,
    private readonly timeoutMs: number,
    private readonly sendTimeoutMs: number,
    private readonly started: number,
    private readonly resolve: (outcome: ForwardOutcome) => void,
  ) {
    this.clientSocket = req.socket
    this.timer = setTimeout(this.onTimeout, timeoutMs)
    res.once('close', this.onClientClose)
    // A response queued behind another on its connection (pipelining) has no socket yet, and
    // never hears of that socket closing: it listens to the socket itself.
    this.queued = res.socket == null
    if (this.queued) this.clientSocket.once('close', this.onClientClose)
    // Watching the upload never reads the body ('end' and the socket's byte count only): undici
    // is its one reader, and a 'data' listener would take chunks from it.
    this.uploading = hasBody && !req.complete
    if (this.uploading) {
      this.readMark = this.clientSocket.bytesRead
      req.once('end', this.onUploaded)
    }
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    // Called once the request is about to be written on a connection. A request given up while it
    // waited for one (timeout, client gone) can only be cancelled from here.
    if (this.abandoned) controller.abort(new Error('request abandoned before it was sent'))
    else {
      this.controller = controller
      // The upload's progress counts from here: bytes that came in while the request waited for
      // a connection were buffered, not sent.
      this.readMark = this.clientSocket.bytesRead
    }
  }

  onResponseStart(controller: Dispatcher.DispatchController, statusCode: number, headers: ParsedHeaders): void {
    // Interim responses (103 Early Hints, an unsolicited 100: Expect is not forwarded) are not
    // relayed: the final response follows on the same request.
    if (this.settled || statusCode < 200) return
    clearTimeout(this.timer)
    this.status = statusCode
    const bodiless = statusCode === 204 || statusCode === 304
    try {
      const out = buildDownstreamHeaders(headers)
      // RFC 9110 §8.6: never a Content-Length on a 204 (a 304 may carry the representation's).
      if (statusCode === 204) delete out['content-length']
      // Node's standard reason phrase: the upstream's carries no meaning (RFC 9112 §4) and could
      // hold bytes Node refuses to write.
      this.res.writeHead(statusCode, out)
    } catch (err) {
      controller.abort(err instanceof Error ? err : new Error(String(err)))
      return
    }
    if (bodiless) {
      // RFC 9112 §6.3: a 204 or 304 ends with its headers, whatever Content-Length it declares.
      // undici 7 holds a 304's (or a stray 204's) Content-Length against the empty body and fails
      // the response, after the client got its headers: the response is complete here, and an
      // error undici reports for it afterwards changes nothing (it only costs that connection).
      this.onResponseEnd()
    }
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.res.destroyed) {
      // The client is gone ('close' follows on the next tick): waiting for a 'drain' that never
      // comes would leave the upstream response paused.
      this.abandon('client_aborted', CLIENT_GONE)
      return
    }
    if (!this.res.write(chunk) && !upstreamEnding && !controller.paused) {
      controller.pause()
      this.res.once('drain', this.onDrain)
      this.deliveredMark = this.delivered()
      this.sendTimer = setTimeout(this.onSendTimeout, this.sendTimeoutMs)
    }
  }

  onResponseEnd(): void {
    if (this.settled) return
    if (upstreamResetting) {
      // A close-delimited body ended by a reset, not a close: it may be cut short, so the client
      // must not get it as whole (its chunked response is cut off instead of ended).
      this.settle(failure('upstream_unavailable', this.started, 'upstream reset the connection before the end of a close-delimited body', true))
      this.res.destroy()
      return
    }
    this.res.end()
    const done: ForwardOutcome = { ok: true, status: this.status, upstreamMs: performance.now() - this.started }
    if (this.res.socket == null && !this.res.writableFinished) {
      // Still queued behind another response on its connection: it is sent only once that one is
      // done, and only if the connection lasts (an HTTP/1.0 response without a length ends it, as
      // do refusals). Settled when it is handed to the connection, or when the connection closes.
      this.unsent = done
      this.res.once('finish', this.onQueuedSent)
      return
    }
    this.settle(done)
  }

  /** A response that waited behind another on its connection has been handed to it. */
  private readonly onQueuedSent = (): void => {
    if (this.unsent !== undefined) this.settle(this.unsent)
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.settled || this.abandoned) return
    // undici destroys a request body it is still sending, and Node the client connection with
    // it: then no error response can follow either.
    this.settle(failure(failureCode(err), this.started, describe(err), this.res.headersSent || this.clientSocket.destroyed))
    if (this.res.headersSent) this.res.destroy()
  }

  /**
   * The upstream's budget ran out, unless the request body is on its way to it: once undici sends
   * the request (not while it waits for a connection: that time is the upstream's), an upload
   * that moved since the timer was armed re-arms it, so long uploads are not cut. One that did not
   * move is the client's fault while undici reads the body (flowing: the client sent nothing) and
   * the upstream's while undici holds it back (paused: the upstream reads nothing).
   */
  private readonly onTimeout = (): void => {
    if (this.uploading && this.controller !== undefined) {
      const read = this.clientSocket.bytesRead
      if (read !== this.readMark) {
        this.readMark = read
        this.timer.refresh()
        return
      }
      if (this.req.readableFlowing === true) {
        this.abandon('request_timeout', `the client sent none of its request body for ${this.timeoutMs} ms`)
        return
      }
      this.abandon('upstream_timeout', `the upstream read none of the request body for ${this.timeoutMs} ms`)
      return
    }
    this.abandon('upstream_timeout', 'no response headers in time')
  }

  cancel(detail: string): void {
    if (this.settled) return
    this.abandon('cancelled', detail)
    if (this.res.headersSent) this.res.destroy()
  }

  /** The whole body is sent: the upstream's budget for its answer starts now. */
  private readonly onUploaded = (): void => {
    this.uploading = false
    if (!this.settled && this.status === 0) this.timer.refresh()
  }

  private readonly onClientClose = (): void => {
    this.abandon('client_aborted', this.unsent !== undefined ? NEVER_SENT : CLIENT_GONE)
  }

  /**
   * Gives up on the upstream request. A request still queued is cancelled once undici starts it
   * ({@link onRequestStart}); a running one is aborted now, which reports back through
   * `onResponseError` synchronously and may take the client connection down (see there), so the
   * outcome is settled here, after the abort.
   */
  private abandon(code: ForwardFailureCode | 'cancelled', detail: string): void {
    if (this.settled) return
    this.abandoned = true
    this.controller?.abort(new Error(detail))
    this.settle(failure(code, this.started, detail, this.res.headersSent || this.clientSocket.destroyed))
  }

  private readonly onDrain = (): void => {
    clearTimeout(this.sendTimer)
    this.controller?.resume()
  }

  /**
   * nginx's `send_timeout`: a client that stopped reading holds the upstream for no one. 'drain'
   * comes only once everything buffered is gone; a client that reads, however slowly, lets the
   * kernel take more of what is being sent, and that re-arms the timer.
   */
  private readonly onSendTimeout = (): void => {
    if (this.settled) return
    const delivered = this.delivered()
    if (delivered > this.deliveredMark) {
      this.deliveredMark = delivered
      this.sendTimer?.refresh()
      return
    }
    this.abandon('client_aborted', `no byte of the response could be sent to the client for ${this.sendTimeoutMs} ms`)
    this.res.destroy()
  }

  /**
   * Bytes the client connection has handed to the kernel: those dispatched to libuv less the part
   * of a write in progress that libuv still holds (which shrinks as the kernel takes more). Node's
   * own `bytesWritten` counts what is merely buffered. Should these internals change shape, it
   * stays 0 and only 'drain' re-arms the timer.
   */
  private delivered(): number {
    const socket = this.clientSocket as Socket & { _bytesDispatched?: number; _handle?: { writeQueueSize?: number } | null }
    return (socket._bytesDispatched ?? 0) - (socket._handle?.writeQueueSize ?? 0)
  }

  private settle(outcome: ForwardOutcome): void {
    if (this.settled) return
    this.settled = true
    clearTimeout(this.timer)
    clearTimeout(this.sendTimer)
    this.res.off('close', this.onClientClose)
    if (this.unsent !== undefined) this.res.off('finish', this.onQueuedSent)
    if (this.queued) this.clientSocket.off('close', this.onClientClose)
    if (this.uploading) this.req.off('end', this.onUploaded)
    this.resolve(outcome)
  }
}

/**
 * One WebSocket handshake through http-proxy.
 *
 * http-proxy's ws pass (lib/http-proxy/passes/ws-incoming.js `stream`) would, on a non-101
 * answer, relay the upstream's response onto the client socket itself (re-framing chunked bodies
 * wrongly), and on any upstream error end the client socket after calling back, so the caller
 * could never answer 502/504. It also has no handshake timeout, and its `open` event does not say
 * which request it belongs to. So: `proxyReqWs` (emitted synchronously inside `proxy.ws()`) hands
 * us the upstream request, which gets the exact checked path (http-proxy's `urlJoin` would collapse
 * `//`); right after `proxy.ws()` returns, http-proxy's `response` and `error` listeners on that
 * request are replaced by ours, and its `upgrade` listener stays: it writes the 101 and pipes the
 * sockets, and ours, registered after it, then reports success.
 */
class UpgradeExchange {
  private proxyReq: ClientRequest | undefined
  private timer: NodeJS.Timeout | undefined
  private settled = false

  constructor(
    private readonly req: IncomingMessage,
    private readonly socket: Duplex,
    private readonly target: ForwardTarget,
    private readonly started: number,
    private readonly resolve: (outcome: UpgradeOutcome) => void,
  ) {}

  start(proxy: httpProxy, starting: WeakMap<IncomingMessage, UpgradeExchange>, head: Buffer): void {
    // Node's server stops listening for socket errors once it hands over an upgrade; without a
    // listener a client reset would crash the process. Errors surface as 'close', acted on below.
    // The socket is not read during the handshake (its bytes belong to the tunnel), so a client
    // that leaves quietly is only noticed once the upstream answers (the tunnel then closes) or
    // the timeout fires; 'close' catches a socket destroyed meanwhile (shutdown, a write error).
    this.socket.on('error', ignoreError)
    this.socket.once('close', this.onClientClose)
    this.timer = setTimeout(this.onTimeout, this.target.timeoutMs)

    // http-proxy copies `req.headers` into the upstream request (common.js setupOutgoing), and only
    // synchronously: swap the prepared headers in for the call, then give the caller its own back.
    const clientHeaders = this.req.headers
    this.req.headers = this.target.headers as IncomingHttpHeaders
    starting.set(this.req, this)
    try {
      proxy.ws(this.req, this.socket, head, { target: this.target.origin }, ignoreError)
    } catch (err) {
      // Node's ClientRequest validates headers and throws synchronously.
      this.settle(failure('upstream_unavailable', this.started, describe(err), false))
      return
    } finally {
      this.req.headers = clientHeaders
      starting.delete(this.req)
    }

    const proxyReq = this.proxyReq
    if (proxyReq === undefined) {
      this.settle(failure('upstream_unavailable', this.started, 'http-proxy did not start the handshake', false))
      return
    }
    // Removal happens before any of these events can fire: they are all emitted asynchronously.
    // The per-call callback above then only sees upstream socket errors after the 101, when
    // http-proxy ending the client socket is right and the tunnel follows the close.
    proxyReq.removeAllListeners('response').removeAllListeners('error')
    proxyReq.on('response', this.onRefused).on('error', this.onUpstreamError).on('upgrade', this.onUpgraded)
  }

  /** `proxyReqWs`: the upstream request exists and nothing has been written yet. */
  attach(proxyReq: ClientRequest): void {
    this.proxyReq = proxyReq
    proxyReq.path = this.target.path
  }

  private readonly onRefused = (upstreamRes: IncomingMessage): void => {
    this.settle(
      failure('upstream_unavailable', this.started, `upstream refused the upgrade with ${upstreamRes.statusCode}`, false),
    )
    this.proxyReq?.destroy()
  }

  private readonly onUpstreamError = (err: Error): void => {
    this.settle(failure(failureCode(err), this.started, describe(err), false))
  }

  private readonly onUpgraded = (_upstreamRes: IncomingMessage, upstream: Duplex): void => {
    this.settle({ ok: true, handle: new Tunnel(this.socket, upstream), status: 101 })
  }

  private readonly onTimeout = (): void => {
    this.settle(failure('upstream_timeout', this.started, 'no handshake response in time', false))
    this.proxyReq?.destroy()
  }

  private readonly onClientClose = (): void => {
    this.settle(failure('client_aborted', this.started, CLIENT_GONE, true))
    this.proxyReq?.destroy()
  }

  private settle(outcome: UpgradeOutcome): void {
    if (this.settled) return
    this.settled = true
    clearTimeout(this.timer)
    this.socket.off('close', this.onClientClose)
    this.resolve(outcome)
  }
}

function ignoreError(): void {}

/**
 * An established WebSocket tunnel: http-proxy pipes the two sockets; this watches frame boundaries
 * in both directions so a gateway close can be injected cleanly, and tracks when both sockets close.
 */
class Tunnel implements UpgradeHandle {
  readonly closed: Promise<void>
  private readonly toClient: TunnelDirection
  private readonly toUpstream: TunnelDirection
  private open = 2
  private closing = false
  private grace: NodeJS.Timeout | undefined
  private resolveClosed: () => void = ignoreError

  constructor(
    private readonly client: Duplex,
    private readonly upstream: Duplex,
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve
    })
    this.toClient = new TunnelDirection(upstream, client)
    this.toUpstream = new TunnelDirection(client, upstream)
    whenClosed(client, () => this.onSocketClosed(upstream))
    whenClosed(upstream, () => this.onSocketClosed(client))
  }

  close(code: number, reason: string): void {
    if (this.closing || this.open === 0) return
    this.closing = true
    const payload = closePayload(code, reason)
    this.toClient.close(closeFrame(payload, false))
    this.toUpstream.close(closeFrame(payload, true))
    this.armGrace()
  }

  private onSocketClosed(other: Duplex): void {
    if (--this.open === 0) {
      clearTimeout(this.grace)
      this.resolveClosed()
      return
    }
    // The pipe ends the other side on a clean end, but not when a socket is destroyed.
    other.end()
    this.armGrace()
  }

  /** A peer that never finishes its side of the close must not hold the tunnel open. */
  private armGrace(): void {
    this.grace ??= setTimeout(() => {
      this.client.destroy()
      this.upstream.destroy()
    }, TUNNEL_CLOSE_GRACE_MS).unref()
  }
}

function whenClosed(stream: Duplex, onClose: () => void): void {
  if (stream.closed) queueMicrotask(onClose)
  else stream.once('close', onClose)
}

/** One direction of a tunnel: frame-boundary tracking, and the close frame injection. */
class TunnelDirection {
  private readonly cursor = new FrameCursor()
  private state: 'open' | 'draining' | 'done' = 'open'
  private frame: Buffer | undefined

  constructor(
    private readonly src: Duplex,
    private readonly dst: Duplex,
  ) {
    // Registered after http-proxy's pipe, so it sees exactly the chunks the pipe writes.
    src.on('data', this.onData)
  }

  /** Stops the pipe and sends `frame` at the next frame boundary, then ends `dst`. */
  close(frame: Buffer): void {
    this.src.unpipe(this.dst)
    if (!this.dst.writable) {
      this.state = 'done'
    } else if (this.cursor.atBoundary) {
      this.finish(frame)
    } else {
      this.state = 'draining'
      this.frame = frame
    }
    // Keep reading: the rest of the frame in flight, or (done) what the peer still sends.
    this.src.resume()
  }

  private readonly onData = (chunk: Buffer): void => {
    if (this.state === 'open') {
      this.cursor.advance(chunk, false)
    } else if (this.state === 'draining' && this.frame !== undefined) {
      const used = this.cursor.advance(chunk, true)
      const flushed = this.dst.write(used === chunk.length ? chunk : chunk.subarray(0, used))
      if (this.cursor.atBoundary) this.finish(this.frame)
      else if (!flushed) {
        // The pipe's backpressure, kept for the rest of a large frame.
        this.src.pause()
        this.dst.once('drain', this.resumeSource)
      }
    }
  }

  private readonly resumeSource = (): void => {
    this.src.resume()
  }

  private finish(frame: Buffer): void {
    this.state = 'done'
    this.dst.end(frame)
    // After the close frame, what the peer still sends is read and dropped, so its FIN is seen.
    this.src.resume()
  }
}

/**
 * Where a byte stream stands in the WebSocket framing (RFC 6455 §5.2), without buffering payload:
 * only a frame header (at most 14 bytes) is ever held, to learn the payload length.
 */
export class FrameCursor {
  private readonly header = Buffer.alloc(14)
  private headerLength = 0
  private payloadLeft = 0

  /** True between frames. */
  get atBoundary(): boolean {
    return this.headerLength === 0 && this.payloadLeft === 0
  }

  /**
   * Moves past `chunk`, or with `stopAtBoundary` only up to the next frame boundary.
   * Returns how many bytes of `chunk` were consumed.
   */
  advance(chunk: Buffer, stopAtBoundary: boolean): number {
    let i = 0
    while (i < chunk.length && !(stopAtBoundary && this.atBoundary)) {
      if (this.payloadLeft > 0) {
        const n = Math.min(this.payloadLeft, chunk.length - i)
        this.payloadLeft -= n
        i += n
      } else {
        this.header[this.headerLength++] = chunk[i++] as number
        if (this.headerLength === headerSize(this.header, this.headerLength)) {
          this.payloadLeft = payloadLength(this.header)
          this.headerLength = 0
        }
      }
    }
    return i
  }
}

/** Total header size once the first two bytes are known (RFC 6455 §5.2), else 0. */
function headerSize(header: Buffer, known: number): number {
  if (known < 2) return 0
  const second = header[1] as number
  const length7 = second & 0x7f
  return 2 + (length7 === 126 ? 2 : length7 === 127 ? 8 : 0) + (second & 0x80 ? 4 : 0)
}

function payloadLength(header: Buffer): number {
  const length7 = (header[1] as number) & 0x7f
  if (length7 === 126) return header.readUInt16BE(2)
  if (length7 === 127) return header.readUInt32BE(2) * 2 ** 32 + header.readUInt32BE(6)
  return length7
}

/** RFC 6455 §7.4: the codes an endpoint may put in a close frame. */
function isSendableCloseCode(code: number): boolean {
  return (
    (Number.isInteger(code) && code >= 1000 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) ||
    (Number.isInteger(code) && code >= 3000 && code <= 4999)
  )
}

/** Status code and reason; a control frame's payload is at most 125 bytes (RFC 6455 §5.5). */
function closePayload(code: number, reason: string): Buffer {
  let text = Buffer.from(reason, 'utf8')
  if (text.length > 123) {
    // Cut before the lead byte of a character that would not fit whole: the client must get
    // valid UTF-8 (§5.5.1), or it fails the connection with 1007.
    let end = 123
    while (end > 0 && ((text[end] as number) & 0xc0) === 0x80) end--
    text = text.subarray(0, end)
  }
  const payload = Buffer.allocUnsafe(2 + text.length)
  payload.writeUInt16BE(isSendableCloseCode(code) ? code : 1008, 0)
  text.copy(payload, 2)
  return payload
}

/** A close frame (FIN, opcode 0x8); frames to a server must be masked (RFC 6455 §5.3). */
function closeFrame(payload: Buffer, masked: boolean): Buffer {
  if (!masked) return Buffer.concat([Buffer.from([0x88, payload.length]), payload])
  const frame = Buffer.allocUnsafe(6 + payload.length)
  frame[0] = 0x88
  frame[1] = 0x80 | payload.length
  randomFillSync(frame, 2, 4)
  for (let i = 0; i < payload.length; i++) frame[6 + i] = (payload[i] as number) ^ (frame[2 + (i & 3)] as number)
  return frame
}

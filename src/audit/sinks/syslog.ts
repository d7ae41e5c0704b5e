/**
 * Syslog sink: RFC 5424 messages over TCP with octet-counting framing (RFC 6587 §3.4.1:
 * `MSG-LEN SP SYSLOG-MSG`), so a message may contain any byte and never splits. The connection is
 * re-established with backoff; frames wait in memory meanwhile (bounded: past it they are dropped
 * and counted). TCP has no application acknowledgement: frames the kernel accepted just before a
 * connection reset can be lost, as with any syslog over TCP.
 */
import { connect, type Socket } from 'node:net'
import { hostname } from 'node:os'
import type { AuditSink, SinkReporter } from './types.js'

export interface SyslogSinkOptions {
  readonly name: string
  readonly host: string
  readonly port: number
  /** RFC 5424 facility (default 13, "log audit"). */
  readonly facility?: number
  readonly appName?: string
  /** Bytes waiting while disconnected (default 8 MiB). */
  readonly memoryMaxBytes?: number
  readonly retryMinMs?: number
  readonly retryMaxMs?: number
  /** At close, how long to keep trying to send what waits (default 5 s). */
  readonly closeTimeoutMs?: number
}

/** RFC 5424 severity of an event: 4 warning, 5 notice, 6 informational. */
function severityOf(record: Readonly<Record<string, unknown>>): number {
  switch (record.event) {
    case 'breakglass.used':
    case 'audit.dropped':
    case 'admin.denied':
    case 'policy.rejected':
      return 4
    case 'access.denied':
      return 5
    default:
      return record.code !== undefined ? 5 : 6
  }
}

/** PRINTUSASCII only (RFC 5424 §6), `-` when empty. */
function headerField(value: string, max: number): string {
  const v = value.replace(/[^\x21-\x7e]/g, '').slice(0, max)
  return v === '' ? '-' : v
}

/** One RFC 5424 message, framed for TCP by its octet count. */
export function syslogFrame(line: string, record: Readonly<Record<string, unknown>>, opts: { facility: number; host: string; appName: string; procId: string }): Buffer {
  const header = [
    `<${opts.facility * 8 + severityOf(record)}>1`,
    headerField(String(record.time ?? new Date().toISOString()), 64),
    opts.host,
    opts.appName,
    opts.procId,
    headerField(String(record.event ?? ''), 32),
    '-',
  ].join(' ')
  // MSG is UTF-8, so it starts with the BOM (RFC 5424 §6.4).
  const msg = Buffer.from(`${header} \ufeff${line}`, 'utf8')
  return Buffer.concat([Buffer.from(`${msg.length} `), msg])
}

export function createSyslogSink(opts: SyslogSinkOptions, reporter: SinkReporter): AuditSink {
  const frameOpts = {
    facility: opts.facility ?? 13,
    host: headerField(hostname(), 255),
    appName: headerField(opts.appName ?? 'jitgate', 48),
    procId: String(process.pid),
  }
  const memoryMax = opts.memoryMaxBytes ?? 8 * 1024 * 1024
  const retryMin = opts.retryMinMs ?? 250
  const retryMax = opts.retryMaxMs ?? 30_000
  let queue: Buffer[] = []
  let queued = 0
  let socket: Socket | undefined
  let connected = false
  let attempt = 0
  let retryTimer: NodeJS.Timeout | undefined
  let closing = false
  const waiters: (() => void)[] = []

  function open(): void {
    if (socket || closing) return
    const s = connect(opts.port, opts.host)
    socket = s
    s.setNoDelay(true)
    s.on('connect', () => {
      connected = true
      attempt = 0
      drain()
    })
    s.on('drain', drain)
    s.on('error', (err) => reporter.onError(new Error(`syslog ${opts.host}:${opts.port}: ${err.message}`)))
    s.on('close', () => {
      socket = undefined
      connected = false
      if (closing) return settle()
      const delay = Math.min(retryMax, retryMin * 2 ** attempt++)
      retryTimer = setTimeout(open, delay / 2 + Math.random() * (delay / 2))
    })
    // Nothing is read from a syslog collector; keep the socket from buffering whatever it sends.
    s.resume()
  }

  function drain(): void {
    const s = socket
    if (!s || !connected) return
    while (queue.length > 0) {
      const chunk = queue.length === 1 ? (queue[0] as Buffer) : Buffer.concat(queue)
      queue = []
      queued = 0
      if (!s.write(chunk, settle)) return
    }
  }

  function settle(): void {
    if ((queue.length === 0 && (socket?.writableLength ?? 0) === 0) || !socket) for (const w of waiters.splice(0)) w()
  }

  function flushed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (queue.length === 0 && (socket?.writableLength ?? 0) === 0) return resolve()
      const t = setTimeout(resolve, ms)
      waiters.push(() => {
        clearTimeout(t)
        resolve()
      })
    })
  }

  open()
  return {
    name: opts.name,
    usesRecord: true,
    write(line, record) {
      const frame = syslogFrame(line, record ?? (JSON.parse(line) as Record<string, unknown>), frameOpts)
      if (closing && !socket) return reporter.onDrop(1)
      // The bound covers both what waits here and what the socket has not sent yet.
      if (queued + (socket?.writableLength ?? 0) + frame.length > memoryMax) return reporter.onDrop(1)
      queue.push(frame)
      queued += frame.length
      drain()
    },
    async flush() {
      // Only a connected socket can take the queue; while disconnected, memory holds it.
      if (connected) await flushed(opts.closeTimeoutMs ?? 5000)
    },
    async close() {
      if (connected) await flushed(opts.closeTimeoutMs ?? 5000)
      closing = true
      clearTimeout(retryTimer)
      if (queue.length > 0) reporter.onDrop(queue.length)
      queue = []
      if (socket) {
        const s = socket
        await new Promise<void>((resolve) => {
          s.once('close', () => resolve())
          s.end()
        })
      }
    },
  }
}

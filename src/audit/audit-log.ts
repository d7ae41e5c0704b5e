/**
 * The audit trail: one JSON line per decision and per state change, for the SIEM. The event
 * types and their fields are defined in `catalogue.ts` and documented in `docs/audit.md`.
 *
 * `emit` runs on the hot path of every request: it bounds and escapes the event into one line,
 * links it into the instance's hash chain (`chain.ts`: one SHA-256 per line) and hands the line
 * to each sink, which only queues it. A request's event (flat fields, nothing to bound) is spelled
 * straight into its line; a record object is built only for other events, or for a sink or a
 * format that reads one. Events never carry a token, key, cookie or injected
 * secret: callers pass only catalogue fields.
 */
import type { Writable } from 'node:stream'
import { AUDIT_SCHEMA_VERSION, type AuditEventName, type AuditFields } from './catalogue.js'
import { copyBounded, flatMembers, isFlatAndBounded, isoTime, jsonString, toLine } from './line.js'
import { checkpointStatement, genesisHash, lineHash, newChainId, type CheckpointSigner } from './chain.js'
import type { SinkReporter } from './sinks/types.js'
import { openSink, sinkNames, type AuditOutput, type SinkConfig } from './sinks/index.js'
import { formatEvent, type AuditFormat } from './formats/index.js'

export type { AuditEventName, AuditFields } from './catalogue.js'
export { bounded, MAX_FIELD_LENGTH } from './line.js'

export interface AuditLog {
  /** This instance's chain id. */
  readonly chain: string
  /** Resolves once every sink is open; rejects when one cannot be (the gateway then refuses to start). */
  readonly opened: Promise<void>
  /** Writes one event. Never throws, never waits. */
  emit(event: AuditEventName, fields: AuditFields): void
  /** Resolves once every event emitted so far reached each sink's destination (SIGTERM, tests). */
  flush(): Promise<void>
  /** Writes the final checkpoint, flushes and closes the sinks; later events are dropped. */
  close(): Promise<void>
}

export interface CheckpointOptions {
  readonly signer: CheckpointSigner
  /** A checkpoint after this many events (default 1000). */
  readonly everyEvents?: number
  /** …or after this long with events pending (default 60 s). */
  readonly intervalMs?: number
}

export interface AuditLogOptions {
  /** The simple form of `sinks`: one native JSON sink to stdout, a file, or a stream (tests). */
  readonly output?: 'stdout' | { readonly file: string } | Writable
  /** Where events go, each sink in its own format. */
  readonly sinks?: readonly SinkConfig[]
  readonly gatewayId: string
  /** Current policy version, stamped on every event. */
  readonly policyVersion: () => string | undefined
  /** Signed checkpoints; without it the chain is written unsigned (tests of other parts). */
  readonly checkpoints?: CheckpointOptions
  /** Clock (tests); default `Date.now`. */
  readonly now?: () => number
  /** Told about sink faults (the operational log). */
  readonly onError?: (err: Error, sink: string) => void
  /** Told about every line a sink dropped (the `jitgate_audit_dropped_total` metric). */
  readonly onDrop?: (sink: string, count: number) => void
}

export const DEFAULT_CHECKPOINT_EVERY = 1000
export const DEFAULT_CHECKPOINT_INTERVAL_MS = 60_000
/** Drops are reported in an `audit.dropped` event at most this often per sink. */
export const DROP_REPORT_MS = 1000

/** Creates the audit log, opens its output and starts its chain. */
export function createAuditLog(opts: AuditLogOptions): AuditLog {
  const now = opts.now ?? Date.now
  // Drops are counted at once (metric) and reported in the trail itself, batched per sink.
  const unreported = new Map<string, number>()
  let reportTimer: NodeJS.Timeout | undefined
  const reporter = (sink: string): SinkReporter => ({
    onDrop: (count) => {
      if (count <= 0) return
      opts.onDrop?.(sink, count)
      unreported.set(sink, (unreported.get(sink) ?? 0) + count)
      if (reportTimer === undefined && !closed) {
        reportTimer = setTimeout(reportDrops, DROP_REPORT_MS)
        reportTimer.unref()
      }
    },
    onError: (err) => opts.onError?.(err, sink),
  })
  function reportDrops(): void {
    clearTimeout(reportTimer)
    reportTimer = undefined
    // A snapshot: the report itself may be dropped by the failing sink, which is counted for the
    // next report instead of looping here.
    const entries = [...unreported]
    unreported.clear()
    for (const [sink, dropped] of entries) emitNow('audit.dropped', { sink, dropped })
  }
  const configs = opts.sinks ?? [simpleSink(opts.output ?? 'stdout')]
  const names = sinkNames(configs)
  const outputs: AuditOutput[] = configs.map((c, i) => openSink(c, names[i] as string, reporter(names[i] as string)))
  const sinks = outputs.map((o) => o.sink)
  const formats = [...new Set(outputs.map((o) => o.format))]
  const opened = Promise.all(outputs.map((o) => o.opened)).then(() => {})
  opened.catch(() => {})
  const chain = newChainId()
  let seq = 0
  let prevHash = genesisHash(chain)
  let sinceCheckpoint = 0
  let closed = false
  const jsonOnly = formats.length === 1 && formats[0] === 'json'
  const needsRecord = !jsonOnly || sinks.some((s) => s.usesRecord === true)
  const instanceMembers = `,"gateway_id":${jsonString(opts.gatewayId)},"chain":${jsonString(chain)}`

  /** The line of an event whose fields are flat and bounded, spelled without a record; or undefined. */
  function directLine(event: AuditEventName, fields: AuditFields, time: string): string | undefined {
    const members = flatMembers(fields, RESERVED)
    if (members === undefined) return undefined
    const version = opts.policyVersion()
    const policy = version === undefined ? '' : `,"policy_version":${jsonString(version)}`
    return `{"time":${jsonString(time)},"event":${jsonString(event)}${members}${policy}${instanceMembers},"seq":${++seq},"prev_hash":"${prevHash}"}`
  }

  function write(event: AuditEventName, fields: AuditFields, time: string): void {
    const direct = needsRecord ? undefined : directLine(event, fields, time)
    if (direct !== undefined) {
      prevHash = lineHash(direct)
      for (const o of outputs) deliver(o, direct, undefined)
      return
    }
    let record: Record<string, unknown>
    if (isFlatAndBounded(fields)) record = { time, event, ...fields }
    else copyBounded(fields, (record = { time, event }))
    record.policy_version = opts.policyVersion()
    record.gateway_id = opts.gatewayId
    record.chain = chain
    record.seq = ++seq
    record.prev_hash = prevHash
    const line = toLine(record)
    prevHash = lineHash(line)
    if (jsonOnly) {
      for (const o of outputs) deliver(o, line, record)
      return
    }
    // Each format is rendered once per event, whatever the number of sinks using it.
    const rendered = new Map<AuditFormat, string>()
    for (const f of formats) rendered.set(f, formatEvent(f, record, line))
    for (const o of outputs) deliver(o, rendered.get(o.format) as string, record)
  }

  /** A sink that throws (a bug, a closed stream) loses this line, counted; the caller goes on. */
  function deliver(o: AuditOutput, text: string, record: Record<string, unknown> | undefined): void {
    try {
      o.sink.write(text, record)
    } catch (err) {
      const r = reporter(o.sink.name)
      r.onDrop(1)
      r.onError(err as Error)
    }
  }

  function emitNow(event: AuditEventName, fields: AuditFields): void {
    write(event, fields, isoTime(now()))
    if (++sinceCheckpoint >= every) checkpoint(false)
  }

  const cp = opts.checkpoints
  const every = cp?.everyEvents ?? DEFAULT_CHECKPOINT_EVERY
  function checkpoint(final: boolean): void {
    if (!cp) return
    const time = isoTime(now())
    // The statement covers this checkpoint's own seq and prev_hash: those `write` is about to use.
    const claims = { chain, seq: seq + 1, prev_hash: prevHash, time, gateway_id: opts.gatewayId, final }
    const signature = cp.signer.sign(checkpointStatement(claims))
    write('audit.checkpoint', { kid: cp.signer.kid, signature, final, schema_version: AUDIT_SCHEMA_VERSION }, time)
    sinceCheckpoint = 0
  }
  const timer = cp
    ? setInterval(() => {
        if (sinceCheckpoint > 0 && !closed) checkpoint(false)
      }, cp.intervalMs ?? DEFAULT_CHECKPOINT_INTERVAL_MS)
    : undefined
  timer?.unref()

  return {
    chain,
    opened,
    emit(event, fields) {
      // After close the trail is sealed: a late event can only be counted.
      if (closed) {
        for (const name of names) opts.onDrop?.(name, 1)
        return
      }
      emitNow(event, fields)
    },
    async flush() {
      await Promise.all(sinks.map((s) => s.flush()))
    },
    async close() {
      if (closed) return
      reportDrops()
      // A chain with no event (a start that failed before the first) needs no seal: a lone
      // checkpoint would only read as a trail that began and ended at once.
      if (seq > 0) checkpoint(true)
      closed = true
      clearInterval(timer)
      await Promise.all(sinks.map((s) => s.close()))
    },
  }
}

/** Members every line carries, written by the log itself: an event's fields never replace them. */
const RESERVED: ReadonlySet<string> = new Set(['time', 'event', 'policy_version', 'gateway_id', 'chain', 'seq', 'prev_hash'])

function simpleSink(output: NonNullable<AuditLogOptions['output']>): SinkConfig {
  if (output === 'stdout') return { type: 'stdout' }
  if ('file' in output) return { type: 'file', path: output.file }
  return { type: 'stream', stream: output }
}

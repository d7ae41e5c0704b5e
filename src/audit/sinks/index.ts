/**
 * Sink configurations (resolved from `audit.sinks` in the config file) and the factory that
 * opens them.
 */
import type { Writable } from 'node:stream'
import type { AuditFormat } from '../formats/index.js'
import type { AuditSink, SinkReporter } from './types.js'
import { createBoomSink, createStreamSink } from './local.js'
import { createFileSink, type RotateOptions } from './file.js'
import { createHttpSink, type HttpSinkOptions } from './http.js'
import { createSyslogSink, type SyslogSinkOptions } from './syslog.js'

interface SinkBase {
  /** Names the sink in metrics and events; default its type (then `-2`, `-3`… when repeated). */
  readonly name?: string
  /** Default `json`, the native line. */
  readonly format?: AuditFormat
}

export type SinkConfig =
  | (SinkBase & { readonly type: 'stdout' })
  | (SinkBase & { readonly type: 'file'; readonly path: string; readonly rotate?: RotateOptions })
  | (SinkBase & { readonly type: 'stream'; readonly stream: Writable })
  | (SinkBase & { readonly type: 'http' } & Omit<HttpSinkOptions, 'name'>)
  | (SinkBase & { readonly type: 'syslog' } & Omit<SyslogSinkOptions, 'name'>)

/** An opened sink and the format it writes. */
export interface AuditOutput {
  readonly sink: AuditSink
  readonly format: AuditFormat
  /** Resolves once the sink is usable; rejects when it cannot be (e.g. its spool folder). */
  readonly opened: Promise<void>
}

/** Unique sink names: explicit ones as given, the others their type, numbered when repeated. */
export function sinkNames(configs: readonly SinkConfig[]): string[] {
  const used = new Set(configs.flatMap((c) => (c.name !== undefined ? [c.name] : [])))
  return configs.map((c) => {
    if (c.name !== undefined) return c.name
    let name: string = c.type
    for (let i = 2; used.has(name); i++) name = `${c.type}-${i}`
    used.add(name)
    return name
  })
}

/** Opens one sink. */
export function openSink(config: SinkConfig, name: string, reporter: SinkReporter): AuditOutput {
  const format = config.format ?? 'json'
  const ready = Promise.resolve()
  switch (config.type) {
    case 'stdout':
      return { sink: createBoomSink({ name, dest: 1 }, reporter), format, opened: ready }
    case 'file':
      return { sink: createFileSink({ name, path: config.path, ...(config.rotate ? { rotate: config.rotate } : {}) }, reporter), format, opened: ready }
    case 'stream':
      return { sink: createStreamSink(name, config.stream), format, opened: ready }
    case 'syslog':
      return { sink: createSyslogSink({ ...config, name }, reporter), format, opened: ready }
    case 'http':
      return deferred(name, format, createHttpSink({ ...config, name, contentType: format === 'cef' ? 'text/plain; charset=utf-8' : 'application/x-ndjson' }, reporter), reporter)
  }
}

/**
 * A sink whose opening takes I/O (the HTTP sink reads its spool first). Lines written before it
 * is open wait in order; if it cannot open, they and every later line are dropped and counted.
 */
function deferred(name: string, format: AuditFormat, opening: Promise<AuditSink>, reporter: SinkReporter): AuditOutput {
  let sink: AuditSink | undefined
  let failed = false
  let early: [string, Readonly<Record<string, unknown>> | undefined][] = []
  const opened = opening.then(
    (s) => {
      sink = s
      for (const [line, record] of early) s.write(line, record)
      early = []
    },
    (err: Error) => {
      failed = true
      reporter.onDrop(early.length)
      early = []
      reporter.onError(err)
      throw err
    },
  )
  // The rejection is the caller's to handle (startup fails); keep it from being "unhandled" here.
  opened.catch(() => {})
  return {
    format,
    opened,
    sink: {
      name,
      write(line, record) {
        if (sink) sink.write(line, record)
        else if (failed) reporter.onDrop(1)
        else early.push([line, record])
      },
      async flush() {
        await opened.catch(() => {})
        await sink?.flush()
      },
      async close() {
        await opened.catch(() => {})
        await sink?.close()
      },
    },
  }
}

/**
 * Local sinks: stdout or a file descriptor through pino's SonicBoom (asynchronous `fs.write` in
 * libuv's pool, so a slow terminal or pipe never blocks the event loop; EAGAIN retried), and a
 * caller's Writable stream (tests read the real lines from it).
 */
import type { Writable } from 'node:stream'
import { destination } from 'pino'
import type { AuditSink, SinkReporter } from './types.js'

type SonicBoom = ReturnType<typeof destination>

/** Default bound of a local sink's in-memory buffer: past it, lines are dropped and counted. */
export const DEFAULT_BUFFER_BYTES = 16 * 1024 * 1024

export interface BoomSinkOptions {
  readonly name: string
  /** A file descriptor (1 = stdout) or a file path (appended to, folders created). */
  readonly dest: number | string
  readonly maxBufferBytes?: number
}

/** A sink writing through SonicBoom to a descriptor or a file. */
export function createBoomSink(opts: BoomSinkOptions, reporter: SinkReporter): AuditSink {
  const out = openBoom(opts.dest, opts.maxBufferBytes ?? DEFAULT_BUFFER_BYTES, reporter)
  return {
    name: opts.name,
    write(line) {
      out.write(`${line}\n`)
    },
    flush: () => out.flush(),
    close: () => out.end(),
  }
}

/**
 * Lines are gathered in memory and handed to SonicBoom as one string, so a batch costs one
 * `fs.write`, one UTF-8 encoding and one length count instead of one each per line (SonicBoom
 * measures its whole pending buffer on every write): per event, that was the largest cost of an
 * allowed request (`npm run bench`, profiled). A timer hands over a partial batch within
 * {@link BATCH_INTERVAL_MS}; flush and end (SIGTERM) hand over everything.
 */
const BATCH_CHARS = 64 * 1024
const BATCH_INTERVAL_MS = 100

/** Batched, ordered, non-blocking line output to a descriptor or a file. */
export interface LineOutput {
  /** Queues text (whole lines, each with its newline). Never throws. */
  write(text: string): void
  /** Resolves once everything queued so far is written (or a write failed: 'error' reports it). */
  flush(): Promise<void>
  /** Reopens the file at its path (after a rotation renamed it); call after flush(). */
  reopen(): void
  /** Flushes and closes; later writes are dropped and counted. */
  end(): Promise<void>
}

/** Opens a batched SonicBoom whose drops and errors go to the reporter. */
export function openBoom(dest: number | string, maxBufferBytes: number, reporter: SinkReporter): LineOutput {
  const boom = destination({ dest, sync: false, minLength: 0, maxWrite: 4 * BATCH_CHARS, mkdir: true, maxLength: maxBufferBytes })
  boom.on('drop', (data: string) => reporter.onDrop(countLines(data)))
  boom.on('error', (err: Error) => reporter.onError(err))
  let pending: string[] = []
  let pendingChars = 0
  let ended = false

  function handOver(): void {
    if (pending.length === 0) return
    const chunk = pending.length === 1 ? (pending[0] as string) : pending.join('')
    pending = []
    pendingChars = 0
    try {
      boom.write(chunk)
    } catch (err) {
      // Only once SonicBoom is destroyed: the lines are still accounted for.
      reporter.onDrop(countLines(chunk))
      reporter.onError(err as Error)
    }
  }
  const timer = setInterval(handOver, BATCH_INTERVAL_MS)
  timer.unref()

  return {
    write(text) {
      if (ended) return reporter.onDrop(countLines(text))
      pending.push(text)
      pendingChars += text.length
      if (pendingChars >= BATCH_CHARS) handOver()
    },
    flush() {
      handOver()
      return flushBoom(boom)
    },
    reopen() {
      boom.reopen()
    },
    async end() {
      if (ended) return
      handOver()
      ended = true
      clearInterval(timer)
      await flushBoom(boom)
      await new Promise<void>((resolve) => {
        boom.once('close', () => resolve())
        boom.end()
      })
    },
  }
}

/**
 * Resolves once everything SonicBoom holds is written, or a write failed ('error' reports it).
 * Not `boom.flush(cb)`: with `minLength: 0` SonicBoom calls that back at once, writes pending.
 */
function flushBoom(boom: SonicBoom): Promise<void> {
  const state = boom as unknown as { _writing: boolean; _len: number; destroyed: boolean }
  if (state.destroyed || (!state._writing && state._len === 0)) return Promise.resolve()
  return new Promise((resolve) => {
    const done = (): void => {
      boom.off('drain', done)
      boom.off('error', done)
      boom.off('close', done)
      resolve()
    }
    boom.on('drain', done)
    boom.on('error', done)
    boom.on('close', done)
  })
}

/** A sink writing to a caller's stream. */
export function createStreamSink(name: string, stream: Writable): AuditSink {
  return {
    name,
    write(line) {
      stream.write(`${line}\n`)
    },
    flush: () => Promise.resolve(),
    close: () => Promise.resolve(),
  }
}

function countLines(data: string): number {
  let n = 0
  for (let i = data.indexOf('\n'); i !== -1; i = data.indexOf('\n', i + 1)) n++
  return Math.max(n, 1)
}

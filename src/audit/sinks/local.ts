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
export function createBoomSink(opts: BoomSinkOptions, reporter: SinkReporter): AuditSink & { readonly boom: SonicBoom } {
  const boom = openBoom(opts.dest, opts.maxBufferBytes ?? DEFAULT_BUFFER_BYTES, reporter)
  return {
    name: opts.name,
    boom,
    write(line) {
      try {
        boom.write(`${line}\n`)
      } catch (err) {
        // Only after close: a late event is still accounted for.
        reporter.onDrop(1)
        reporter.onError(err as Error)
      }
    },
    flush: () => flushBoom(boom),
    async close() {
      await flushBoom(boom)
      await new Promise<void>((resolve) => {
        boom.once('close', () => resolve())
        boom.end()
      })
    },
  }
}

/**
 * Lines are gathered up to this many bytes before a write: one `fs.write` per event was the largest
 * cost of an allowed request (`npm run bench`, profiled). A timer writes out a partial batch within
 * {@link BATCH_INTERVAL_MS}, and flush/close (SIGTERM) write everything.
 */
// Below SonicBoom's maxWrite (16 KiB), which it requires of minLength.
const BATCH_BYTES = 8 * 1024
const BATCH_INTERVAL_MS = 100

/** Opens a SonicBoom whose drops and errors go to the reporter. */
export function openBoom(dest: number | string, maxBufferBytes: number, reporter: SinkReporter): SonicBoom {
  const boom = destination({ dest, sync: false, minLength: BATCH_BYTES, mkdir: true, maxLength: maxBufferBytes })
  boom.on('drop', (data: string) => reporter.onDrop(countLines(data)))
  boom.on('error', (err: Error) => reporter.onError(err))
  const state = boom as unknown as { _writing: boolean; _len: number; destroyed: boolean }
  const timer = setInterval(() => {
    if (!state.destroyed && !state._writing && state._len > 0) boom.flush()
  }, BATCH_INTERVAL_MS)
  timer.unref()
  boom.once('close', () => clearInterval(timer))
  return boom
}

/** Resolves once everything SonicBoom holds is written (or a write failed: its 'error' reports it). */
export function flushBoom(boom: SonicBoom): Promise<void> {
  const state = boom as unknown as { _writing: boolean; _len: number; destroyed: boolean }
  if (state.destroyed || (!state._writing && state._len === 0)) return Promise.resolve()
  return new Promise((resolve) => {
    try {
      boom.flush(() => resolve())
    } catch {
      resolve()
    }
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

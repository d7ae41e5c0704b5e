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

/** Opens a SonicBoom whose drops and errors go to the reporter. */
export function openBoom(dest: number | string, maxBufferBytes: number, reporter: SinkReporter): SonicBoom {
  const boom = destination({ dest, sync: false, minLength: 0, mkdir: true, maxLength: maxBufferBytes })
  boom.on('drop', (data: string) => reporter.onDrop(countLines(data)))
  boom.on('error', (err: Error) => reporter.onError(err))
  return boom
}

/**
 * Resolves once SonicBoom's buffer is written (or a write failed, which its 'error' event reports).
 * With `minLength: 0` its own `flush(cb)` calls back at once, so this waits for the 'drain' it
 * emits when the last pending write completes; `_writing` and `_len` are its pending state.
 */
export function flushBoom(boom: SonicBoom): Promise<void> {
  const state = boom as unknown as { _writing: boolean; _len: number; destroyed: boolean }
  if (state.destroyed || (!state._writing && state._len === 0)) return Promise.resolve()
  return new Promise((resolve) => {
    const done = () => {
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

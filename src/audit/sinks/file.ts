/**
 * A file sink with optional rotation by size and/or by time. Rotation renames the current file to
 * `<path>.<UTC time>` (`audit.log.20261203T171000.123Z`: such names sort in time order, so
 * `jitgate audit verify audit.log.* audit.log` reads a chain oldest first) and reopens `<path>`.
 * It happens between two lines: a line is never split across files, and the order is kept.
 */
import { readdir, rename, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { AuditSink, SinkReporter } from './types.js'
import { DEFAULT_BUFFER_BYTES, openBoom } from './local.js'

export interface RotateOptions {
  /** Rotate once the file reaches this size. */
  readonly maxBytes?: number
  /** Rotate when the clock crosses a multiple of this interval (UTC: `1d` rotates at midnight). */
  readonly intervalMs?: number
  /** Rotated files kept (the oldest are deleted); 0 keeps all. */
  readonly keep: number
}

export interface FileSinkOptions {
  readonly name: string
  readonly path: string
  readonly rotate?: RotateOptions
  readonly maxBufferBytes?: number
  readonly now?: () => number
}

/** The name a rotated file gets. */
export function rotatedName(path: string, at: number): string {
  return `${path}.${new Date(at).toISOString().replace(/[-:]/g, '')}`
}

export function createFileSink(opts: FileSinkOptions, reporter: SinkReporter): AuditSink {
  const now = opts.now ?? Date.now
  const maxBuffer = opts.maxBufferBytes ?? DEFAULT_BUFFER_BYTES
  const out = openBoom(opts.path, maxBuffer, reporter)
  const rotate = opts.rotate
  /** Bytes handed to the current file. */
  let size = 0
  let period = rotate?.intervalMs ? Math.floor(now() / rotate.intervalMs) : 0
  /** Lines that arrived during a rotation: they belong to the next file. */
  let held: string[] | undefined
  let heldBytes = 0
  let rotating: Promise<void> = Promise.resolve()
  let closed = false
  // Two rotations within one millisecond must not get the same name (the second would replace it).
  let lastRotation = 0

  function due(bytes: number, t: number): boolean {
    if (!rotate) return false
    if (rotate.maxBytes !== undefined && size > 0 && size + bytes > rotate.maxBytes) return true
    return rotate.intervalMs !== undefined && Math.floor(t / rotate.intervalMs) !== period
  }

  function writeLine(text: string): void {
    // Bytes only count toward a size bound (and the held lines' bound during a rotation).
    const bytes = rotate ? Buffer.byteLength(text) : text.length
    if (held) {
      if (heldBytes + bytes > maxBuffer) return reporter.onDrop(1)
      held.push(text)
      heldBytes += bytes
      return
    }
    const t = now()
    if (due(bytes, t)) {
      held = [text]
      heldBytes = bytes
      lastRotation = Math.max(t, lastRotation + 1)
      if (rotate?.intervalMs) period = Math.floor(t / rotate.intervalMs)
      rotating = rotateNow(lastRotation)
      return
    }
    size += bytes
    out.write(text)
  }

  /**
   * Waits until every line of the current file is written, renames it, reopens the path, then
   * replays the lines held meanwhile (which may start the next rotation): each file ends exactly
   * at a line, within its size bound, and the order holds across files.
   */
  async function rotateNow(at: number): Promise<void> {
    try {
      await out.flush()
      await rename(opts.path, rotatedName(opts.path, at))
      out.reopen()
      if (rotate && rotate.keep > 0) await prune(rotate.keep)
    } catch (err) {
      reporter.onError(err as Error)
    }
    size = 0
    const lines = held ?? []
    held = undefined
    heldBytes = 0
    for (const line of lines) writeLine(line)
  }

  async function prune(keep: number): Promise<void> {
    const prefix = `${basename(opts.path)}.`
    const rotated = (await readdir(dirname(opts.path))).filter((f) => f.startsWith(prefix) && /^\d{8}T\d{6}\.\d{3}Z$/.test(f.slice(prefix.length))).sort()
    for (const f of rotated.slice(0, Math.max(0, rotated.length - keep))) await unlink(join(dirname(opts.path), f))
  }

  async function settled(): Promise<void> {
    // A replay can start another rotation: wait until none is left.
    for (let r = rotating; ; r = rotating) {
      await r
      if (r === rotating && held === undefined) break
    }
    await out.flush()
  }

  return {
    name: opts.name,
    write(line) {
      if (closed) return reporter.onDrop(1)
      writeLine(`${line}\n`)
    },
    flush: settled,
    async close() {
      closed = true
      await settled()
      await out.end()
    },
  }
}

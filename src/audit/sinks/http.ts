/**
 * HTTP collector sink: lines are POSTed in batches (newline-delimited, one request at a time, so
 * the collector receives them in order), retried with exponential backoff and jitter.
 *
 * While the collector answers, lines wait in memory (bounded). When a POST fails, or memory
 * fills up, every waiting line moves to a spool file and so does every later line, until the
 * spool has been delivered; then the spool is emptied and memory takes over again. So lines
 * always leave in the order they came, nothing is removed before a 2xx, and a line is sent twice
 * only when a response is lost after the collector stored the batch. The spool is bounded: past
 * `spoolMaxBytes` new lines are dropped and counted. It survives a restart: its unsent part
 * (after the offset kept beside it) is delivered first.
 */
import { mkdir, open, readFile, rename, writeFile, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import type { AuditSink, SinkReporter } from './types.js'

export interface HttpSinkOptions {
  readonly name: string
  readonly url: string
  /** Extra request headers (e.g. Authorization, from the environment). */
  readonly headers?: Readonly<Record<string, string>>
  readonly contentType?: string
  /** Lines per POST (default 500). */
  readonly batchSize?: number
  /** How long a first line waits for others before a POST (default 1 s). */
  readonly batchWaitMs?: number
  /** Per POST (default 10 s). */
  readonly timeoutMs?: number
  /** Folder of the spool file and its offset. */
  readonly spoolDir: string
  /** Unsent bytes the spool may hold (default 256 MiB). */
  readonly spoolMaxBytes?: number
  /** Bytes waiting in memory before they spill to the spool (default 8 MiB). */
  readonly memoryMaxBytes?: number
  /** Backoff between failed POSTs: from `retryMinMs` doubling to `retryMaxMs` (250 ms, 30 s). */
  readonly retryMinMs?: number
  readonly retryMaxMs?: number
  /** At close, how long to keep trying before the rest stays in the spool (default 5 s). */
  readonly closeTimeoutMs?: number
}

interface Batch {
  readonly lines: readonly string[]
  /** Bytes of the spool this batch came from (0: from memory). */
  readonly spoolBytes: number
}

export async function createHttpSink(opts: HttpSinkOptions, reporter: SinkReporter): Promise<AuditSink> {
  const batchSize = opts.batchSize ?? 500
  const batchWaitMs = opts.batchWaitMs ?? 1000
  const spoolMax = opts.spoolMaxBytes ?? 256 * 1024 * 1024
  const memoryMax = opts.memoryMaxBytes ?? 8 * 1024 * 1024
  const retryMin = opts.retryMinMs ?? 250
  const retryMax = opts.retryMaxMs ?? 30_000
  const agent = new Agent({ keepAliveTimeout: 10_000, connect: { timeout: Math.min(opts.timeoutMs ?? 10_000, 10_000) } })
  const headers = { ...opts.headers, 'content-type': opts.contentType ?? 'application/x-ndjson' }
  // Messages name the collector without any credentials its URL may carry.
  const shown = (() => {
    const u = new URL(opts.url)
    u.username = ''
    u.password = ''
    return u.origin + u.pathname
  })()

  await mkdir(opts.spoolDir, { recursive: true, mode: 0o700 })
  const spoolPath = join(opts.spoolDir, 'spool.ndjson')
  const offsetPath = join(opts.spoolDir, 'spool.offset')
  const fh: FileHandle = await open(spoolPath, 'a+', 0o600)
  let fileSize = (await fh.stat()).size
  let readOffset = Math.min(fileSize, Number((await readFile(offsetPath, 'utf8').catch(() => '0')).trim()) || 0)
  /** Bytes handed to the spool chain and not yet written. */
  let queuedBytes = 0
  /** Every spool operation runs in this chain: appends, truncation and offset updates in order. */
  let chain: Promise<void> = Promise.resolve()
  let spooling = fileSize > readOffset

  let mem: string[] = []
  let memBytes = 0
  let inflight: Batch | undefined
  let closing = false
  let stopped = false
  let attempt = 0
  let pumping = false
  let timer: NodeJS.Timeout | undefined
  let wake: (() => void) | undefined
  let abort: AbortController | undefined
  let posting = false
  const idle: (() => void)[] = []

  function spool(text: string, lines: number): void {
    const bytes = Buffer.byteLength(text)
    if (fileSize + queuedBytes - readOffset + bytes > spoolMax) {
      reporter.onDrop(lines)
      return
    }
    spooling = true
    queuedBytes += bytes
    chain = chain.then(async () => {
      try {
        await fh.write(text, fileSize)
        fileSize += bytes
      } catch (err) {
        reporter.onDrop(lines)
        reporter.onError(err as Error)
      }
      queuedBytes -= bytes
      kick()
    })
  }

  /** Moves every line waiting in memory (and a failed batch from memory) to the spool, in order. */
  function spill(): void {
    const lines = [...(inflight && inflight.spoolBytes === 0 ? inflight.lines : []), ...mem]
    if (inflight?.spoolBytes === 0) inflight = undefined
    mem = []
    memBytes = 0
    if (lines.length > 0) spool(`${lines.join('\n')}\n`, lines.length)
  }

  async function nextBatch(): Promise<Batch | undefined> {
    if (mem.length > 0) {
      const lines = mem.splice(0, batchSize)
      for (const l of lines) memBytes -= Buffer.byteLength(l) + 1
      return { lines, spoolBytes: 0 }
    }
    if (readOffset >= fileSize) return undefined
    const want = Math.min(fileSize - readOffset, Math.max(64 * 1024, batchSize * 1024))
    const buf = Buffer.alloc(want)
    const { bytesRead } = await fh.read(buf, 0, want, readOffset)
    const text = buf.subarray(0, bytesRead).toString('utf8')
    const lines: string[] = []
    let used = 0
    for (let start = 0, nl = text.indexOf('\n'); nl !== -1 && lines.length < batchSize; start = nl + 1, nl = text.indexOf('\n', start)) {
      lines.push(text.slice(start, nl))
      used = nl + 1
    }
    if (lines.length === 0) {
      // One line longer than the read window: read it whole.
      const end = text.indexOf('\n')
      if (end === -1 && bytesRead === fileSize - readOffset) return undefined
      const whole = (await readSpoolLine(readOffset)) ?? ''
      return { lines: [whole], spoolBytes: Buffer.byteLength(whole) + 1 }
    }
    return { lines, spoolBytes: Buffer.byteLength(text.slice(0, used)) }
  }

  async function readSpoolLine(from: number): Promise<string | undefined> {
    const buf = Buffer.alloc(fileSize - from)
    await fh.read(buf, 0, buf.length, from)
    const nl = buf.indexOf(10)
    return nl === -1 ? undefined : buf.subarray(0, nl).toString('utf8')
  }

  async function post(batch: Batch): Promise<'ok' | 'retry' | 'rejected'> {
    abort = new AbortController()
    posting = true
    try {
      const res = await request(opts.url, {
        method: 'POST',
        headers,
        body: `${batch.lines.join('\n')}\n`,
        dispatcher: agent,
        signal: abort.signal,
        headersTimeout: opts.timeoutMs ?? 10_000,
        bodyTimeout: opts.timeoutMs ?? 10_000,
      })
      await res.body.dump()
      if (res.statusCode >= 200 && res.statusCode < 300) return 'ok'
      // A collector that refuses a batch as invalid will refuse it forever: retrying it would
      // hold back every later line. Timeouts, throttling and server errors are retried.
      if (res.statusCode >= 400 && res.statusCode < 500 && res.statusCode !== 408 && res.statusCode !== 429) {
        reporter.onError(new Error(`collector ${shown} refused a batch of ${batch.lines.length} line(s): HTTP ${res.statusCode}`))
        return 'rejected'
      }
      reporter.onError(new Error(`collector ${shown} answered HTTP ${res.statusCode}`))
      return 'retry'
    } catch (err) {
      reporter.onError(new Error(`collector ${shown} unreachable: ${(err as Error).message}`))
      return 'retry'
    } finally {
      abort = undefined
      posting = false
    }
  }

  async function commit(batch: Batch): Promise<void> {
    if (batch.spoolBytes === 0) return
    readOffset += batch.spoolBytes
    const offset = readOffset
    chain = chain.then(async () => {
      try {
        if (offset === fileSize && queuedBytes === 0) {
          // Everything spooled was delivered: start afresh, back in memory.
          await fh.truncate(0)
          fileSize = 0
          readOffset = 0
          spooling = false
        }
        const tmp = `${offsetPath}.tmp`
        await writeFile(tmp, String(readOffset))
        await rename(tmp, offsetPath)
      } catch (err) {
        reporter.onError(err as Error)
      }
    })
    await chain
  }

  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        wake = undefined
        resolve()
      }, ms)
      wake = () => {
        clearTimeout(t)
        wake = undefined
        resolve()
      }
    })
  }

  async function pump(): Promise<void> {
    if (pumping) return
    pumping = true
    try {
      while (!stopped) {
        const batch = inflight ?? (await nextBatch())
        if (!batch) break
        inflight = batch
        const result = await post(batch)
        if (stopped) break
        if (result === 'retry') {
          if (batch.spoolBytes === 0) spill()
          await chain
          const delay = Math.min(retryMax, retryMin * 2 ** attempt++)
          await sleep(delay / 2 + Math.random() * (delay / 2))
          continue
        }
        if (result === 'rejected') reporter.onDrop(batch.lines.length)
        attempt = 0
        inflight = undefined
        await commit(batch)
      }
    } finally {
      pumping = false
      if (isIdle()) for (const resolve of idle.splice(0)) resolve()
    }
  }

  function isIdle(): boolean {
    return mem.length === 0 && inflight === undefined && queuedBytes === 0 && readOffset >= fileSize
  }

  /** Starts a POST now, or when the batch wait ends. */
  function kick(): void {
    if (stopped || pumping) return
    if (mem.length >= batchSize || spooling || closing) {
      clearTimeout(timer)
      timer = undefined
      void pump()
    } else if (timer === undefined && mem.length > 0) {
      timer = setTimeout(() => {
        timer = undefined
        void pump()
      }, batchWaitMs)
    }
  }

  if (spooling) kick()

  /** Resolves when everything is delivered, or after `ms` (then false). */
  function drained(ms: number): Promise<boolean> {
    if (isIdle() && !pumping) return Promise.resolve(true)
    return new Promise((resolve) => {
      const t = setTimeout(() => resolve(false), ms)
      idle.push(() => {
        clearTimeout(t)
        resolve(true)
      })
      kick()
    })
  }

  return {
    name: opts.name,
    write(line) {
      if (stopped) {
        reporter.onDrop(1)
        return
      }
      const bytes = Buffer.byteLength(line) + 1
      if (spooling || memBytes + bytes > memoryMax) {
        if (!spooling) spill()
        spool(`${line}\n`, 1)
        return
      }
      mem.push(line)
      memBytes += bytes
      kick()
    },
    /** Everything so far is delivered or safely in the spool file. */
    async flush() {
      kick()
      while (mem.length > 0 || (inflight !== undefined && inflight.spoolBytes === 0) || queuedBytes > 0) {
        // While the collector fails, handing the lines to the spool file is as good as delivered;
        // never while a POST is out, whose lines would then be sent twice.
        if (!(await drained(100)) && attempt > 0 && !posting) spill()
        await chain
      }
      await chain
    },
    async close() {
      closing = true
      kick()
      wake?.()
      if (!(await drained(opts.closeTimeoutMs ?? 5000))) {
        stopped = true
        abort?.abort()
        wake?.()
        spill()
      }
      stopped = true
      clearTimeout(timer)
      await chain
      await fh.close()
      await agent.close()
    },
  }
}

/**
 * A Redis connection that fails closed and fast, shared by the grant store and the request store.
 *
 * Every operation runs under a deadline of `timeoutMs`. A command is either sent on a live
 * connection or rejected at once (no offline queue, no replay after a reconnect): a write already
 * reported as failed must never happen later behind the caller's back. The connection keeps
 * reconnecting in the background, so the store heals by itself when Redis is back. Every failure
 * except the caller's own contract errors surfaces as StoreUnavailableError.
 */
import { Redis, type RedisOptions } from 'ioredis'
import { StoreUnavailableError } from './types.js'

export const toError = (err: unknown): Error => (err instanceof Error ? err : new Error(String(err)))

/**
 * ioredis takes a redis:// or rediss:// URL as is, and a unix socket as a path (query parameters
 * such as `?db=1&password=x` are honoured there too), so `unix:///run/redis.sock` becomes
 * `/run/redis.sock`.
 */
export function connectionTarget(url: string): string {
  if (/^rediss?:\/\//i.test(url)) return url
  if (url.startsWith('unix://')) return url.slice('unix://'.length)
  throw new Error(`unsupported Redis URL scheme (expected redis://, rediss:// or unix://): ${url.replace(/\/\/[^@/]*@/, '//***@')}`)
}

/**
 * Reports a connection's errors to onError, once per run of identical errors: a down Redis makes
 * ioredis emit the same ECONNREFUSED on every reconnect attempt. A successful reconnect re-arms it.
 * Attaching the handler at all is what keeps an 'error' event from crashing the process.
 */
export function reportErrors(client: Redis, onError: (err: Error) => void): void {
  let last: string | undefined
  client.on('error', (err: Error) => {
    if (err.message === last) return
    last = err.message
    onError(err)
  })
  client.on('ready', () => {
    last = undefined
  })
}

/** Reconnection settings of every jitgate connection (subscribers included). */
export function reconnectOptions(timeoutMs: number) {
  return {
    // Connect explicitly, once the error handlers are attached.
    lazyConnect: true,
    // Keep reconnecting forever, at most a second apart, so the store heals without a restart.
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 1000),
    // Only bounds a connection attempt that never completes (black-holed host); callers are
    // bounded by their own deadline meanwhile.
    connectTimeout: Math.max(timeoutMs, 1000),
  } satisfies RedisOptions
}

export interface FailClosedRedisOptions {
  readonly url: string
  readonly timeoutMs: number
  readonly onError: (err: Error) => void
  /** Names the store in "closed" errors. */
  readonly name: string
  /** Errors of the caller's contract, passed through as they are. */
  readonly passThrough: (err: unknown) => boolean
  /** Defines Lua commands etc. before the connection opens. */
  readonly setup?: (client: Redis) => void
}

export interface FailClosedRedis {
  readonly client: Redis
  /** Runs one operation under the deadline; see the module comment. */
  op<T>(what: string, fn: () => Promise<T>): Promise<T>
  readonly closed: boolean
  /** Operations waiting for the connection to be ready (each for at most the deadline). */
  readonly waiting: number
  /** Refuses further operations and quits the connection (bounded by the deadline). */
  close(): Promise<void>
}

export function openFailClosedRedis(opts: FailClosedRedisOptions): FailClosedRedis {
  const { timeoutMs } = opts
  const client = new Redis(connectionTarget(opts.url), {
    ...reconnectOptions(timeoutMs),
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    autoResendUnfulfilledCommands: false,
    commandTimeout: timeoutMs,
  })
  opts.setup?.(client)
  reportErrors(client, opts.onError)
  // Rejects if the first attempt fails; the retry strategy carries on regardless.
  client.connect().catch(() => {})

  /**
   * Operations waiting for the next 'ready'. Without an offline queue, a command sent while
   * (re)connecting fails at once; waiting here (within the caller's deadline) instead lets the
   * first requests after startup, or after a short blip, succeed. One listener for all of them;
   * each leaves the set when its deadline passes.
   */
  const waiting = new Set<() => void>()
  client.on('ready', () => {
    const now = [...waiting]
    waiting.clear()
    for (const go of now) go()
  })

  const deadlines = new Deadlines(timeoutMs)
  let closed = false
  return {
    client,
    get closed() {
      return closed
    },
    get waiting() {
      return waiting.size
    },
    op<T>(what: string, fn: () => Promise<T>): Promise<T> {
      if (closed) return Promise.reject(new StoreUnavailableError(`${opts.name} is closed`))
      return new Promise<T>((resolve, reject) => {
        let waiter: (() => void) | undefined
        // On the hot path (connection ready) the cost is one queue entry: no timer of its own.
        const deadline = deadlines.add(() => {
          // A caller told it failed leaves the wait: nothing of it is kept while Redis stays away
          // (a reaction per failed call on one shared promise grew without bound in an outage).
          if (waiter !== undefined) waiting.delete(waiter)
          reject(new StoreUnavailableError(`redis ${what}: no answer within ${timeoutMs} ms`))
        })
        let work: Promise<T>
        try {
          // Waiting for the connection, the operation is sent only if its caller is still waiting:
          // one the caller was told had failed must not run behind its back once Redis is back.
          work =
            client.status === 'ready'
              ? fn()
              : new Promise<T>((ready, failed) => {
                  waiter = () => {
                    if (deadline.settled) failed(new StoreUnavailableError(`redis ${what}: gave up before the connection was ready`))
                    else {
                      try {
                        fn().then(ready, failed)
                      } catch (err) {
                        failed(err)
                      }
                    }
                  }
                  waiting.add(waiter)
                })
        } catch (err) {
          work = Promise.reject(err)
        }
        work.then(
          (value) => {
            if (deadlines.settle(deadline)) resolve(value)
          },
          (err: unknown) => {
            if (!deadlines.settle(deadline)) return
            if (err instanceof StoreUnavailableError || opts.passThrough(err)) reject(err)
            else reject(new StoreUnavailableError(`redis ${what}: ${toError(err).message}`, { cause: err }))
          },
        )
      })
    },
    async close() {
      if (closed) return
      closed = true
      await quit(client, timeoutMs)
    },
  }
}

interface Deadline {
  readonly at: number
  readonly expire: () => void
  settled: boolean
}

/**
 * The deadlines of every operation on one connection, under one timer. Each is now + timeoutMs,
 * so they fall due in the order they were set: a FIFO queue with a timer armed for its oldest
 * unsettled entry replaces a timer per operation (measured: the deadline was a large part of
 * a grant lookup's cost). Settled entries are only marked and skipped when the timer comes by.
 */
export class Deadlines {
  private queue: Deadline[] = []
  private head = 0
  private timer: NodeJS.Timeout | undefined

  constructor(private readonly timeoutMs: number) {}

  /** Calls `expire` after timeoutMs unless settle() came first. */
  add(expire: () => void): Deadline {
    const entry: Deadline = { at: performance.now() + this.timeoutMs, expire, settled: false }
    this.queue.push(entry)
    if (this.timer === undefined) this.arm(this.timeoutMs)
    return entry
  }

  /** True the first time, if the deadline had not expired yet: the caller then owns the outcome. */
  settle(entry: Deadline): boolean {
    if (entry.settled) return false
    entry.settled = true
    return true
  }

  /** Entries waiting (settled ones included until the timer passes them). */
  get size(): number {
    return this.queue.length - this.head
  }

  private arm(ms: number): void {
    this.timer = setTimeout(this.fire, Math.max(0, ms))
  }

  private readonly fire = (): void => {
    this.timer = undefined
    const now = performance.now()
    const queue = this.queue
    while (this.head < queue.length) {
      const entry = queue[this.head] as Deadline
      if (!entry.settled) {
        if (entry.at > now) break
        entry.settled = true
        entry.expire()
      }
      this.head++
    }
    if (this.head === queue.length) {
      this.queue = []
      this.head = 0
      return
    }
    if (this.head > 1024 && this.head * 2 > queue.length) {
      this.queue = queue.slice(this.head)
      this.head = 0
    }
    this.arm((this.queue[this.head] as Deadline).at - now)
  }
}

/** QUIT within the deadline, then drop the socket whatever happened. */
export async function quit(client: Redis, timeoutMs: number): Promise<void> {
  if (client.status === 'ready') {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([
      client.quit().catch(() => {}),
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, timeoutMs)
      }),
    ])
    clearTimeout(timer)
  }
  client.disconnect()
}

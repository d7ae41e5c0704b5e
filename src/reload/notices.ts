/**
 * Policy reload notices between replicas: after a replica reloads its policy files, it announces the
 * version it computed; every other replica re-reads its own files and reports when it arrives at a
 * different version (their files differ). Notices travel on a Redis pub/sub channel of their own
 * (`<prefix>policy`) on the grant store's Redis, with their own two connections, so the grant store
 * contract stays as it is. With the in-memory store there is one process, and no one to tell.
 *
 * Delivery is best effort, like every Redis pub/sub message: a replica disconnected at the moment
 * misses the notice, and still picks up the change from its own file watcher or the next SIGHUP.
 */
import { Redis } from 'ioredis'
import { connectionTarget, reportErrors } from '../grants/redis-connection.js'

/** What a replica announces after it reloaded its policy. */
export interface PolicyNotice {
  /** The version the announcing replica computed from its files. */
  readonly version: string
  /** Its gateway id; a replica ignores its own notices. */
  readonly origin: string
}

export interface PolicyNoticeBus {
  /** Announces to every replica (including this one). Rejects when Redis cannot take it. */
  publish(notice: PolicyNotice): Promise<void>
  /** Listens for notices; returns unsubscribe. Malformed messages are reported to `onError`. */
  subscribe(listener: (notice: PolicyNotice) => void): () => void
  close(): Promise<void>
}

export interface RedisNoticeBusOptions {
  /** The grant store's Redis URL. */
  readonly url: string
  readonly keyPrefix: string
  /** Deadline of a publish. */
  readonly timeoutMs: number
  readonly onError?: (err: Error) => void
}

/** The bus of a single process (memory store): nothing to deliver. */
export function createLocalNoticeBus(): PolicyNoticeBus {
  return {
    publish: () => Promise.resolve(),
    subscribe: () => () => {},
    close: () => Promise.resolve(),
  }
}

/** The bus over Redis pub/sub, channel `<keyPrefix>policy`. */
export function createRedisNoticeBus(opts: RedisNoticeBusOptions): PolicyNoticeBus {
  const onError = opts.onError ?? (() => {})
  const target = connectionTarget(opts.url)
  const channel = `${opts.keyPrefix}policy`
  const common = {
    lazyConnect: true,
    retryStrategy: (attempt: number) => Math.min(attempt * 100, 1000),
    connectTimeout: Math.max(opts.timeoutMs, 1000),
  }
  // A reload is rare and not on any request's path: a publish may wait for a reconnect, within its
  // deadline, rather than fail at once.
  const publisher = new Redis(target, { ...common, commandTimeout: opts.timeoutMs, maxRetriesPerRequest: 1 })
  const subscriber = new Redis(target, { ...common, maxRetriesPerRequest: null })
  reportErrors(publisher, onError)
  reportErrors(subscriber, onError)
  publisher.connect().catch(() => {})

  const listeners = new Set<(notice: PolicyNotice) => void>()
  let subscribed = false
  subscriber.on('message', (ch: string, message: string) => {
    if (ch !== channel) return
    let notice: PolicyNotice
    try {
      notice = JSON.parse(message) as PolicyNotice
      if (typeof notice.version !== 'string' || typeof notice.origin !== 'string') throw new Error('not a policy notice')
    } catch (err) {
      onError(new Error(`ignored a malformed policy notice: ${(err as Error).message}`))
      return
    }
    for (const listener of listeners) {
      try {
        listener(notice)
      } catch (err) {
        onError(err instanceof Error ? err : new Error(String(err)))
      }
    }
  })

  return {
    publish(notice) {
      return withDeadline(
        publisher.publish(channel, JSON.stringify({ version: notice.version, origin: notice.origin })).then(() => {}),
        opts.timeoutMs,
        'policy notice: Redis did not answer in time',
      )
    },
    subscribe(listener) {
      if (!subscribed) {
        subscribed = true
        subscriber.connect().catch(() => {})
        subscriber.subscribe(channel).catch((err: unknown) => onError(err instanceof Error ? err : new Error(String(err))))
      }
      const wrapped = (notice: PolicyNotice): void => listener(notice)
      listeners.add(wrapped)
      return () => {
        listeners.delete(wrapped)
      }
    },
    async close() {
      listeners.clear()
      // QUIT where connected (bounded), then drop the sockets and stop reconnecting for sure.
      await Promise.allSettled(
        [publisher, subscriber].filter((c) => c.status === 'ready').map((c) => withDeadline(c.quit().then(() => {}), opts.timeoutMs, 'quit')),
      )
      publisher.disconnect()
      subscriber.disconnect()
    },
  }
}

function withDeadline(work: Promise<void>, ms: number, message: string): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms)
  })
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer))
}

/**
 * In-process request store: the embedded default when no Redis is configured (one gateway
 * process). Each operation's check and write run in one synchronous section, which is what makes
 * `update` a compare-and-set and `claimOnce` single-use here.
 */
import { StoreUnavailableError } from '../grants/types.js'
import { deepFreeze } from '../util/freeze.js'
import {
  RequestExistsError,
  byNewest,
  isOpen,
  matches,
  retainUntil,
  type AccessRequest,
  type RequestStore,
  type RequestStoreOptions,
} from './request-store.js'

/** How often expired records and claims are dropped; reads never depend on it. */
const SWEEP_INTERVAL_MS = 10_000

export function createMemoryRequestStore(opts: RequestStoreOptions): RequestStore {
  const now = opts.now ?? Date.now
  const requests = new Map<string, AccessRequest>()
  const claims = new Map<string, number>()
  const attempts = new Map<string, { count: number; readonly until: number }>()
  let closed = false

  const live = (id: string, t: number): AccessRequest | undefined => {
    const r = requests.get(id)
    if (r === undefined || retainUntil(r, opts.retentionMs) > t) return r
    requests.delete(id)
    return undefined
  }
  const sweep = (): void => {
    const t = now()
    for (const id of requests.keys()) live(id, t)
    for (const [key, until] of claims) if (until <= t) claims.delete(key)
    for (const [key, a] of attempts) if (a.until <= t) attempts.delete(key)
  }
  // unref: an idle store must never keep the process alive.
  const sweeper = setInterval(sweep, SWEEP_INTERVAL_MS).unref()

  const assertOpen = (): void => {
    if (closed) throw new StoreUnavailableError('request store is closed')
  }
  /** A deep-frozen copy: the caller may reuse its object, and readers share ours safely. */
  const stored = (r: AccessRequest): AccessRequest => deepFreeze(structuredClone(r))

  return {
    kind: 'memory',

    async create(request) {
      assertOpen()
      if (request.version !== 1) throw new RangeError('a new request has version 1')
      if (live(request.id, now()) !== undefined) throw new RequestExistsError(`request ${request.id} already exists`)
      requests.set(request.id, stored(request))
    },

    async get(id) {
      assertOpen()
      return live(id, now())
    },

    async update(next) {
      assertOpen()
      const current = live(next.id, now())
      if (current === undefined || current.version !== next.version - 1) return false
      requests.set(next.id, stored(next))
      return true
    },

    async list(filter) {
      assertOpen()
      const t = now()
      return [...requests.keys()]
        .map((id) => live(id, t))
        .filter((r): r is AccessRequest => r !== undefined && matches(r, filter))
        .sort(byNewest)
    },

    async listOpen() {
      assertOpen()
      const t = now()
      return [...requests.keys()]
        .map((id) => live(id, t))
        .filter((r): r is AccessRequest => r !== undefined && isOpen(r))
        .sort(byNewest)
    },

    async claimOnce(key, ttlMs) {
      assertOpen()
      const t = now()
      const until = claims.get(key)
      if (until !== undefined && until > t) return false
      claims.set(key, t + ttlMs)
      return true
    },

    async countAttempt(key, windowMs) {
      assertOpen()
      const t = now()
      const current = attempts.get(key)
      if (current !== undefined && current.until > t) return ++current.count
      attempts.set(key, { count: 1, until: t + windowMs })
      return 1
    },

    async clearAttempts(key) {
      assertOpen()
      attempts.delete(key)
    },

    async ping() {
      assertOpen()
    },

    async close() {
      closed = true
      clearInterval(sweeper)
      requests.clear()
      claims.clear()
      attempts.clear()
    },
  }
}

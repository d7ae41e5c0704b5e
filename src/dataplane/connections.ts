/**
 * Open WebSocket connections by grant. A connection lives no longer than its grant: it is closed
 * when the grant expires (a timer at `expiresAt`) or is revoked (a store event, from any replica).
 */
import type { UpgradeHandle } from '../forward/forwarder.js'

/** RFC 6455 §7.4.1: 1008 = policy violation; 1001 = going away (gateway shutdown). */
export const CLOSE_POLICY = 1008
export const CLOSE_GOING_AWAY = 1001

interface Tracked {
  readonly handle: UpgradeHandle
  timer: NodeJS.Timeout | undefined
  reason: string | undefined
}

/** setTimeout fires at once for delays above 2^31-1 ms; re-arm in steps instead. */
const MAX_TIMER_MS = 2 ** 31 - 1

export class ConnectionRegistry {
  readonly #byGrant = new Map<string, Set<Tracked>>()
  readonly #now: () => number

  constructor(now: () => number = Date.now) {
    this.#now = now
  }

  get size(): number {
    let n = 0
    for (const s of this.#byGrant.values()) n += s.size
    return n
  }

  /**
   * Tracks a connection until it closes. Resolves with the reason the gateway closed it
   * (`grant_expired`, `grant_revoked`, `gateway_shutdown`) or `closed` when a peer did.
   */
  track(grantId: string, expiresAt: number, handle: UpgradeHandle): Promise<string> {
    const entry: Tracked = { handle, timer: undefined, reason: undefined }
    let set = this.#byGrant.get(grantId)
    if (!set) this.#byGrant.set(grantId, (set = new Set()))
    set.add(entry)
    this.#arm(entry, expiresAt)
    return handle.closed.then(() => {
      if (entry.timer) clearTimeout(entry.timer)
      const s = this.#byGrant.get(grantId)
      s?.delete(entry)
      if (s?.size === 0) this.#byGrant.delete(grantId)
      return entry.reason ?? 'closed'
    })
  }

  /** Closes every connection of a grant (revocation). */
  closeGrant(grantId: string, reason: string, message: string): number {
    const set = this.#byGrant.get(grantId)
    if (!set) return 0
    for (const entry of set) this.#close(entry, CLOSE_POLICY, reason, message)
    return set.size
  }

  /** Moves the cut-off of a grant's connections (grant extended). */
  extendGrant(grantId: string, expiresAt: number): void {
    for (const entry of this.#byGrant.get(grantId) ?? []) this.#arm(entry, expiresAt)
  }

  closeAll(reason: string, message: string): void {
    for (const set of this.#byGrant.values()) for (const e of set) this.#close(e, CLOSE_GOING_AWAY, reason, message)
  }

  #arm(entry: Tracked, expiresAt: number): void {
    if (entry.timer) clearTimeout(entry.timer)
    const delay = expiresAt - this.#now()
    entry.timer = setTimeout(
      () => (delay > MAX_TIMER_MS ? this.#arm(entry, expiresAt) : this.#close(entry, CLOSE_POLICY, 'grant_expired', 'grant expired')),
      Math.max(0, Math.min(delay, MAX_TIMER_MS)),
    )
    entry.timer.unref()
  }

  #close(entry: Tracked, code: number, reason: string, message: string): void {
    if (entry.reason !== undefined) return
    entry.reason = reason
    if (entry.timer) clearTimeout(entry.timer)
    entry.handle.close(code, message)
  }
}

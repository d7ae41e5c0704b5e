/**
 * Open WebSocket connections by grant. A connection lives no longer than its grant: it is closed
 * when the grant expires (a timer at `expiresAt`) or is revoked (a store event, from any replica),
 * and no longer than the policy allows it: each is re-checked every second (a window enforced at
 * use that closed, a contract that ended, an entitlement a reload removed).
 */
import type { UpgradeHandle } from '../forward/forwarder.js'

/** RFC 6455 §7.4.1: 1008 = policy violation; 1001 = going away (gateway shutdown). */
export const CLOSE_POLICY = 1008
export const CLOSE_GOING_AWAY = 1001

/** Why the policy no longer allows an open connection (a deny code), or undefined while it does. */
export type PolicyRecheck = () => { readonly code: string; readonly detail: string } | undefined

interface Tracked {
  readonly handle: UpgradeHandle
  readonly recheck: PolicyRecheck | undefined
  timer: NodeJS.Timeout | undefined
  reason: string | undefined
}

/** How often open connections are held against the policy in force. */
export const RECHECK_EVERY_MS = 1000

/** setTimeout fires at once for delays above 2^31-1 ms; re-arm in steps instead. */
const MAX_TIMER_MS = 2 ** 31 - 1

export class ConnectionRegistry {
  readonly #byGrant = new Map<string, Set<Tracked>>()
  readonly #now: () => number
  #rechecking: NodeJS.Timeout | undefined

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
  track(grantId: string, expiresAt: number, handle: UpgradeHandle, recheck?: PolicyRecheck): Promise<string> {
    const entry: Tracked = { handle, recheck, timer: undefined, reason: undefined }
    let set = this.#byGrant.get(grantId)
    if (!set) this.#byGrant.set(grantId, (set = new Set()))
    set.add(entry)
    this.#arm(entry, expiresAt)
    if (recheck !== undefined && this.#rechecking === undefined) {
      this.#rechecking = setInterval(() => this.#recheckAll(), RECHECK_EVERY_MS)
      this.#rechecking.unref()
    }
    return handle.closed.then(() => {
      if (entry.timer) clearTimeout(entry.timer)
      const s = this.#byGrant.get(grantId)
      s?.delete(entry)
      if (s?.size === 0) this.#byGrant.delete(grantId)
      if (this.#byGrant.size === 0 && this.#rechecking !== undefined) {
        clearInterval(this.#rechecking)
        this.#rechecking = undefined
      }
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

  /** Closes one tracked connection. */
  closeOne(grantId: string, handle: UpgradeHandle, reason: string, message: string): void {
    for (const entry of this.#byGrant.get(grantId) ?? []) if (entry.handle === handle) this.#close(entry, CLOSE_POLICY, reason, message)
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

  #recheckAll(): void {
    for (const set of this.#byGrant.values()) {
      for (const entry of set) {
        const refused = entry.reason === undefined ? entry.recheck?.() : undefined
        if (refused !== undefined) this.#close(entry, CLOSE_POLICY, refused.code, refused.detail)
      }
    }
  }

  #close(entry: Tracked, code: number, reason: string, message: string): void {
    if (entry.reason !== undefined) return
    entry.reason = reason
    if (entry.timer) clearTimeout(entry.timer)
    entry.handle.close(code, message)
  }
}

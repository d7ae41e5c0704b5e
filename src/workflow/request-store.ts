/**
 * The access-request store contract. Two implementations (memory, Redis) pass one shared contract
 * suite (test/workflow/request-store-contract.ts). Times are epoch milliseconds.
 *
 * Every state change is a compare-and-set on the record's `version`: the caller reads a request,
 * computes the next record, and `update` writes it only if nobody else wrote in between. Of two
 * replicas recording the final approval at the same moment, exactly one update succeeds, so exactly
 * one caller learns "I moved it to approved" and issues the grant; the other re-reads and finds it
 * already approved. The same holds for expiry, escalation and every other transition, which is how
 * each audit event and notification is produced once across replicas.
 */
import type { ApprovalStage } from '../policy/principals.js'

/** Request states (DESIGN.md): a request leaves `pending` once and never comes back. */
export type RequestStatus = 'pending' | 'approved' | 'denied' | 'expired' | 'cancelled'

export const REQUEST_STATUSES: readonly RequestStatus[] = Object.freeze(['pending', 'approved', 'denied', 'expired', 'cancelled'])

/**
 * `access`: a new grant. `extension`: moves the expiry of the grant of an earlier approved request.
 * `break_glass`: self-service access approved at once, with a review that stays open until an
 * approver closes it.
 */
export type RequestKind = 'access' | 'extension' | 'break_glass'

/** One approver's approval of one stage. */
export interface Approval {
  /** The approver's id: a local approver id or the OIDC `sub`. */
  readonly approver: string
  /** Zero-based index into the request's `stages`. */
  readonly stage: number
  readonly at: number
  readonly comment?: string
}

/** The after-the-fact review of a break-glass request. */
export interface BreakGlassReview {
  readonly status: 'open' | 'closed'
  readonly reviewedBy?: string
  readonly reviewedAt?: number
  readonly comment?: string
}

export interface AccessRequest {
  /** `r_` + 22 url-safe characters (128 random bits). */
  readonly id: string
  /** Compare-and-set revision: 1 on create, +1 on every update. */
  readonly version: number
  readonly kind: RequestKind
  /** The requesting sub-processor's id. */
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  /** Requested lifetime of the grant (or, for an extension, how much longer). */
  readonly durationMs: number
  readonly reason: string
  readonly ticket?: string
  /** Version of the policy the request was judged under. */
  readonly policyVersion: string
  /** The approval policy's id and its stages, as they were when the request was judged. */
  readonly approvalPolicy: string
  readonly stages: readonly ApprovalStage[]
  readonly status: RequestStatus
  readonly createdAt: number
  /** A pending request expires at this instant. */
  readonly expiresAt: number
  /** Pending past this instant, the request is escalated (once). */
  readonly escalateAt?: number
  readonly escalatedAt?: number
  readonly approvals: readonly Approval[]
  /** When it left `pending`, who moved it (approver, requester, `system`) and their comment. */
  readonly decidedAt?: number
  readonly decidedBy?: string
  readonly comment?: string
  /**
   * The grant this request creates or extends. For access and break-glass requests it is derived
   * from the request id (`g_` + the id's random part), so issuing it twice can only ever hit the
   * same id; an extension names the grant of the request it extends.
   */
  readonly grantId: string
  /** Extension: the request whose grant it extends. */
  readonly extends?: string
  /**
   * The entitlement's claim-by window (`claim_within`), recorded when the request was judged (access
   * requests only): the grant's clock starts at its first use within this long after approval.
   */
  readonly claimWithinMs?: number
  /**
   * Set on approval: the grant's validity (the expiry already capped by the contract end). With a
   * claim-by window, `grantExpiresAt` is the latest the grant could end (`Grant.claim.notAfter`)
   * and `grantClaimBy` when the unclaimed grant ends unless it is used.
   */
  readonly grantStartsAt?: number
  readonly grantExpiresAt?: number
  readonly grantClaimBy?: number
  readonly review?: BreakGlassReview
  /**
   * The ids of the writes that made this record, one per version, oldest first: the last one made
   * the current version (a record stored before writes were named has fewer than `version`). A
   * writer whose answer was lost tells from them whether its write landed, even after later writes
   * built on it, and even when another writer's record is identical to its own (an expiry is).
   */
  readonly writes?: readonly string[]
}

export interface RequestFilter {
  readonly status?: RequestStatus
  readonly subject?: string
}

export class RequestExistsError extends Error {
  override readonly name = 'RequestExistsError'
  readonly code = 'request_exists'
}

export interface RequestStore {
  readonly kind: 'memory' | 'redis'
  /**
   * Stores a new request (its `version` must be 1). Rejects with RequestExistsError when the id is
   * taken, StoreUnavailableError when the store is down.
   */
  create(request: AccessRequest): Promise<void>
  /** The request, or undefined when unknown or past its retention. */
  get(id: string): Promise<AccessRequest | undefined>
  /**
   * Compare-and-set: writes `next` only if the stored record's version is `next.version - 1`.
   * Resolves true when written, false when another writer got there first or the request is gone.
   */
  update(next: AccessRequest): Promise<boolean>
  /** Requests within retention matching the filter, newest first. */
  list(filter?: RequestFilter): Promise<AccessRequest[]>
  /**
   * Requests that still need attention: pending ones, and break-glass requests with an open review.
   * What the sweeper scans and the pending / unreviewed gauges count.
   */
  listOpen(): Promise<AccessRequest[]>
  /**
   * Single-use marker: resolves true the first time `key` is claimed, false while the claim lives
   * (`ttlMs`). Used for assertion `jti`s and TOTP codes. Redis: `SET NX PX`.
   */
  claimOnce(key: string, ttlMs: number): Promise<boolean>
  /**
   * Counts one attempt under `key` and resolves with the number of attempts in the current window,
   * this one included. The window is fixed: it opens at the first attempt and lasts `windowMs`,
   * then the count starts again. Every replica sharing the store adds to the same count (TOTP
   * lockout). Redis: `INCR`, plus `PEXPIRE` when the key is new, in one script.
   */
  countAttempt(key: string, windowMs: number): Promise<number>
  /** Forgets the attempts counted under `key` (the count starts again from zero). */
  clearAttempts(key: string): Promise<void>
  ping(): Promise<void>
  close(): Promise<void>
}

export interface RequestStoreOptions {
  /** Deadline of each operation, after which it fails with StoreUnavailableError. */
  readonly timeoutMs: number
  /** How long a request is kept after its pending deadline and its grant's expiry, whichever is later. */
  readonly retentionMs: number
  readonly now?: () => number
  /** Errors no caller can receive (a dropped Redis connection, a failed index update). */
  readonly onError?: (err: Error) => void
}

export interface RedisRequestStoreOptions extends RequestStoreOptions {
  readonly url: string
  readonly keyPrefix: string
}

/**
 * Until when the store keeps a request: retention after the later of its pending deadline and its
 * grant's expiry; forever while a break-glass review is open (it must not vanish unreviewed).
 */
export function retainUntil(r: AccessRequest, retentionMs: number): number {
  if (r.review?.status === 'open') return Number.POSITIVE_INFINITY
  return Math.max(r.expiresAt, r.grantExpiresAt ?? 0) + retentionMs
}

/** True when the request belongs in `listOpen()`. */
export function isOpen(r: AccessRequest): boolean {
  return r.status === 'pending' || r.review?.status === 'open'
}

/** Newest first, ties by id, the same order in both stores. */
export function byNewest(a: AccessRequest, b: AccessRequest): number {
  return b.createdAt - a.createdAt || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)
}

export function matches(r: AccessRequest, filter: RequestFilter | undefined): boolean {
  return (filter?.status === undefined || r.status === filter.status) && (filter?.subject === undefined || r.subject === filter.subject)
}

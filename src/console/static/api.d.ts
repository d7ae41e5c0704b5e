/** Types of api.js for the TypeScript side (tests); api.js is the implementation the browser runs. */

export type ConsoleCredential =
  | { readonly kind: 'oidc'; readonly idToken: string }
  | { readonly kind: 'local'; readonly approver: string; readonly operatorToken?: string }

export declare class ConsoleApiError extends Error {
  constructor(e: { status: number; code: string; message: string; requestId?: string; details?: string[] })
  readonly status: number
  readonly code: string
  readonly requestId: string | undefined
  readonly details: readonly string[]
}

/** A request as the API shows it (src/control/requests-api.ts, requestView). */
export interface RequestView {
  readonly id: string
  readonly kind: 'access' | 'extension' | 'break_glass'
  readonly status: string
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  readonly duration_s: number
  readonly reason: string
  readonly ticket?: string
  readonly stages: readonly { readonly group: string; readonly approvals_required: number; readonly approvals: readonly { readonly approver: string; readonly at: string; readonly comment?: string }[] }[]
  readonly created_at: string
  readonly expires_at: string
  readonly decided_at?: string
  readonly decided_by?: string
  readonly grant_id: string
  readonly grant?: { readonly id: string; readonly status: string; readonly starts_at?: string; readonly expires_at?: string }
  readonly [field: string]: unknown
}

/**
 * An active grant as `GET /v1/grants` shows it (src/control/server.ts, grantView): one an
 * operator issued (`POST /v1/grants`) or one that came out of an access request. Never its token.
 */
export interface ActiveGrant {
  readonly id: string
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  readonly status: 'active'
  readonly starts_at: string
  /** While the grant is unclaimed, its claim-by instant. */
  readonly expires_at: string
  /**
   * Who issued it: the operator (`operator`, `operator:<name>`, `local-operator`), or for a grant
   * from an access request the approver whose decision issued it (`auto-approval` when automatic).
   */
  readonly issued_by: string
  readonly reason?: string
  readonly policy_version?: string
  /** The access request it came out of; absent for a grant an operator issued directly. */
  readonly access_request_id?: string
  readonly claim?: {
    readonly status: 'unclaimed' | 'claimed'
    readonly claim_by: string
    readonly duration_s: number
    readonly not_after: string
    readonly claimed_at?: string
  }
}

export interface ConsoleApiClient {
  readonly needsTotp: boolean
  readonly identity: { readonly kind: 'oidc' | 'local'; readonly name: string; readonly expiresAt?: number }
  serverNow(): number
  listRequests(status: string): Promise<RequestView[]>
  listPending(): Promise<RequestView[]>
  getRequest(id: string): Promise<RequestView>
  approve(id: string, input?: { comment?: string; totp?: string }): Promise<RequestView>
  deny(id: string, input?: { comment?: string; totp?: string }): Promise<RequestView>
  listActiveGrants(): Promise<ActiveGrant[]>
  revokeGrant(grant: Pick<ActiveGrant, 'id'>, input?: { reason?: string; totp?: string }): Promise<void>
}

/** Exactly what the client passes to fetch: the tests record it. */
export interface ConsoleFetchInit {
  readonly method: string
  readonly headers: Record<string, string>
  readonly body?: string
  readonly cache: 'no-store'
  readonly credentials: 'omit'
  readonly redirect: 'error'
  readonly referrerPolicy: 'no-referrer'
}

/** The part of a fetch Response the client reads. */
export interface ConsoleFetchAnswer {
  readonly status: number
  readonly ok: boolean
  readonly headers: { get(name: string): string | null }
  text(): Promise<string>
}

export type ConsoleFetch = (url: string, init: ConsoleFetchInit) => Promise<ConsoleFetchAnswer>

export declare function createApiClient(options: {
  credential: ConsoleCredential
  /** Default: the global fetch. */
  fetch?: ConsoleFetch
  /** Default '' (the page's origin); the control plane's URL under Node. */
  baseUrl?: string
}): ConsoleApiClient

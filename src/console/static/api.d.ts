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

export interface ActiveGrant {
  readonly grant_id: string
  readonly request_id: string
  readonly kind: string
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  readonly reason: string
  readonly ticket?: string
  readonly decided_by: string
  readonly starts_at: string
  readonly expires_at: string
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
  revokeGrant(grant: Pick<ActiveGrant, 'grant_id' | 'request_id'>, input?: { reason?: string; totp?: string }): Promise<void>
}

export declare function createApiClient(options: {
  credential: ConsoleCredential
  fetch?: (url: string, init: RequestInit) => Promise<Response>
  baseUrl?: string
}): ConsoleApiClient

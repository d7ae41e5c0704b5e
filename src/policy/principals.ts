/**
 * Compiled principals and workflow rules of a policy: sub-processors and their entitlements,
 * approver groups, approval policies, local approvers. The policy loader (policy.ts) builds these
 * from `policies/*.yaml`; the access-request workflow and the data plane read them.
 *
 * YAML shape (snake_case; see policies/example.yaml and README "Policy"):
 *
 * ```yaml
 * subprocessors:
 *   - id: acme
 *     name: ACME Support Ltd
 *     contract_ends: "2027-06-30"            # no grant may outlive it (end of that day, UTC)
 *     keys:                                   # for its signed control-plane assertions
 *       - jwk: { kty: OKP, crv: Ed25519, x: "…" }
 *       - jwks_file: keys/acme.jwks.json      # relative to the policy file
 *       - jwks_url: https://acme.example/.well-known/jwks.json
 *     entitlements:
 *       - resource: crm-api
 *         scopes: ["GET /crm/customers/**", "GET,POST /crm/tickets/**"]
 *         max_duration: 4h                    # ≤ the resource's max_ttl
 *         approval: two-stage                 # approval policy id
 *         window: "Mon-Fri 08:00-18:00 Europe/Berlin"   # optional: when it may be requested
 *         enforce_window_at_use: false        # true: also checked on every data-plane request
 *         require_ticket: true
 *         claim_within: 1h                    # optional: the clock starts at first use within this
 *         auto_approve: { max_duration: 30m, scopes: ["GET /crm/customers/**"] }  # optional
 *         break_glass: { max_duration: 1h }   # optional self-service with mandatory review
 * approver_groups:
 *   - id: crm-owners
 *     members: [alice, bob]                   # local approver ids or OIDC subjects / emails
 *     oidc_groups: [crm-owners]               # optional: IdP groups claim values that count as members
 * approval_policies:
 *   - id: two-stage
 *     stages:
 *       - { group: crm-owners, approvals: 1 }
 *       - { group: security, approvals: 1 }
 *     request_ttl: 24h                        # a pending request expires after this
 *     escalate_after: 30m                     # optional
 *     escalation_group: security-oncall       # notified on escalation
 *     escalation_admits: false                # true: escalation group members may approve any stage
 * local_approvers:                            # the embedded default with no IdP: TOTP second factor
 *   - id: alice
 *     totp_secret: { env: ALICE_TOTP_SECRET } # base32 (RFC 6238); or { file: path }
 * mfa:                                        # what counts as MFA in an OIDC ID token
 *   amr_any: [mfa, otp, hwk, swk]
 *   acr_any: []
 * ```
 */
import type { JWK } from 'jose'
import type { ScopeSet } from './scope.js'

/** A weekly time window in an IANA time zone, e.g. `Mon-Fri 08:00-18:00 Europe/Berlin`. */
export interface TimeWindow {
  readonly source: string
  /** True when the instant (epoch ms) falls inside the window. */
  contains(at: number): boolean
}

export interface Entitlement {
  readonly resource: string
  /** The scope patterns it may ask for; a request's scopes must each be covered by one of these. */
  readonly scopes: readonly string[]
  readonly scopeSet: ScopeSet
  readonly maxDurationMs: number
  readonly approval: string
  readonly window: TimeWindow | undefined
  readonly enforceWindowAtUse: boolean
  readonly requireTicket: boolean
  readonly claimWithinMs: number | undefined
  readonly autoApprove: { readonly maxDurationMs: number; readonly scopes: readonly string[] } | undefined
  readonly breakGlass: { readonly maxDurationMs: number } | undefined
}

export type KeySourceSpec =
  | { readonly kind: 'jwk'; readonly jwk: Readonly<JWK> }
  | { readonly kind: 'jwks_file'; readonly keys: readonly Readonly<JWK>[] }
  | { readonly kind: 'jwks_url'; readonly url: string }

export interface Subprocessor {
  readonly id: string
  readonly name: string
  /** End of the contract's last day (epoch ms, UTC): no grant may outlive it. */
  readonly contractEndsAt: number
  readonly keys: readonly KeySourceSpec[]
  readonly entitlements: readonly Entitlement[]
}

export interface ApproverGroup {
  readonly id: string
  readonly members: ReadonlySet<string>
  readonly oidcGroups: ReadonlySet<string>
}

export interface ApprovalStage {
  readonly group: string
  readonly approvals: number
}

export interface ApprovalPolicy {
  readonly id: string
  readonly stages: readonly ApprovalStage[]
  readonly requestTtlMs: number
  readonly escalateAfterMs: number | undefined
  readonly escalationGroup: string | undefined
  readonly escalationAdmits: boolean
}

export interface LocalApprover {
  readonly id: string
  /** RFC 6238 shared secret (decoded bytes). Non-enumerable on the compiled object: never serialised. */
  readonly totpSecret: Uint8Array
}

export interface MfaRule {
  readonly amrAny: readonly string[]
  readonly acrAny: readonly string[]
}

/** The principals part of a compiled Policy. */
export interface Principals {
  readonly subprocessors: ReadonlyMap<string, Subprocessor>
  readonly approverGroups: ReadonlyMap<string, ApproverGroup>
  readonly approvalPolicies: ReadonlyMap<string, ApprovalPolicy>
  readonly localApprovers: ReadonlyMap<string, LocalApprover>
  readonly mfa: MfaRule
}

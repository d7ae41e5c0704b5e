/**
 * Who an authenticated approver is, for policy: an id, the names group membership is matched by,
 * the IdP groups it brings, and whether it proved a second factor for this call.
 *
 * - OIDC approver: id = the token's `sub`; `members:` entries match the `sub` or the verified
 *   email; `oidc_groups:` entries match values of the configured groups claim; MFA is proven when
 *   the token's `amr` contains one of the policy's `mfa.amr_any` values, or its `acr` is one of
 *   `mfa.acr_any`. A rule with both lists empty is never satisfied: no MFA, no approval.
 * - Local approver: id = the `local_approvers` id; `members:` entries match it; MFA is proven by a
 *   TOTP code checked on each call (totp.ts), which the caller reports here.
 */
import type { ApproverGroup, MfaRule } from '../../policy/principals.js'
import type { OidcIdentity } from './oidc.js'

export interface Approver {
  /** Stable id, recorded with each approval and named as the audit `actor`. */
  readonly id: string
  readonly kind: 'oidc' | 'local'
  /** The names `members:` lists are matched against (id, verified email). */
  readonly names: ReadonlySet<string>
  readonly oidcGroups: ReadonlySet<string>
  /** A second factor was proven for this call. */
  readonly mfa: boolean
}

export function oidcApprover(identity: OidcIdentity, rule: MfaRule): Approver {
  const names = new Set([identity.sub])
  if (identity.email !== undefined) names.add(identity.email)
  return {
    id: identity.sub,
    kind: 'oidc',
    names,
    oidcGroups: new Set(identity.groups),
    mfa: satisfiesMfa(identity, rule),
  }
}

export function localApprover(id: string, mfa: boolean): Approver {
  return { id, kind: 'local', names: new Set([id]), oidcGroups: new Set(), mfa }
}

/** The policy's MFA rule applied to an ID token's `amr` (RFC 8176) and `acr` claims. */
export function satisfiesMfa(identity: Pick<OidcIdentity, 'amr' | 'acr'>, rule: MfaRule): boolean {
  if (identity.amr.some((m) => rule.amrAny.includes(m))) return true
  return identity.acr !== undefined && rule.acrAny.includes(identity.acr)
}

export function isMember(approver: Approver, group: ApproverGroup | undefined): boolean {
  if (group === undefined) return false
  for (const n of approver.names) if (group.members.has(n)) return true
  for (const g of approver.oidcGroups) if (group.oidcGroups.has(g)) return true
  return false
}

/** True when the approver is (one of the names of) the requesting sub-processor. */
export function isRequester(approver: Approver, subject: string): boolean {
  return approver.names.has(subject)
}

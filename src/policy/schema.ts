/**
 * Policy files (`policies/*.yaml`): one TypeBox schema that is both the runtime validator and the
 * TypeScript type, and the source of `policies/schema.json` (`npm run schema`) for editors. Unknown
 * keys are errors. Semantic checks (unique ids, references, secrets present, route conflicts, scope
 * and window syntax, impossible values) run after the schema check, in policy.ts and
 * compile-principals.ts. The YAML shape of the principals is shown in principals.ts.
 */
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN } from '../util/duration.js'

const Strict = { additionalProperties: false } as const
export const ID_PATTERN = '^[a-z0-9][a-z0-9._-]{0,62}$'
const Id = Type.String({
  pattern: ID_PATTERN,
  errorMessage: 'expected an id: lowercase letters, digits, ".", "_", "-" (at most 63, starting with a letter or digit)',
})
const Duration = Type.String({
  pattern: DURATION_PATTERN,
  errorMessage: 'expected a duration such as 30s, 15m, 2h or 7d',
})

/** One upstream credential, injected as a header; the value never appears in policy. */
export const CredentialSchema = Type.Object(
  {
    header: Type.String({
      pattern: "^[A-Za-z0-9!#$%&'*+.^_`|~-]+$",
      errorMessage: 'expected an HTTP header name',
    }),
    env: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', errorMessage: 'expected an environment variable name' })),
    file: Type.Optional(Type.String({ minLength: 1 })),
    prefix: Type.Optional(Type.String({ description: 'Prepended to the secret, e.g. "Bearer ".' })),
  },
  Strict,
)

export const ResourceSchema = Type.Object(
  {
    id: Id,
    description: Type.Optional(Type.String()),
    upstream: Type.String({
      pattern: '^https?://',
      errorMessage: 'expected an http:// or https:// URL',
    }),
    match: Type.Object(
      {
        path_prefix: Type.Optional(Type.String({ pattern: '^/', errorMessage: 'expected a path starting with /' })),
        host: Type.Optional(
          Type.String({ pattern: '^[A-Za-z0-9.-]+$', errorMessage: 'expected a host name without port or scheme' }),
        ),
      },
      Strict,
    ),
    strip_prefix: Type.Optional(Type.Boolean()),
    max_ttl: Duration,
    websocket: Type.Optional(Type.Boolean()),
    timeout: Type.Optional(Duration),
    credentials: Type.Optional(Type.Array(CredentialSchema)),
  },
  Strict,
)

const EnvName = Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', errorMessage: 'expected an environment variable name' })

/** Where a secret comes from: exactly one of an environment variable or a file. */
const SecretSource = Type.Object(
  {
    env: Type.Optional(EnvName),
    file: Type.Optional(Type.String({ minLength: 1, description: 'Relative to the policy file.' })),
  },
  { ...Strict, minProperties: 1, maxProperties: 1, errorMessage: 'expected exactly one of env or file' },
)

const Scope = Type.String({ minLength: 1, description: '`METHODS PATH`, e.g. "GET /crm/customers/**".' })
const Scopes = Type.Array(Scope, { minItems: 1, errorMessage: 'expected a non-empty list of scopes such as "GET /crm/**"' })

/** A sub-processor's public key: exactly one of an inline JWK, a JWKS file or a JWKS URL. */
export const KeySourceSchema = Type.Object(
  {
    jwk: Type.Optional(
      Type.Object(
        { kty: Type.String({ description: 'OKP (Ed25519), EC or RSA.' }) },
        { additionalProperties: true, description: 'An inline public JWK.' },
      ),
    ),
    jwks_file: Type.Optional(Type.String({ minLength: 1, description: 'A JWKS file, relative to the policy file.' })),
    jwks_url: Type.Optional(
      Type.String({
        pattern: '^(https://|http://(127\\.0\\.0\\.1|localhost|\\[::1\\])([:/]|$))',
        errorMessage: 'expected an https:// URL (http:// only for localhost)',
      }),
    ),
  },
  { ...Strict, minProperties: 1, maxProperties: 1, errorMessage: 'expected exactly one of jwk, jwks_file or jwks_url' },
)

export const EntitlementSchema = Type.Object(
  {
    resource: Id,
    scopes: Scopes,
    max_duration: Duration,
    approval: Id,
    window: Type.Optional(
      Type.String({ minLength: 1, description: 'When it may be requested: "DAYS HH:MM-HH:MM ZONE", e.g. "Mon-Fri 08:00-18:00 Europe/Berlin".' }),
    ),
    enforce_window_at_use: Type.Optional(Type.Boolean({ description: 'Also deny data-plane requests outside the window.' })),
    require_ticket: Type.Optional(Type.Boolean()),
    claim_within: Type.Optional(
      Type.String({
        pattern: DURATION_PATTERN,
        errorMessage: 'expected a duration such as 30s, 15m, 2h or 7d',
        description:
          "Claim-by window: an approved grant's clock starts at its first use within this long after approval (unused, it ends). Not with auto_approve; break-glass grants start at once.",
      }),
    ),
    auto_approve: Type.Optional(Type.Object({ max_duration: Duration, scopes: Scopes }, Strict)),
    break_glass: Type.Optional(Type.Object({ max_duration: Duration }, Strict)),
  },
  Strict,
)

export const SubprocessorSchema = Type.Object(
  {
    id: Id,
    name: Type.String({ minLength: 1 }),
    contract_ends: Type.String({
      pattern: '^[0-9]{4}-[0-9]{2}-[0-9]{2}$',
      errorMessage: 'expected a date YYYY-MM-DD',
      description: 'No grant outlives the end of this day (UTC).',
    }),
    keys: Type.Optional(Type.Array(KeySourceSchema)),
    entitlements: Type.Optional(Type.Array(EntitlementSchema)),
  },
  Strict,
)

export const ApproverGroupSchema = Type.Object(
  {
    id: Id,
    members: Type.Optional(Type.Array(Type.String({ minLength: 1, description: 'A local approver id, OIDC subject or email.' }))),
    oidc_groups: Type.Optional(Type.Array(Type.String({ minLength: 1 }))),
  },
  Strict,
)

export const ApprovalPolicySchema = Type.Object(
  {
    id: Id,
    stages: Type.Array(
      Type.Object(
        {
          group: Id,
          approvals: Type.Integer({ minimum: 1, errorMessage: 'expected a whole number of approvals, at least 1' }),
        },
        Strict,
      ),
      { minItems: 1, errorMessage: 'expected at least one stage' },
    ),
    request_ttl: Duration,
    escalate_after: Type.Optional(Duration),
    escalation_group: Type.Optional(Id),
    escalation_admits: Type.Optional(Type.Boolean()),
  },
  Strict,
)

export const LocalApproverSchema = Type.Object(
  {
    id: Id,
    totp_secret: SecretSource,
  },
  Strict,
)

export const MfaSchema = Type.Object(
  {
    amr_any: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'ID-token `amr` values that prove MFA (RFC 8176).' })),
    acr_any: Type.Optional(Type.Array(Type.String({ minLength: 1 }), { description: 'ID-token `acr` values that prove MFA.' })),
  },
  Strict,
)

export const PolicyFileSchema = Type.Object(
  {
    resources: Type.Optional(Type.Array(ResourceSchema)),
    subprocessors: Type.Optional(Type.Array(SubprocessorSchema)),
    approver_groups: Type.Optional(Type.Array(ApproverGroupSchema)),
    approval_policies: Type.Optional(Type.Array(ApprovalPolicySchema)),
    local_approvers: Type.Optional(Type.Array(LocalApproverSchema)),
    mfa: Type.Optional(MfaSchema),
  },
  { ...Strict, title: 'jitgate policy file' },
)

export type PolicyFile = Static<typeof PolicyFileSchema>
export type ResourceSpec = Static<typeof ResourceSchema>
export type SubprocessorSpec = Static<typeof SubprocessorSchema>
export type EntitlementSpec = Static<typeof EntitlementSchema>
export type ApproverGroupSpec = Static<typeof ApproverGroupSchema>
export type ApprovalPolicySpec = Static<typeof ApprovalPolicySchema>
export type LocalApproverSpec = Static<typeof LocalApproverSchema>
export type MfaSpec = Static<typeof MfaSchema>

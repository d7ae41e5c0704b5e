/**
 * Policy files (`policies/*.yaml`): one TypeBox schema that is both the runtime validator and the
 * TypeScript type. Unknown keys are errors. Semantic checks (unique ids, secrets present, route
 * conflicts, scope syntax) run after the schema check, in policy.ts.
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

export const PolicyFileSchema = Type.Object(
  {
    resources: Type.Optional(Type.Array(ResourceSchema)),
  },
  Strict,
)

export type PolicyFile = Static<typeof PolicyFileSchema>
export type ResourceSpec = Static<typeof ResourceSchema>

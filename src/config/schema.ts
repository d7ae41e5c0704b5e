/**
 * The gateway configuration file (`config/default.yaml`, `--config FILE`): one TypeBox schema that
 * is both the runtime validator and the TypeScript type. Keys are snake_case; unknown keys are errors.
 */
import { Type, type Static } from '@sinclair/typebox'
import { DURATION_PATTERN } from '../util/duration.js'
import { AuditSinkSchema } from './audit-sinks.js'
import { NOTIFICATION_EVENTS } from '../workflow/notification-events.js'

const Duration = (description: string) =>
  Type.String({ pattern: DURATION_PATTERN, description, errorMessage: 'expected a duration such as 250ms, 30s, 15m, 2h or 7d' })
const Listen = (description: string) =>
  Type.String({
    pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]+):[0-9]{1,5}$',
    description,
    errorMessage: 'expected host:port, e.g. 0.0.0.0:8080 or [::1]:8081',
  })
const Strict = { additionalProperties: false } as const

export const ConfigSchema = Type.Object(
  {
    gateway_id: Type.Optional(
      Type.String({ pattern: '^[A-Za-z0-9._-]{0,64}$', description: 'Names this replica in audit events; default hostname-pid.' }),
    ),
    data_dir: Type.Optional(Type.String({ description: 'Local state (generated dev keys). Relative to this file.' })),
    data_plane: Type.Optional(
      Type.Object(
        {
          listen: Type.Optional(Listen('Sub-processor traffic. Env: JITGATE_DATA_LISTEN.')),
          upstream_timeout: Type.Optional(Duration('Until the upstream sends response headers, counted from the end of the request body (re-armed while an upload moves).')),
          connect_timeout: Type.Optional(Duration('Connecting to an upstream.')),
          send_timeout: Type.Optional(Duration('How long a client may leave the response unread before its connection is cut.')),
          drain_timeout: Type.Optional(Duration('On SIGTERM, how long in-flight requests may finish.')),
          max_inflight_per_grant: Type.Optional(
            Type.Integer({ minimum: 0, description: 'Requests one grant may have in flight at once (0: no limit); more get 429 too_many_requests.' }),
          ),
          public_proto: Type.Optional(Type.Union([Type.Literal('http'), Type.Literal('https')])),
        },
        Strict,
      ),
    ),
    control_plane: Type.Optional(
      Type.Object(
        {
          listen: Type.Optional(Listen('Operator API, metrics, health, JWKS. Env: JITGATE_CONTROL_LISTEN.')),
          admin_token_file: Type.Optional(
            Type.String({ description: 'File holding the operator bearer token. Env JITGATE_ADMIN_TOKEN takes precedence.' }),
          ),
        },
        Strict,
      ),
    ),
    policy: Type.Optional(
      Type.Object(
        {
          dir: Type.Optional(Type.String({ minLength: 1, description: 'Folder of *.yaml policy files. Env: JITGATE_POLICY_DIR.' })),
          watch: Type.Optional(Type.Boolean({ description: 'Reload when a file of the folder changes (SIGHUP always reloads).' })),
        },
        Strict,
      ),
    ),
    store: Type.Optional(
      Type.Object(
        {
          redis_url: Type.Optional(
            Type.String({ description: 'redis://, rediss:// or unix:// URL; empty = embedded memory store. Env: REDIS_URL.' }),
          ),
          key_prefix: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9:._-]{1,64}$' })),
          timeout: Type.Optional(Duration('Per grant-store operation; past it the request fails closed (503).')),
          tombstone_ttl: Type.Optional(Duration('Minimum time a revoked grant is remembered as revoked.')),
          expiry_sweep_interval: Type.Optional(
            Duration('How often each replica writes `grant.expired` for the grants that have expired since (at least 100ms).'),
          ),
        },
        Strict,
      ),
    ),
    tokens: Type.Optional(
      Type.Object(
        {
          issuer: Type.Optional(Type.String({ minLength: 1, description: 'The `iss` of JIT tokens.' })),
          signing_key_file: Type.Optional(
            Type.String({ description: 'Private Ed25519 key (JWK or PKCS#8 PEM). Env: JITGATE_SIGNING_KEY_FILE or JITGATE_SIGNING_KEY.' }),
          ),
          verification_key_files: Type.Optional(
            Type.Array(Type.String({ minLength: 1 }), { description: 'Extra public keys still accepted (rotation).' }),
          ),
          clock_tolerance: Type.Optional(Duration('Allowed clock skew for exp/nbf.')),
          cache_size: Type.Optional(Type.Integer({ minimum: 0, maximum: 1_000_000, description: 'Verified-token cache entries.' })),
        },
        Strict,
      ),
    ),
    audit: Type.Optional(
      Type.Object(
        {
          output: Type.Optional(Type.String({ minLength: 1, description: '`stdout` or a file path. Env: JITGATE_AUDIT_OUTPUT.' })),
          sinks: Type.Optional(Type.Array(AuditSinkSchema, { minItems: 1, description: 'Several sinks, each in its format (instead of output).' })),
          checkpoint: Type.Optional(
            Type.Object(
              {
                every: Type.Optional(Type.Integer({ minimum: 1, maximum: 1_000_000, description: 'Signed checkpoint after this many events.' })),
                interval: Type.Optional(Duration('…or after this long with events pending.')),
              },
              Strict,
            ),
          ),
        },
        Strict,
      ),
    ),
    approvers: Type.Optional(
      Type.Object(
        {
          oidc: Type.Optional(
            Type.Object(
              {
                issuer: Type.String({ minLength: 1, description: "The identity provider's issuer identifier: the ID tokens' `iss`, exactly." }),
                jwks_url: Type.String({ pattern: '^https?://', description: "The provider's JWKS URL (fetched and cached)." }),
                audience: Type.String({ minLength: 1, description: "The gateway's client id at the provider: the required `aud`." }),
                groups_claim: Type.Optional(Type.String({ minLength: 1, description: 'The ID token claim listing the groups; default `groups`.' })),
                max_age: Type.Optional(
                  Duration('The oldest sign-in an ID token may prove: its `auth_time` (or `iat` without one) at most this long ago; default 12h.'),
                ),
              },
              Strict,
            ),
          ),
        },
        Strict,
      ),
    ),
    workflow: Type.Optional(
      Type.Object(
        {
          sweep_interval: Type.Optional(Duration('How often each replica expires overdue pending requests and escalates due ones.')),
          retention: Type.Optional(Duration("How long a request is kept after its deadline and its grant's expiry.")),
        },
        Strict,
      ),
    ),
    notifications: Type.Optional(
      Type.Object(
        {
          webhooks: Type.Optional(
            Type.Array(
              Type.Object(
                {
                  url: Type.String({ pattern: '^https?://', description: 'Where to POST.' }),
                  format: Type.Optional(Type.Union([Type.Literal('generic'), Type.Literal('slack')])),
                  secret_env: Type.Optional(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$', description: 'Environment variable holding the HMAC key (generic).' })),
                  secret_file: Type.Optional(Type.String({ minLength: 1, description: 'File holding the HMAC key (generic).' })),
                  events: Type.Optional(Type.Array(Type.Union(NOTIFICATION_EVENTS.map((e) => Type.Literal(e))), { description: 'Default: all.' })),
                },
                Strict,
              ),
            ),
          ),
          queue_size: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000, description: 'Deliveries waiting at most; more are dropped and counted.' })),
          max_attempts: Type.Optional(Type.Integer({ minimum: 1, maximum: 20 })),
          timeout: Type.Optional(Duration('Per delivery attempt.')),
          backoff: Type.Optional(Duration('First retry delay, doubled per attempt.')),
        },
        Strict,
      ),
    ),
    log: Type.Optional(
      Type.Object(
        {
          level: Type.Optional(
            Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l))),
          ),
        },
        Strict,
      ),
    ),
  },
  Strict,
)

export type ConfigFile = Static<typeof ConfigSchema>

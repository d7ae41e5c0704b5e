/**
 * The audit event catalogue: every event type, every field, their types and meaning. It is the
 * single source of the `AuditEventName` union, of the `AuditFields` type callers pass to `emit`,
 * of the published JSON Schema (`docs/audit-events.v1.schema.json`) and of the field reference in
 * `docs/audit.md` (both written by `npm run audit:docs`; a test keeps them fresh).
 *
 * To add an event: add it to `EVENTS` (and any new field to `FIELDS`), emit it, run
 * `npm run audit:docs`. Adding an event or an optional field keeps `AUDIT_SCHEMA_VERSION`;
 * removing or renaming a field, changing its type or making it required bumps it.
 */
import { Type, type Static, type TSchema, type TObject } from '@sinclair/typebox'

/** Major version of the event format. Consumers branch on it; additive changes keep it. */
export const AUDIT_SCHEMA_VERSION = 1

/** The JSON Schema `$id` of this version. */
export const AUDIT_SCHEMA_ID = `urn:jitgate:audit-events:v${AUDIT_SCHEMA_VERSION}`

const Str = (description: string, extra: Record<string, unknown> = {}) => Type.String({ description, ...extra })
const Ms = (description: string) => Type.Number({ minimum: 0, description })
const Time = (description: string) =>
  Type.String({ description, format: 'date-time', pattern: '^\\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\d\\.\\d{3}Z$' })
const Hash = (description: string) => Type.String({ description, pattern: '^[0-9a-f]{64}$' })

/**
 * Every field an event may carry, once. Fields marked "client" hold values a client controls (or
 * that come from one): they are escaped like every string and cut at `MAX_FIELD_LENGTH`.
 */
export const FIELDS = {
  time: Time('When the event happened: RFC 3339, UTC, milliseconds.'),
  event: Str('The event type (one of the names in this catalogue).'),
  gateway_id: Str('The gateway replica that wrote the event (`gateway_id` config, `JITGATE_GATEWAY_ID`).'),
  policy_version: Str('Content hash of the policy in force when the event was written.'),
  request_id: Str('Id of the HTTP request that caused the event (data or control plane); also sent upstream and to the client as `X-Request-Id`.'),
  subject: Str('The sub-processor id: from the grant or, on a denial, from the verified token.'),
  grant_id: Str("The grant's id (the token's `jti`)."),
  resource: Str('The resource id from policy.'),
  method: Str('HTTP method as the client sent it (client).'),
  path: Str('The normalised request path, never the query string; the raw path (cut before `?`) when it could not be normalised (client).'),
  status: Type.Integer({ minimum: 100, maximum: 599, description: 'HTTP status answered (101 for an accepted WebSocket upgrade).' }),
  code: Str('Stable deny or failure code (README "Data plane: decisions and codes"); on `admin.denied` the API error code.'),
  detail: Str('Human-readable reason for a denial or failure; may quote client input (client).'),
  client_ip: Str('The TCP peer address of the client.'),
  duration_ms: Ms('Time from the request arriving to the decision or the end of the response (WebSocket: of the connection).'),
  upstream_ms: Ms('Time until the upstream answered with response headers.'),
  protocol: Type.Union([Type.Literal('http'), Type.Literal('websocket')], { description: '`http`, or `websocket` for upgrades.' }),
  actor: Str('Who acted: `operator`, `operator:<name>` (`X-Jitgate-Actor`), `local-operator`, an approver or a sub-processor id.'),
  reason: Str('Why: the operator\'s revocation reason, the requester\'s justification, or why a connection closed (client).'),
  scopes: Type.Array(Str('A scope, `METHODS PATH`.'), { description: "The grant's scopes." }),
  starts_at: Time('When the grant starts.'),
  expires_at: Time('When the grant (or request) expires.'),
  previous_expires_at: Time('The expiry before an extension.'),
  claim_by: Time('A grant with a claim-by window (entitlement `claim_within`) ends at this instant unless it is used first; its clock starts at that first use.'),
  claimed_at: Time("The first use of a grant with a claim-by window: the grant's clock started then."),
  store: Type.Union([Type.Literal('memory'), Type.Literal('redis')], { description: 'The grant store in use.' }),
  listen: Type.Record(Type.String(), Type.String(), { description: 'Listener URLs by plane (`data`, `control`).' }),
  policy_files: Type.Array(Type.String(), { description: 'Policy file names (no folders) the version was computed from.' }),
  schema_version: Type.Integer({ minimum: 1, description: 'Major version of this event format (`AUDIT_SCHEMA_VERSION`).' }),
  errors: Type.Array(Type.String(), { description: 'Every problem found, each with file, line and path.' }),
  access_request_id: Str('Id of the access request (workflow).'),
  ticket: Str('Ticket reference given with an access request (client).'),
  comment: Str("An approver's comment (client)."),
  stage: Type.Integer({ minimum: 1, description: 'Approval stage (1-based) an approval counted towards.' }),
  chain: Str("Id of this gateway instance's hash chain (random, new at each start).", { pattern: '^[A-Za-z0-9_-]{22}$' }),
  seq: Type.Integer({ minimum: 1, description: 'Position in the chain: 1 for the first event, then +1 per event.' }),
  prev_hash: Hash("SHA-256 of the previous event's line as written (UTF-8, without its newline); the chain's genesis hash for seq 1."),
  kid: Str('Key id (JWKS `kid`) of the Ed25519 key that signed the checkpoint.'),
  signature: Str('Ed25519 signature (base64url) of the checkpoint statement (docs/audit.md, "Tamper evidence").', { pattern: '^[A-Za-z0-9_-]{86}$' }),
  final: Type.Boolean({ description: 'True on the last checkpoint of a chain, written at shutdown.' }),
  sink: Str('Name of an audit sink (its `name` in config, else its type).'),
  dropped: Type.Integer({ minimum: 1, description: 'Events the sink dropped since its previous `audit.dropped` report.' }),
} satisfies Record<string, TSchema>

export type FieldName = keyof typeof FIELDS

/** Fields every event carries, written by the audit log itself. */
export const ENVELOPE = ['time', 'event', 'policy_version', 'gateway_id', 'chain', 'seq', 'prev_hash'] as const satisfies readonly FieldName[]
type EnvelopeField = (typeof ENVELOPE)[number]

/** Who emits an event. `pending` names an event that is documented but not emitted yet. */
export type Emitter = 'data plane' | 'control plane' | 'gateway' | 'audit log' | 'workflow' | 'pending'

export interface EventSpec {
  readonly summary: string
  readonly emitter: Emitter
  readonly required: readonly Exclude<FieldName, EnvelopeField>[]
  readonly optional: readonly Exclude<FieldName, EnvelopeField>[]
}

const DENIAL = ['request_id', 'method', 'path', 'status', 'code', 'detail', 'client_ip', 'duration_ms', 'protocol'] as const
const PROXIED = ['request_id', 'subject', 'grant_id', 'resource', 'method', 'path', 'client_ip', 'protocol'] as const

/** The catalogue. Keys are the public event names (DESIGN.md "Audit event"). */
export const EVENTS = {
  'access.allowed': {
    summary:
      'A data-plane request passed every check and was forwarded. `status` is what the client got; a failure after the decision carries `code` (`upstream_unavailable`, `upstream_timeout`, `request_timeout`, `client_aborted`) and `detail`. A WebSocket upgrade is answered 101.',
    emitter: 'data plane',
    required: [...PROXIED, 'status', 'duration_ms'],
    optional: ['upstream_ms', 'code', 'detail'],
  },
  'access.denied': {
    summary: 'A data-plane request was refused; nothing was forwarded. `code` is the deny code the client saw.',
    emitter: 'data plane',
    required: DENIAL,
    optional: ['subject', 'grant_id', 'resource'],
  },
  'connection.closed': {
    summary: 'A WebSocket opened through the gateway closed. `reason`: `grant_expired`, `grant_revoked`, `outside_window` or `grant_not_entitled` (the policy in force no longer allows it: re-checked every second), `store_unavailable` (the grant could not be read again once the handshake completed) or `gateway_shutdown` when the gateway closed it, `closed` when a peer did.',
    emitter: 'data plane',
    required: [...PROXIED, 'reason', 'duration_ms'],
    optional: [],
  },
  'grant.issued': {
    summary:
      'A grant was created (by an operator through the API, or on final approval of an access request). A grant with a claim-by window carries `claim_by`: until its first use it ends then (`expires_at` is the same instant), and `grant.claimed` follows at the first use. A write a hung grant store ran only after its caller was told `store_unavailable` is written late, once the gateway reads it back; a gateway that stops before it can logs the grant id instead (README, "Redis layout"). At most one per grant, however many calls issue it (an approved request\'s grant issued again by a retry or by another replica).',
    emitter: 'control plane',
    required: ['request_id', 'actor', 'subject', 'grant_id', 'resource', 'scopes', 'starts_at', 'expires_at'],
    optional: ['reason', 'access_request_id', 'claim_by'],
  },
  'grant.claimed': {
    summary:
      'The first use of a grant with a claim-by window (entitlement `claim_within`) started its clock: it now expires at `expires_at` (first use + duration, never past the contract end). Written once, by the replica whose request claimed it; `actor` is the sub-processor.',
    emitter: 'data plane',
    required: ['request_id', 'actor', 'subject', 'grant_id', 'resource', 'claimed_at', 'expires_at'],
    optional: ['client_ip'],
  },
  'grant.revoked': {
    summary:
      'A grant was revoked; the next request with its token is refused (`grant_revoked`) on every replica. At most one per grant, however many calls revoke it. `actor` `system`: an operator\'s grant whose issue the store confirmed too late, so its token was never handed out, revoked at once.',
    emitter: 'control plane',
    required: ['request_id', 'actor', 'reason', 'grant_id', 'subject', 'resource'],
    optional: [],
  },
  'grant.expired': {
    summary:
      'A grant reached its expiry without being revoked or relinquished (those write `grant.revoked` instead); an extended grant at its last expiry only. Written once per grant, by whichever replica sweeps first, within `store.expiry_sweep_interval` (default 5 s) of `expires_at`; `time` is when it was written. With Redis, the expiries of an outage are written once a replica reaches Redis again (up to 7 days later).',
    emitter: 'gateway',
    required: ['grant_id', 'subject', 'resource', 'expires_at'],
    optional: ['scopes', 'starts_at'],
  },
  'grant.extended': {
    summary:
      "A grant's expiry moved after a new approval; open connections stay open. One per move, however many calls extend the grant to the same expiry (a retry, another replica): written for the call whose write moved it, late if a hung grant store ran that write after its caller was told `store_unavailable`.",
    emitter: 'workflow',
    required: ['actor', 'grant_id', 'subject', 'resource', 'expires_at', 'previous_expires_at'],
    optional: ['request_id', 'access_request_id', 'reason'],
  },
  'request.created': {
    summary: 'A sub-processor asked for access.',
    emitter: 'workflow',
    required: ['access_request_id', 'actor', 'subject', 'resource', 'scopes'],
    optional: ['request_id', 'reason', 'ticket', 'expires_at'],
  },
  'request.approval_recorded': {
    summary: "An approver's approval counted towards a stage; the request is still pending.",
    emitter: 'workflow',
    required: ['access_request_id', 'actor', 'subject', 'resource'],
    optional: ['request_id', 'stage', 'comment'],
  },
  'request.approved': {
    summary: 'The last required approval arrived (or an auto-approval rule matched); a `grant.issued` follows.',
    emitter: 'workflow',
    required: ['access_request_id', 'actor', 'subject', 'resource'],
    optional: ['request_id', 'grant_id', 'comment'],
  },
  'request.denied': {
    summary: 'An approver denied the request; it is closed.',
    emitter: 'workflow',
    required: ['access_request_id', 'actor', 'subject', 'resource'],
    optional: ['request_id', 'comment'],
  },
  'request.expired': {
    summary: 'A pending request reached its own TTL without a decision.',
    emitter: 'workflow',
    required: ['access_request_id', 'subject', 'resource'],
    optional: ['actor', 'expires_at'],
  },
  'request.escalated': {
    summary: 'A pending request was escalated to the escalation group after its delay.',
    emitter: 'workflow',
    required: ['access_request_id', 'subject', 'resource'],
    optional: ['actor', 'stage'],
  },
  'request.cancelled': {
    summary: 'The requester withdrew its pending request.',
    emitter: 'workflow',
    required: ['access_request_id', 'actor', 'subject', 'resource'],
    optional: ['request_id'],
  },
  'breakglass.used': {
    summary: 'A sub-processor used a break-glass entitlement: a grant without prior approval, under review.',
    emitter: 'workflow',
    required: ['actor', 'subject', 'resource', 'grant_id', 'reason'],
    optional: ['request_id', 'access_request_id', 'scopes', 'expires_at', 'ticket'],
  },
  'breakglass.reviewed': {
    summary: 'An approver closed the after-the-fact review of a break-glass use.',
    emitter: 'workflow',
    required: ['actor', 'subject', 'resource', 'grant_id'],
    optional: ['request_id', 'access_request_id', 'comment'],
  },
  'admin.denied': {
    summary:
      'A control-plane API call was refused: no valid credential, a missing or wrong MFA proof, a self-approval, a request outside the entitlement, a call in the wrong state... `code` is the API error code; `actor` names the approver a TOTP code was tried for; `detail` is the first reason given to the caller.',
    emitter: 'control plane',
    required: ['request_id', 'method', 'path', 'status', 'code', 'client_ip'],
    optional: ['actor', 'detail'],
  },
  'policy.loaded': {
    summary:
      'A policy version was loaded and put in force (at start, and on each reload that changed it), or the files are valid again after a `policy.rejected` (the version in force then unchanged: the trail\'s last word on the policy is not left at "rejected"). `actor` names the reload trigger: `file-watch`, `signal:SIGHUP`, or `replica:<gateway id>` for a reload notice from another replica.',
    emitter: 'gateway',
    required: ['policy_files'],
    optional: ['actor'],
  },
  'policy.rejected': {
    summary:
      'A policy reload was refused; the previous version (`policy_version`) stays in force. `errors` lists the problems, each with file, line and path (at most 50, then a count). `actor` as on `policy.loaded`.',
    emitter: 'gateway',
    required: ['errors'],
    optional: ['actor', 'policy_files'],
  },
  'gateway.started': {
    summary: 'The gateway is listening. The first events of a gateway instance.',
    emitter: 'gateway',
    required: ['store', 'listen', 'schema_version'],
    optional: [],
  },
  'gateway.stopped': {
    summary: "The gateway drained and stopped; only the chain's final checkpoint follows.",
    emitter: 'gateway',
    required: [],
    optional: [],
  },
  'audit.checkpoint': {
    summary:
      'A signed statement over the chain so far: written every `audit.checkpoint.every` events or `audit.checkpoint.interval`, and at shutdown (`final: true`, the last event of a chain).',
    emitter: 'audit log',
    required: ['kid', 'signature', 'final', 'schema_version'],
    optional: [],
  },
  'audit.dropped': {
    summary:
      'A sink dropped events once its bound was reached (memory, spool file) or its destination refused them; the other sinks carry this report. At most one per sink per second, and one at shutdown; the total is the `jitgate_audit_dropped_total{sink}` metric.',
    emitter: 'audit log',
    required: ['sink', 'dropped'],
    optional: [],
  },
} as const satisfies Record<string, EventSpec>

/** Event names are a public contract (DESIGN.md): the catalogue's keys. */
export type AuditEventName = keyof typeof EVENTS

type Field<K extends FieldName> = Static<(typeof FIELDS)[K]>
type Frozen<T> = T extends readonly (infer U)[] ? readonly U[] : T extends object ? Readonly<T> : T

/** The fields a caller may pass to `emit` (the envelope is added by the audit log). */
export type AuditFields = { readonly [K in Exclude<FieldName, EnvelopeField>]?: Frozen<Field<K>> }

/** The TypeBox schema of one event type (envelope included). */
export function eventSchema(name: AuditEventName): TObject {
  const spec: EventSpec = EVENTS[name]
  const props: Record<string, TSchema> = {}
  for (const f of ENVELOPE) props[f] = f === 'event' ? Type.Literal(name, { description: FIELDS.event.description as string }) : FIELDS[f]
  // policy_version is absent only before a policy was ever loaded.
  props.policy_version = Type.Optional(FIELDS.policy_version)
  for (const f of spec.required) props[f] = FIELDS[f]
  for (const f of spec.optional) props[f] = Type.Optional(FIELDS[f])
  return Type.Object(props, { title: name, description: spec.summary, additionalProperties: false })
}

/** The published JSON Schema document: one definition per event type, chosen by `event`. */
export function auditJsonSchema(): Record<string, unknown> {
  const names = Object.keys(EVENTS) as AuditEventName[]
  const defs = Object.fromEntries(names.map((n) => [n, eventSchema(n)]))
  return JSON.parse(
    JSON.stringify({
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      $id: AUDIT_SCHEMA_ID,
      title: `jitgate audit event, version ${AUDIT_SCHEMA_VERSION}`,
      description: 'One JSON line per decision and per state change. Generated from src/audit/catalogue.ts; see docs/audit.md.',
      type: 'object',
      properties: { event: { enum: names } },
      required: ['event'],
      discriminator: { propertyName: 'event' },
      oneOf: names.map((n) => ({ $ref: `#/$defs/${n}` })),
      $defs: defs,
    }),
  ) as Record<string, unknown>
}

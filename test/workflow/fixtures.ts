/**
 * Building blocks for workflow tests: compiled principals built directly (not from YAML), a policy
 * around them, and a workflow service wired to real stores, a real grant service and token issuer,
 * a real audit log read back as JSON lines, real metrics, a recording notifier and a clock that
 * moves only when the test says so.
 */
import { PassThrough } from 'node:stream'
import { pino } from 'pino'
import type { Test } from 'tap'
import { compilePolicy, type Policy } from '../../src/policy/policy.js'
import { compileScopes } from '../../src/policy/scope.js'
import type { ApprovalPolicy, ApproverGroup, Entitlement, Principals, Subprocessor, TimeWindow } from '../../src/policy/principals.js'
import { createMemoryGrantStore } from '../../src/grants/memory-store.js'
import type { GrantStore } from '../../src/grants/types.js'
import { generateSigningKey, loadKeyRing } from '../../src/authn/keys.js'
import { createTokenIssuer } from '../../src/authn/token.js'
import { createAuditLog } from '../../src/audit/audit-log.js'
import { createMetrics, type GatewayMetrics } from '../../src/metrics/metrics.js'
import { createGrantService, type GrantService } from '../../src/control/grant-service.js'
import { createMemoryRequestStore } from '../../src/workflow/memory-request-store.js'
import type { RequestStore } from '../../src/workflow/request-store.js'
import { createWorkflowMetrics } from '../../src/workflow/metrics.js'
import type { Notification, Notifier } from '../../src/workflow/notify.js'
import { createWorkflowService, type WorkflowService } from '../../src/workflow/service.js'
import type { AuditRecord } from '../helpers/gateway.js'

export const HOUR = 3_600_000
export const MINUTE = 60_000

export const RESOURCES_YAML = `
resources:
  - id: crm-api
    upstream: http://127.0.0.1:9
    match: { path_prefix: /crm }
    max_ttl: 8h
  - id: billing
    upstream: http://127.0.0.1:9
    match: { path_prefix: /billing }
    max_ttl: 2h
`

export function entitlement(overrides: Partial<Entitlement> = {}): Entitlement {
  const scopes = overrides.scopes ?? ['GET /crm/customers/**', 'GET,POST /crm/tickets/**']
  return {
    resource: 'crm-api',
    scopes,
    scopeSet: compileScopes(scopes),
    maxDurationMs: 4 * HOUR,
    approval: 'two-stage',
    window: undefined,
    enforceWindowAtUse: false,
    requireTicket: false,
    claimWithinMs: undefined,
    autoApprove: undefined,
    breakGlass: undefined,
    ...overrides,
  }
}

export function subprocessor(overrides: Partial<Subprocessor> = {}): Subprocessor {
  return {
    id: 'acme',
    name: 'ACME Support Ltd',
    contractEndsAt: Date.now() + 365 * 24 * HOUR,
    keys: [],
    entitlements: [entitlement()],
    ...overrides,
  }
}

const group = (id: string, members: string[], oidcGroups: string[] = []): ApproverGroup => ({
  id,
  members: new Set(members),
  oidcGroups: new Set(oidcGroups),
})

export function approvalPolicy(overrides: Partial<ApprovalPolicy> = {}): ApprovalPolicy {
  return {
    id: 'two-stage',
    stages: [
      { group: 'crm-owners', approvals: 1 },
      { group: 'security', approvals: 1 },
    ],
    requestTtlMs: 24 * HOUR,
    escalateAfterMs: 30 * MINUTE,
    escalationGroup: 'oncall',
    escalationAdmits: false,
    ...overrides,
  }
}

/**
 * acme (entitled to crm-api), globex (no entitlements); groups crm-owners {alice, bob, acme},
 * security {carol, dave, alice} (alice is in both, to test "one person counts once"; acme is an
 * approver id equal to the requester's, to test self-approval), oncall {erin}.
 */
export function principals(overrides: { subprocessors?: Subprocessor[]; policies?: ApprovalPolicy[] } = {}): Principals {
  const sps = overrides.subprocessors ?? [subprocessor(), subprocessor({ id: 'globex', entitlements: [] })]
  const policies = overrides.policies ?? [approvalPolicy()]
  return {
    subprocessors: new Map(sps.map((s) => [s.id, s])),
    approverGroups: new Map(
      [group('crm-owners', ['alice', 'bob', 'acme']), group('security', ['carol', 'dave', 'alice'], ['sec-team']), group('oncall', ['erin'])].map((g) => [g.id, g]),
    ),
    approvalPolicies: new Map(policies.map((p) => [p.id, p])),
    localApprovers: new Map(),
    mfa: { amrAny: ['mfa', 'otp'], acrAny: [] },
  }
}

export function policyWith(p: Principals): Policy {
  return { ...compilePolicy([{ file: 'resources.yaml', text: RESOURCES_YAML }]), principals: p }
}

export const window = (inside: boolean): TimeWindow => ({ source: 'Mon-Fri 08:00-18:00 Europe/Berlin', contains: () => inside })

export interface Harness {
  readonly service: WorkflowService
  readonly requests: RequestStore
  readonly grantStore: GrantStore
  readonly audit: AuditRecord[]
  readonly notifications: Notification[]
  readonly metrics: GatewayMetrics
  /** Moves the injected clock. */
  advance(ms: number): void
  now(): number
  setPolicy(p: Principals): void
  events(name: string): AuditRecord[]
}

export interface HarnessOptions {
  readonly principals?: Principals
  /** Wraps the grant service (to inject faults). */
  readonly wrapGrants?: (g: GrantService) => GrantService
  /** Wraps the request store (to inject faults). */
  readonly wrapRequests?: (r: RequestStore) => RequestStore
  /** The service's operational log (silent by default). */
  readonly log?: import('pino').Logger
  /** The request store, on the harness clock (default: a memory store); closed at teardown. */
  readonly requestStore?: (now: () => number) => RequestStore
}

export async function harness(t: Test, opts: HarnessOptions = {}): Promise<Harness> {
  // A clock that moves only when told: every instant a test asserts is exact.
  let current = Date.now()
  const now = () => current
  let policy = policyWith(opts.principals ?? principals())
  const grantStore = createMemoryGrantStore({ timeoutMs: 1000, minTombstoneMs: 60_000, now })
  const requests = opts.requestStore ? opts.requestStore(now) : createMemoryRequestStore({ timeoutMs: 1000, retentionMs: 24 * HOUR, now })
  t.teardown(async () => {
    await requests.close()
    await grantStore.close()
  })
  const { privateJwk } = await generateSigningKey()
  const keys = await loadKeyRing({ signingKey: { inline: JSON.stringify(privateJwk) }, verificationKeyFiles: [], dataDir: '/nonexistent' })
  const stream = new PassThrough()
  const audit: AuditRecord[] = []
  let text = ''
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString()
    let nl: number
    while ((nl = text.indexOf('\n')) !== -1) {
      audit.push(JSON.parse(text.slice(0, nl)) as AuditRecord)
      text = text.slice(nl + 1)
    }
  })
  const auditLog = createAuditLog({ output: stream, gatewayId: 'test', policyVersion: () => policy.version, now })
  const metrics = createMetrics({ activeGrants: () => grantStore.count(), defaultMetrics: false })
  const workflowMetrics = createWorkflowMetrics(metrics.registry, { open: () => requests.listOpen() })
  const tokens = createTokenIssuer(keys, 'jitgate')
  const base = createGrantService({ store: grantStore, policy: () => policy, tokens: () => tokens, audit: auditLog, metrics, now })
  const grants = opts.wrapGrants ? opts.wrapGrants(base) : base
  const notifications: Notification[] = []
  const notifier: Notifier = { notify: (n) => void notifications.push(n), idle: async () => {}, close: async () => {} }
  const service = createWorkflowService({
    requests: opts.wrapRequests ? opts.wrapRequests(requests) : requests,
    grantStore,
    grants,
    policy: () => policy,
    tokens: () => tokens,
    audit: auditLog,
    metrics: workflowMetrics,
    notifier,
    log: opts.log ?? pino({ level: 'silent' }),
    now,
  })
  return {
    service,
    requests,
    grantStore,
    audit,
    notifications,
    metrics,
    advance: (ms) => void (current += ms),
    now,
    setPolicy: (p) => void (policy = policyWith(p)),
    events: (name) => audit.filter((e) => e.event === name),
  }
}

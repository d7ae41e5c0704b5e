/**
 * The workflow's events, as the real workflow service writes them (through the workflow tests'
 * harness: memory stores, real audit log, injected clock), validate against the published schema,
 * and every event type the catalogue says the workflow emits is among them.
 */
import t from 'tap'
import { localApprover } from '../../src/workflow/auth/approvers.js'
import { EVENTS, type AuditEventName } from '../../src/audit/catalogue.js'
import { toOcsf } from '../../src/audit/formats/ocsf.js'
import { HOUR, MINUTE, approvalPolicy, entitlement, harness, principals, subprocessor, window } from '../workflow/fixtures.js'
import { auditValidator } from '../helpers/audit-schema.js'

const ctx = { requestId: 'http-1' }
const [alice, bob, carol, dave] = ['alice', 'bob', 'carol', 'dave'].map((id) => localApprover(id, true)) as [
  ReturnType<typeof localApprover>,
  ReturnType<typeof localApprover>,
  ReturnType<typeof localApprover>,
  ReturnType<typeof localApprover>,
]
const ask = { resource: 'crm-api', scopes: ['GET /crm/customers/*'], durationMs: HOUR, reason: 'SUP-1: export broken' }

t.test("every workflow event validates against the schema, and the workflow emits each of its types", async (t) => {
  const records: Record<string, unknown>[] = []

  // Approval in two stages, then an extension; a denial; a cancellation.
  const h = await harness(t, { principals: principals({ subprocessors: [subprocessor({ contractEndsAt: Date.now() + 10 * HOUR })] }) })
  const r = await h.service.create('acme', { ...ask, ticket: 'SUP-1' }, ctx)
  await h.service.approve(r.id, alice, 'looks fine', ctx)
  await h.service.approve(r.id, carol, undefined, ctx)
  const ext = await h.service.extend(r.id, 'acme', { durationMs: HOUR, reason: 'export still running' }, ctx)
  await h.service.approve(ext.id, bob, undefined, ctx)
  await h.service.approve(ext.id, dave, undefined, ctx)
  const d = await h.service.create('acme', ask, ctx)
  await h.service.deny(d.id, dave, 'not during the freeze', ctx)
  const c = await h.service.create('acme', ask, ctx)
  await h.service.cancel(c.id, 'acme', ctx)
  records.push(...h.audit)

  // Escalation, then expiry.
  const e = await harness(t, { principals: principals({ policies: [approvalPolicy({ requestTtlMs: HOUR, escalateAfterMs: 30 * MINUTE })] }) })
  await e.service.create('acme', ask, ctx)
  e.advance(30 * MINUTE)
  await e.service.sweep()
  e.advance(HOUR)
  await e.service.sweep()
  records.push(...e.audit)

  // Break-glass and its review.
  const sp = subprocessor({ entitlements: [entitlement({ scopes: ['* /crm/**'], approval: 'two-stage', breakGlass: { maxDurationMs: HOUR }, window: window(false) })] })
  const b = await harness(t, { principals: principals({ subprocessors: [sp] }) })
  const bg = await b.service.create('acme', { ...ask, scopes: ['DELETE /crm/customers/7'], breakGlass: true }, ctx)
  await b.service.review(bg.id, carol, 'incident INC-9, justified', ctx)
  records.push(...b.audit)

  const validate = auditValidator()
  for (const rec of records) {
    t.same(validate(rec), [], `${String(rec.event)} valid`)
    t.ok([3004, 3005].includes(toOcsf(rec).class_uid as number), `${String(rec.event)}: an IAM class in OCSF`)
  }
  const seen = new Set(records.map((rec) => rec.event))
  for (const [name, spec] of Object.entries(EVENTS) as [AuditEventName, (typeof EVENTS)[AuditEventName]][]) {
    if (spec.emitter === 'workflow') t.ok(seen.has(name), `${name} emitted by the workflow`)
  }
})

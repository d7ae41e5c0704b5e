/**
 * `jitgate policy test`: table-driven policy tests, like OPA's. A fixture file (`policies/tests/*.yaml`
 * by default) is a list of cases; each is an HTTP call under a grant, or an access request, and the
 * expected answer:
 *
 * ```yaml
 * - name: ACME reads a customer
 *   call: { subject: acme, grant: { resource: crm-api, scopes: ["GET /crm/customers/**"] }, method: GET, path: /crm/customers/42 }
 *   expect: allow
 * - name: ACME asks for too long
 *   request: { subject: acme, resource: crm-api, scopes: ["GET /crm/customers/**"], duration: 12h, at: "2026-12-07T09:00:00+01:00" }
 *   expect: deny
 *   code: duration_exceeds_max
 * ```
 *
 * A call takes `host`, `websocket: true` and `at` too; a request takes `ticket`, `break_glass: true`
 * and `at`. `at` is an RFC 3339 time (default: now); cases that depend on a time window should set it.
 * `code` is the data-plane deny code for a call, the API error code for a request. Each case is
 * evaluated by the gateway's own code (evaluate.ts).
 */
import { Type, type Static } from '@sinclair/typebox'
import { readFileSync } from 'node:fs'
import { checkSchema, issueAt, parseYaml, SourceError, type SourceIssue } from '../../config/yaml-source.js'
import { DURATION_PATTERN, parseDuration } from '../../util/duration.js'
import { ID_PATTERN } from '../schema.js'
import type { Policy } from '../policy.js'
import { createEvaluator, type CallCase, type Outcome, type RequestCase } from './evaluate.js'

const Strict = { additionalProperties: false } as const
const Id = Type.String({ pattern: ID_PATTERN, errorMessage: 'expected an id' })
const At = Type.String({ minLength: 1, description: 'RFC 3339 time, e.g. 2026-12-07T09:00:00+01:00.' })
const Scopes = Type.Array(Type.String({ minLength: 1 }), { minItems: 1, errorMessage: 'expected a non-empty list of scopes' })

const CaseSchema = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1 })),
    call: Type.Optional(
      Type.Object(
        {
          subject: Id,
          grant: Type.Object({ resource: Id, scopes: Scopes }, Strict),
          method: Type.String({ pattern: '^[A-Za-z]+$', errorMessage: 'expected an HTTP method' }),
          path: Type.String({ pattern: '^/', errorMessage: 'expected a path starting with /' }),
          host: Type.Optional(Type.String({ minLength: 1 })),
          websocket: Type.Optional(Type.Boolean()),
          at: Type.Optional(At),
        },
        Strict,
      ),
    ),
    request: Type.Optional(
      Type.Object(
        {
          subject: Id,
          resource: Id,
          scopes: Scopes,
          duration: Type.String({ pattern: DURATION_PATTERN, errorMessage: 'expected a duration such as 30m or 2h' }),
          ticket: Type.Optional(Type.String({ minLength: 1 })),
          break_glass: Type.Optional(Type.Boolean()),
          at: Type.Optional(At),
        },
        Strict,
      ),
    ),
    expect: Type.Union([Type.Literal('allow'), Type.Literal('deny')]),
    code: Type.Optional(Type.String({ pattern: '^[a-z_]+$', errorMessage: 'expected a code such as scope_denied' })),
  },
  Strict,
)
export const FixtureFileSchema = Type.Array(CaseSchema)
type CaseSpec = Static<typeof CaseSchema>

/** One test case, ready to run. */
export interface PolicyTestCase {
  /** `file:line` of the case. */
  readonly where: string
  readonly name: string
  readonly input: { readonly kind: 'call'; readonly call: CallCase } | { readonly kind: 'request'; readonly request: RequestCase }
  readonly expect: 'allow' | 'deny'
  readonly code: string | undefined
}

export interface CaseResult {
  readonly case: PolicyTestCase
  readonly outcome: Outcome
  readonly passed: boolean
}

/** Reads fixture files; throws SourceError with every problem (file, line, column, path). */
export function loadFixtures(files: readonly string[], now: number = Date.now()): PolicyTestCase[] {
  const issues: SourceIssue[] = []
  const cases: PolicyTestCase[] = []
  for (const file of files) {
    let text: string
    try {
      text = readFileSync(file, 'utf8')
    } catch (err) {
      issues.push({ file, line: 0, column: 0, path: '', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` })
      continue
    }
    const parsed = parseYaml(file, text)
    if (!parsed.source) {
      issues.push(...parsed.issues)
      continue
    }
    const source = parsed.source
    const checked = checkSchema(FixtureFileSchema, source.value ?? [], source)
    if (!checked.ok) {
      issues.push(...checked.issues)
      continue
    }
    checked.value.forEach((spec, i) => {
      const at = (path: (string | number)[], message: string) => issues.push(issueAt(source, [i, ...path], message))
      const built = buildCase(spec, now, at)
      if (built) cases.push({ ...built, where: `${file}:${source.locate([i]).line}` })
    })
  }
  if (issues.length > 0) throw new SourceError(issues)
  return cases
}

function buildCase(spec: CaseSpec, now: number, at: (path: (string | number)[], message: string) => void): Omit<PolicyTestCase, 'where'> | undefined {
  if ((spec.call === undefined) === (spec.request === undefined)) {
    at([], 'a case has exactly one of call or request')
    return undefined
  }
  if (spec.expect === 'allow' && spec.code !== undefined) {
    at(['code'], 'a code goes with expect: deny')
    return undefined
  }
  const time = (text: string | undefined, path: (string | number)[]): number | undefined => {
    if (text === undefined) return now
    const t = parseInstant(text)
    if (t === undefined) at(path, 'expected an RFC 3339 time with a zone, e.g. 2026-12-07T09:00:00+01:00')
    return t
  }
  const base = { expect: spec.expect, code: spec.code }
  if (spec.call !== undefined) {
    const c = spec.call
    const t = time(c.at, ['call', 'at'])
    if (t === undefined) return undefined
    const call: CallCase = {
      subject: c.subject,
      grant: c.grant,
      method: c.method,
      path: c.path,
      ...(c.host !== undefined ? { host: c.host } : {}),
      ...(c.websocket !== undefined ? { websocket: c.websocket } : {}),
      at: t,
    }
    return { ...base, name: spec.name ?? `${c.subject}: ${c.method} ${c.path}`, input: { kind: 'call', call } }
  }
  const r = spec.request as NonNullable<CaseSpec['request']>
  const t = time(r.at, ['request', 'at'])
  if (t === undefined) return undefined
  const request: RequestCase = {
    subject: r.subject,
    resource: r.resource,
    scopes: r.scopes,
    durationMs: parseDuration(r.duration) as number,
    ...(r.ticket !== undefined ? { ticket: r.ticket } : {}),
    ...(r.break_glass !== undefined ? { breakGlass: r.break_glass } : {}),
    at: t,
  }
  return { ...base, name: spec.name ?? `${r.subject} asks for ${r.resource} for ${r.duration}`, input: { kind: 'request', request } }
}

/** An RFC 3339 time with its zone (`2026-12-07T09:00:00+01:00`, `…Z`) as epoch ms; undefined otherwise. */
export function parseInstant(text: string): number | undefined {
  if (!/^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)$/.test(text)) return undefined
  const t = Date.parse(text)
  return Number.isNaN(t) ? undefined : t
}

/** Runs the cases against the policy, in order. */
export async function runPolicyTests(policy: Policy, cases: readonly PolicyTestCase[]): Promise<CaseResult[]> {
  const evaluator = await createEvaluator(policy)
  try {
    const results: CaseResult[] = []
    for (const c of cases) {
      const outcome = c.input.kind === 'call' ? await evaluator.call(c.input.call) : await evaluator.request(c.input.request)
      const passed = outcome.decision === c.expect && (c.code === undefined || outcome.code === c.code)
      results.push({ case: c, outcome, passed })
    }
    return results
  } finally {
    await evaluator.close()
  }
}

/** The report: one line per case (failures with what was expected and what came), then a count. */
export function formatResults(results: readonly CaseResult[]): string {
  const lines: string[] = []
  for (const r of results) {
    const got = r.outcome.decision === 'allow' ? 'allow' : `deny ${r.outcome.code ?? ''}`.trim()
    if (r.passed) {
      lines.push(`ok    ${r.case.name} (${got})`)
    } else {
      const wanted = `${r.case.expect}${r.case.code !== undefined ? ` ${r.case.code}` : ''}`
      lines.push(`FAIL  ${r.case.name}`, `        at ${r.case.where}`, `        expected ${wanted}, got ${got}: ${r.outcome.detail}`)
    }
  }
  const failed = results.filter((r) => !r.passed).length
  lines.push('', `${results.length - failed} passed, ${failed} failed`)
  return `${lines.join('\n')}\n`
}

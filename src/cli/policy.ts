/**
 * The operator's policy tools beside `policy check` (main.ts): `policy test`, `policy explain` and
 * `policy diff`. The logic is in src/policy/tools/; this file turns options into calls and results
 * into output and exit codes. None of them needs the policy's secrets, so they run in CI too.
 */
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { loadPolicy } from '../policy/policy.js'
import { SourceError, formatIssues } from '../config/yaml-source.js'
import { isBareNumber, noUnitMessage, parseDuration } from '../util/duration.js'
import { formatResults, loadFixtures, parseInstant, runPolicyTests } from '../policy/tools/policy-test.js'
import { explainCall, explainRequest, type Explanation } from '../policy/tools/explain.js'
import { affectedGrants, diffPolicies, formatDiff, type LiveGrant } from '../policy/tools/diff.js'
import type { CliIOLike } from './workflow.js'

/** What main.ts provides to these commands. */
export interface PolicyCliHelpers {
  /** Calls the control plane as an operator; throws a CLI error on a refusal. */
  api(io: CliIOLike, v: Record<string, unknown>, method: string, path: string): Promise<unknown>
  /** `--dir`, or the configured policy folder (`--config`, environment). */
  policyDir(io: CliIOLike, v: Record<string, unknown>): string
  usage(message: string): Error
  fail(message: string): Error
}

export interface PolicyCommand {
  readonly summary: string
  readonly usage: string
  readonly options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>
  run(v: Record<string, string | boolean | string[] | undefined>, positionals: string[], io: CliIOLike): Promise<number>
}

/**
 * `policy explain`'s exit status by decision, so scripts and CI can branch on it. A deny has its
 * own code, apart from 1 (an error: the policy does not load) and 2 (a usage error).
 */
export const EXPLAIN_EXIT = Object.freeze({ allow: 0, deny: 3 } as const)

const dirOptions = { dir: { type: 'string' }, config: { type: 'string', short: 'c' } } as const

/** Offline tools never forward a request, so they compile the policy without its secrets. */
const offline = (dir: string, io: CliIOLike) => loadPolicy(dir, { env: io.env, skipSecrets: true })

export function policyCommands(h: PolicyCliHelpers): Record<string, PolicyCommand> {
  return {
    'policy test': {
      summary: 'Run policy test fixtures (calls and requests with expected answers); exit 1 on any failure.',
      usage: `jitgate policy test [FILE...] [--dir DIR]

  FILE        fixture files (default: every *.yaml of DIR/tests)
  --dir DIR   policy folder (default: the configured one, ./policies)

A fixture file is a list of cases, each a call or a request and the expected answer:
  - name: ACME reads a customer
    call: { subject: acme, grant: { resource: crm-api, scopes: ["GET /crm/customers/**"] }, method: GET, path: /crm/customers/42 }
    expect: allow
  - request: { subject: acme, resource: crm-api, scopes: ["GET /crm/**"], duration: 12h, at: "2026-12-07T09:00:00+01:00" }
    expect: deny
    code: duration_exceeds_max`,
      options: { ...dirOptions },
      async run(v, files, io) {
        const dir = h.policyDir(io, v)
        const fixtures = files.length > 0 ? files : defaultFixtures(dir)
        if (fixtures.length === 0) throw h.fail(`no fixture files: give FILE arguments or add *.yaml files to ${join(dir, 'tests')}`)
        const policy = offline(dir, io)
        let cases
        try {
          cases = loadFixtures(fixtures)
        } catch (err) {
          if (!(err instanceof SourceError)) throw err
          throw h.fail(`invalid test fixtures:\n${formatIssues(err.issues).replace(/^/gm, '  ')}`)
        }
        const results = await runPolicyTests(policy, cases)
        io.out(formatResults(results))
        return results.every((r) => r.passed) ? 0 : 1
      },
    },

    'policy explain': {
      summary: 'Explain why a call or an access request would be allowed or denied, naming the rules.',
      usage: `jitgate policy explain --subject ID --scope "METHODS PATH" [--scope ...] --method M --path PATH [--resource ID] [--host H] [--websocket] [--at TIME]
jitgate policy explain --request --subject ID --resource ID --scope "METHODS PATH" [--scope ...] --duration D [--ticket T] [--break-glass] [--at TIME]

  A call through the data plane under a grant for --resource (default: the resource PATH routes
  to) with the given scopes, or (--request) an access request.
  --duration D  with a unit: 30m, 2h (a bare number is refused)
  --at TIME     RFC 3339, e.g. 2026-12-07T09:00:00+01:00 (default: now)
  --dir DIR     policy folder (default: the configured one, ./policies)

Exit status: ${EXPLAIN_EXIT.allow} allow, ${EXPLAIN_EXIT.deny} deny, 1 error (e.g. the policy does not load), 2 usage error.`,
      options: {
        ...dirOptions,
        request: { type: 'boolean' },
        subject: { type: 'string' },
        resource: { type: 'string' },
        scope: { type: 'string', multiple: true },
        method: { type: 'string' },
        path: { type: 'string' },
        host: { type: 'string' },
        websocket: { type: 'boolean' },
        duration: { type: 'string' },
        ticket: { type: 'string' },
        'break-glass': { type: 'boolean' },
        at: { type: 'string' },
      },
      async run(v, _positionals, io) {
        const need = (...keys: string[]) => {
          for (const k of keys) if (v[k] === undefined) throw h.usage(`--${k} is required`)
        }
        need('subject', 'scope')
        const at = v.at === undefined ? Date.now() : parseInstant(v.at as string)
        if (at === undefined) throw h.usage('--at: expected an RFC 3339 time with a zone, e.g. 2026-12-07T09:00:00+01:00')
        const policy = offline(h.policyDir(io, v), io)
        const subject = v.subject as string
        const scopes = v.scope as string[]
        let explanation: Explanation
        if (v.request) {
          need('resource', 'duration')
          if (isBareNumber(v.duration)) throw h.usage(noUnitMessage('--duration', v.duration))
          const durationMs = parseDuration(v.duration as string)
          if (durationMs === undefined) throw h.usage('--duration: expected a duration with a unit, such as 30m or 2h')
          explanation = await explainRequest(policy, {
            subject,
            resource: v.resource as string,
            scopes,
            durationMs,
            ...(v.ticket !== undefined ? { ticket: v.ticket as string } : {}),
            ...(v['break-glass'] ? { breakGlass: true } : {}),
            at,
          })
        } else {
          need('method', 'path')
          const path = v.path as string
          const resource = (v.resource as string | undefined) ?? policy.matchRoute(v.host as string | undefined, path.split('?')[0] as string)?.id
          if (resource === undefined) throw h.usage(`--resource is required: no resource serves ${path}`)
          explanation = await explainCall(policy, {
            subject,
            grant: { resource, scopes },
            method: v.method as string,
            path,
            ...(v.host !== undefined ? { host: v.host as string } : {}),
            ...(v.websocket ? { websocket: true } : {}),
            at,
          })
        }
        io.out(`${explanation.lines.join('\n')}\n`)
        return EXPLAIN_EXIT[explanation.decision]
      },
    },

    'policy diff': {
      summary: 'Show what a policy change adds, removes and changes, and which live grants it affects.',
      usage: `jitgate policy diff OLD_DIR NEW_DIR [--url URL] [--json]

  --url URL   a running control plane: also list the live grants the change affects
              (uses $JITGATE_ADMIN_TOKEN; default URL $JITGATE_CONTROL_URL)
  --json      print the differences as JSON`,
      options: { url: { type: 'string' }, json: { type: 'boolean' } },
      async run(v, dirs, io) {
        if (dirs.length !== 2) throw h.usage('OLD_DIR and NEW_DIR are required')
        const before = offline(dirs[0] as string, io)
        const after = offline(dirs[1] as string, io)
        const entries = diffPolicies(before, after)
        let affected: { source: string; grants: ReturnType<typeof affectedGrants>; total: number } | undefined
        if (v.url !== undefined) {
          const res = (await h.api(io, v, 'GET', '/v1/grants')) as { grants?: LiveGrant[] } | null
          if (!Array.isArray(res?.grants)) throw h.fail(`unexpected response from ${v.url as string}: is this a jitgate control plane?`)
          affected = { source: v.url as string, grants: affectedGrants(before, after, res.grants), total: res.grants.length }
        }
        if (v.json) io.out(`${JSON.stringify({ from: before.version, to: after.version, changes: entries, ...(affected ? { affected_grants: affected.grants } : {}) }, null, 2)}\n`)
        else io.out(`policy ${before.version} → ${after.version}\n${formatDiff(entries, affected)}`)
        return 0
      },
    },
  }
}

function defaultFixtures(dir: string): string[] {
  const tests = join(dir, 'tests')
  try {
    return readdirSync(tests)
      .filter((n) => /\.ya?ml$/.test(n))
      .sort()
      .map((n) => join(tests, n))
  } catch {
    return []
  }
}

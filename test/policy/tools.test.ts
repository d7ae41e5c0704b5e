/**
 * The operator's policy tools through the real CLI entry point: `policy test` (fixtures that pass and
 * fixtures that fail), `policy explain` (the rules named), `policy diff` (the changes, and the live
 * grants of a running gateway that a change affects).
 */
import t from 'tap'
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { main } from '../../src/cli/main.js'
import { tempDir } from '../helpers/tmp.js'
import { ADMIN_TOKEN, startTestGateway } from '../helpers/gateway.js'
import { runCli } from '../helpers/process.js'

const POLICIES = new URL('../../policies', import.meta.url).pathname

async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await main(args, { out: (s) => void (stdout += s), err: (s) => void (stderr += s), env: { ...process.env, ...env } })
  return { code, stdout, stderr }
}

const POLICY = `resources:
  - { id: crm, upstream: "http://127.0.0.1:9", match: { path_prefix: /crm }, max_ttl: 8h }
approver_groups: [{ id: owners, members: [alice] }]
approval_policies: [{ id: one, stages: [{ group: owners, approvals: 1 }], request_ttl: 1d }]
subprocessors:
  - id: acme
    name: ACME
    contract_ends: "2030-06-30"
    entitlements:
      - { resource: crm, approval: one, max_duration: 2h, scopes: ["GET /crm/**"], window: "Mon-Fri 08:00-18:00 UTC", enforce_window_at_use: true }
`
const MONDAY = '2026-12-07T10:00:00Z'

function policyDir(text = POLICY): string {
  const dir = tempDir(t, 'tools')
  writeFileSync(join(dir, 'p.yaml'), text)
  return dir
}

t.test('policy test: the shipped fixtures pass, as a real process', async (t) => {
  const r = await runCli(['policy', 'test'])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /^ok {4}ACME reads a customer under its support grant \(allow\)$/m)
  t.match(r.stdout, /\n\d+ passed, 0 failed\n$/)
  t.notMatch(r.stdout, /FAIL/)
})

t.test('policy test: fixtures that fail are reported with where, what was expected and what came; exit 1', async (t) => {
  const dir = policyDir()
  mkdirSync(join(dir, 'tests'))
  writeFileSync(
    join(dir, 'tests', 'a.yaml'),
    [
      `- call: { subject: acme, grant: { resource: crm, scopes: ["GET /crm/**"] }, method: GET, path: /crm/x, at: "${MONDAY}" }`,
      '  expect: allow',
      `- name: expects the wrong code`,
      `  call: { subject: acme, grant: { resource: crm, scopes: ["GET /crm/**"] }, method: GET, path: /crm/x, at: "2026-12-05T10:00:00Z" }`,
      '  expect: deny',
      '  code: scope_denied',
      `- name: expects allow, is outside the window`,
      `  request: { subject: acme, resource: crm, scopes: ["GET /crm/**"], duration: 1h, at: "2026-12-07T19:00:00Z" }`,
      '  expect: allow',
      `- request: { subject: acme, resource: crm, scopes: ["GET /crm/**"], duration: 3h, at: "${MONDAY}" }`,
      '  expect: deny',
      '  code: duration_exceeds_max',
      '',
    ].join('\n'),
  )
  const r = await cli(['policy', 'test', '--dir', dir])
  t.equal(r.code, 1)
  t.equal(
    r.stdout,
    [
      'ok    acme: GET /crm/x (allow)',
      'FAIL  expects the wrong code',
      `        at ${join(dir, 'tests', 'a.yaml')}:3`,
      "        expected deny scope_denied, got deny outside_window: outside the entitlement's window Mon-Fri 08:00-18:00 UTC",
      'FAIL  expects allow, is outside the window',
      `        at ${join(dir, 'tests', 'a.yaml')}:7`,
      "        expected allow, got deny outside_window: The entitlement's time window does not include now. requests are accepted Mon-Fri 08:00-18:00 UTC",
      'ok    acme asks for crm for 3h (deny duration_exceeds_max)',
      '',
      '2 passed, 2 failed',
      '',
    ].join('\n'),
  )
})

t.test('policy test: a malformed fixture file is an error list, positioned', async (t) => {
  const dir = policyDir()
  const file = join(tempDir(t, 'fixtures'), 'bad.yaml')
  writeFileSync(
    file,
    [
      '- call: { subject: acme, grant: { resource: crm, scopes: [] }, method: GET, path: x }',
      '  expect: allow',
      '- request: { subject: acme, resource: crm, scopes: ["GET /crm/**"], duration: 1h, at: "next monday" }',
      '  expect: deny',
      '- expect: maybe',
      `- call: { subject: acme, grant: { resource: crm, scopes: ["GET /crm/**"] }, method: GET, path: /crm }`,
      '  expect: allow',
      '  code: ok',
      '',
    ].join('\n'),
  )
  const r = await cli(['policy', 'test', '--dir', dir, file])
  t.equal(r.code, 1)
  t.equal(
    r.stderr,
    [
      'jitgate: invalid test fixtures:',
      `  ${file}:1:50 [0].call.grant.scopes: expected a non-empty list of scopes`,
      `  ${file}:1:77 [0].call.path: expected a path starting with /`,
      `  ${file}:5:3 [2].expect: expected one of "allow", "deny"`,
      '',
    ].join('\n'),
  )
  writeFileSync(file, readFileSync(file, 'utf8').replace('scopes: [] }, method: GET, path: x', 'scopes: ["GET /crm/**"] }, method: GET, path: /x').replace('- expect: maybe\n', ''))
  const again = await cli(['policy', 'test', '--dir', dir, file])
  t.equal(
    again.stderr,
    [
      'jitgate: invalid test fixtures:',
      `  ${file}:3:83 [1].request.at: expected an RFC 3339 time with a zone, e.g. 2026-12-07T09:00:00+01:00`,
      `  ${file}:7:3 [2].code: a code goes with expect: deny`,
      '',
    ].join('\n'),
  )
})

t.test('policy explain names the resource, grant scope, entitlement and window', async (t) => {
  const dir = policyDir()
  const file = join(dir, 'p.yaml')
  const call = await cli(['policy', 'explain', '--dir', dir, '--subject', 'acme', '--scope', 'GET /crm/a/*', '--method', 'GET', '--path', '/crm/a/./b', '--at', '2026-12-07T18:30:00Z'])
  t.equal(call.code, 3, 'deny: exit 3')
  t.equal(
    call.stdout,
    [
      'GET /crm/a/./b by acme, under a grant for crm [GET /crm/a/*], at 2026-12-07T18:30:00.000Z',
      '  path         normalised to /crm/a/b',
      `  route        resource crm: path_prefix /crm (${file}:2)`,
      '  grant scope  "GET /crm/a/*" allows GET /crm/a/b',
      `  entitlement  acme → crm, scope "GET /crm/**" (${file}:10)`,
      "  contract     acme's contract ends 2030-07-01T00:00:00.000Z",
      '  window       "Mon-Fri 08:00-18:00 UTC" enforced at use: outside',
      "  decision     deny outside_window (403): outside the entitlement's window Mon-Fri 08:00-18:00 UTC",
      '',
    ].join('\n'),
  )
  const request = await cli(['policy', 'explain', '--dir', dir, '--request', '--subject', 'acme', '--resource', 'crm', '--scope', 'GET /crm/**', '--duration', '3h', '--at', MONDAY])
  t.equal(request.code, 3, 'deny: exit 3')
  t.equal(
    request.stdout,
    [
      'acme asks for crm [GET /crm/**] for 3h at 2026-12-07T10:00:00.000Z',
      `  subprocessor acme (ACME) (${file}:6), contract ends 2030-07-01T00:00:00.000Z`,
      `  entitlements crm (${file}:10): scopes within [GET /crm/**]; max 2h (exceeded); window "Mon-Fri 08:00-18:00 UTC": inside; approval "one": owners ×1`,
      "  decision     deny duration_exceeds_max (403): The duration exceeds the entitlement's maximum. 3h > 2h",
      '',
    ].join('\n'),
  )
  const usage = await cli(['policy', 'explain', '--dir', dir, '--subject', 'acme', '--scope', 'GET /x', '--method', 'GET', '--path', '/nowhere'])
  t.equal(usage.code, 2)
  t.match(usage.stderr, '--resource is required: no resource serves /nowhere')
})

t.test('policy explain: exit 0 on allow, 3 on deny, 1 on an error, 2 on a usage error; the help says so', async (t) => {
  const dir = policyDir()
  const call = (at: string) => ['policy', 'explain', '--dir', dir, '--subject', 'acme', '--scope', 'GET /crm/**', '--method', 'GET', '--path', '/crm/x', '--at', at]
  const request = (duration: string) => ['policy', 'explain', '--dir', dir, '--request', '--subject', 'acme', '--resource', 'crm', '--scope', 'GET /crm/**', '--duration', duration, '--at', MONDAY]
  const allowed = await cli(call(MONDAY))
  t.equal(allowed.code, 0, 'a call inside the window: allow')
  t.match(allowed.stdout, /decision {5}allow: /)
  const denied = await cli(call('2026-12-05T10:00:00Z'))
  t.equal(denied.code, 3, 'the same call on a Saturday: deny')
  t.match(denied.stdout, /decision {5}deny outside_window \(403\)/)
  t.equal((await cli(request('1h'))).code, 0, 'a request within the entitlement: allow')
  t.equal((await cli(request('3h'))).code, 3, 'a request above max_duration: deny')
  const broken = policyDir('resources: [{ id: Bad }]\n')
  const error = await cli(['policy', 'explain', '--dir', broken, '--subject', 'acme', '--scope', 'GET /crm/**', '--method', 'GET', '--path', '/crm/x'])
  t.equal(error.code, 1, 'a policy that does not load: an error, not a deny')
  t.equal((await cli(['policy', 'explain', '--dir', dir, '--subject', 'acme'])).code, 2, 'a usage error')
  const real = await runCli(call('2026-12-05T10:00:00Z'))
  t.equal(real.code, 3, 'the real process exits 3 on deny')
  const help = await cli(['policy', 'explain', '--help'])
  t.match(help.stdout, 'Exit status: 0 allow, 3 deny, 1 error (e.g. the policy does not load), 2 usage error.')
})

t.test('policy diff: what changes, and which live grants of a running gateway it affects', async (t) => {
  const g = await startTestGateway(t, { policy: POLICY.replace('enforce_window_at_use: true', 'enforce_window_at_use: false') })
  const reads = await g.issue({ subject: 'acme', resource: 'crm', scopes: ['GET /crm/customers/**'], ttl: '1h' })
  const tickets = await g.issue({ subject: 'acme', resource: 'crm', scopes: ['GET /crm/tickets/*'], ttl: '1h' })
  const before = g.policyDir
  const after = tempDir(t, 'tools-after')
  cpSync(before, after, { recursive: true })
  writeFileSync(
    join(after, 'test.yaml'),
    readFileSync(join(before, 'test.yaml'), 'utf8')
      .replace('max_ttl: 8h', 'max_ttl: 4h')
      .replace('scopes: ["GET /crm/**"]', 'scopes: ["GET /crm/tickets/**"]')
      .replace('members: [alice]', 'members: [alice, bob]')
      .concat('  - { id: globex, name: Globex, contract_ends: "2031-01-31" }\n'),
  )
  const r = await cli(['policy', 'diff', before, after, '--url', g.controlUrl], { JITGATE_ADMIN_TOKEN: ADMIN_TOKEN })
  t.equal(r.code, 0, r.stderr)
  const lines = r.stdout.split('\n')
  t.match(lines[0], /^policy [0-9a-f]{16} → [0-9a-f]{16}$/)
  t.same(lines.slice(1), [
    'resources',
    '  ~ crm',
    '      max_ttl: 8h → 4h',
    'sub-processors',
    '  + globex',
    'entitlements',
    '  ~ acme → crm',
    '      #1:',
    '        - scopes [GET /crm/**], max 2h, approval one, window "Mon-Fri 08:00-18:00 UTC"',
    '        + scopes [GET /crm/tickets/**], max 2h, approval one, window "Mon-Fri 08:00-18:00 UTC"',
    'approver groups',
    '  ~ owners',
    '      members: [alice] → [alice, bob]',
    '',
    `live grants affected: 1 of 2 (${g.controlUrl})`,
    `  ${reads.id}  acme → crm [GET /crm/customers/**], expires ${reads.expires_at}`,
    '      "GET /crm/customers/**" is no longer within an entitlement (grant_not_entitled)',
    '',
  ])
  t.notMatch(r.stdout, tickets.id, 'a grant the change leaves alone is not listed')
  const json = JSON.parse((await cli(['policy', 'diff', before, after, '--json'])).stdout) as { changes: unknown[] }
  t.equal(json.changes.length, 4)
  t.match((await cli(['policy', 'diff', before, before])).stdout, /\nno differences\n$/)
  t.equal((await cli(['policy', 'diff', before])).code, 2)
})

t.test('the tools need no secrets: the example policy, without its TOTP variables', async (t) => {
  const copy = tempDir(t, 'tools-example')
  cpSync(POLICIES, copy, { recursive: true })
  const r = await cli(['policy', 'test', '--dir', copy], { EXAMPLE_ALICE_TOTP_SECRET: '', EXAMPLE_BOB_TOTP_SECRET: '', EXAMPLE_CAROL_TOTP_SECRET: '' })
  t.equal(r.code, 0, 'the fixtures pass')
  t.match(r.stdout, / 0 failed\n$/)
  const check = await cli(['policy', 'check', '--dir', copy], { EXAMPLE_ALICE_TOTP_SECRET: '' })
  t.equal(check.code, 1, '`policy check` does need them')
  t.match(check.stderr, 'environment variable EXAMPLE_ALICE_TOTP_SECRET is not set')
})

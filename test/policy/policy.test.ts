/** Policy loading: every problem in every file reported at once, positioned; secrets resolved. */
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { parseEnv } from 'node:util'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { compilePolicy, loadPolicy, upstreamPath } from '../../src/policy/policy.js'
import { SourceError, formatIssues } from '../../src/config/yaml-source.js'

function errors(texts: Record<string, string>, env: NodeJS.ProcessEnv = {}): string[] {
  try {
    compilePolicy(Object.entries(texts).map(([file, text]) => ({ file, text })), { env })
  } catch (err) {
    if (err instanceof SourceError) return formatIssues(err.issues).split('\n')
    throw err
  }
  return []
}

t.test('the shipped example policy loads', async (t) => {
  // The example's local approvers read their TOTP secrets from the environment: `npm start` sets
  // them from the committed, development-only config/dev-secrets/example.env.
  const env = parseEnv(readFileSync(new URL('../../config/dev-secrets/example.env', import.meta.url), 'utf8'))
  const p = loadPolicy(new URL('../../policies', import.meta.url).pathname, { env })
  t.same([...p.resources.keys()], ['crm-api', 'billing-ws'])
  t.match(p.version, /^[0-9a-f]{16}$/)
})

t.test('every problem at once, with file, line, column and path', async (t) => {
  const a = [
    'resources:', //                                  1
    '  - id: crm-api', //                             2
    '    upstream: ftp://x', //                       3
    '    match: { path_prefix: crm }', //             4
    '    max_ttl: 8 hours', //                        5
    '    websocket: yes', //                          6
    '  - id: Bad_Id', //                              7
    '    upstream: http://x', //                      8
    '    match: {}', //                               9
    '    max_ttl: 1h', //                             10
    '    extra: 1', //                                11
  ].join('\n')
  t.same(errors({ 'a.yaml': a }), [
    'a.yaml:3:5 resources[0].upstream: expected an http:// or https:// URL',
    'a.yaml:4:14 resources[0].match.path_prefix: expected a path starting with /',
    'a.yaml:5:5 resources[0].max_ttl: expected a duration such as 30s, 15m, 2h or 7d',
    'a.yaml:6:5 resources[0].websocket: expected boolean',
    'a.yaml:7:5 resources[1].id: expected an id: lowercase letters, digits, ".", "_", "-" (at most 63, starting with a letter or digit)',
    'a.yaml:11:5 resources[1].extra: unknown key',
  ])
  // A misspelt key: the real key is reported missing (once, at its object), the typo unknown.
  t.same(errors({ 'm.yaml': 'resources:\n  - id: c\n    upstream: http://h\n    match: { path_prefix: /c }\n    max_tll: 8h\n' }), [
    'm.yaml:2:5 resources[0].max_ttl: missing required key "max_ttl"',
    'm.yaml:5:5 resources[0].max_tll: unknown key',
  ])
})

t.test('semantic errors across files: duplicate ids, route conflicts, credentials', async (t) => {
  const a = `resources:
  - id: one
    upstream: http://127.0.0.1:1
    match: { path_prefix: /x }
    max_ttl: 1h
    credentials:
      - { header: Authorization, env: MISSING_SECRET }
      - { header: X-Forwarded-For, env: SOME }
      - { header: X-Key, env: SOME, file: k }
`
  const b = `resources:
  - id: one
    upstream: http://127.0.0.1:2
    match: { path_prefix: /y }
    max_ttl: 1h
  - id: two
    upstream: http://127.0.0.1:2
    match: { path_prefix: /x/ }
    max_ttl: 1h
    strip_prefix: true
  - id: three
    upstream: http://127.0.0.1:2?q=1
    match: {}
    max_ttl: 500ms
`
  t.same(errors({ 'a.yaml': a, 'b.yaml': b }, { SOME: 'v' }), [
    'a.yaml:7:34 resources[0].credentials[0].env: environment variable MISSING_SECRET is not set',
    'a.yaml:8:11 resources[0].credentials[1].header: header X-Forwarded-For is set by the gateway and cannot be injected',
    'a.yaml:9:9 resources[0].credentials[2]: a credential takes exactly one of env or file',
    'b.yaml:2:5 resources[0].id: duplicate resource id "one" (first defined at a.yaml:2)',
    'b.yaml:12:5 resources[2].upstream: the upstream URL must not carry a query, fragment or user info (use credentials)',
    'b.yaml:13:5 resources[2].match: a resource needs match.path_prefix, match.host, or both',
    'b.yaml:14:5 resources[2].max_ttl: max_ttl must be at least 1s',
  ])
  t.match(
    errors({ 'c.yaml': 'resources:\n  - { id: a, upstream: "http://h", match: { path_prefix: /p }, max_ttl: 1h }\n  - { id: b, upstream: "http://h", match: { path_prefix: /p }, max_ttl: 1h }\n' }),
    [/conflict|same/i],
  )
})

t.test("a duplicate resource's own problems are reported with the duplicate id", async (t) => {
  // The exact input of a finding: the duplicate's missing secret showed only once the id was fixed.
  const a = `resources:
  - { id: one, upstream: "http://127.0.0.1:1", match: { path_prefix: /x }, max_ttl: 1h }
  - id: one
    upstream: http://127.0.0.1:2
    match: { path_prefix: /y }
    max_ttl: 1h
    credentials:
      - { header: X-Key, env: NOT_SET_ANYWHERE }
`
  t.same(errors({ 'a.yaml': a }, {}), [
    'a.yaml:3:5 resources[1].id: duplicate resource id "one" (first defined at a.yaml:2)',
    'a.yaml:8:26 resources[1].credentials[0].env: environment variable NOT_SET_ANYWHERE is not set',
  ])
})

t.test('credential names are judged by the spelling upstream servers read', async (t) => {
  const a = `resources:
  - id: one
    upstream: http://127.0.0.1:1
    match: { path_prefix: /x }
    max_ttl: 1h
    credentials:
      - { header: X_Forwarded_For, env: SOME }
      - { header: X-Api-Key, env: SOME }
      - { header: X_Api.Key, env: SOME }
      - { header: X_Jit_Subject, env: SOME }
`
  t.same(errors({ 'a.yaml': a }, { SOME: 'v' }), [
    'a.yaml:7:11 resources[0].credentials[0].header: header X_Forwarded_For is set by the gateway and cannot be injected',
    'a.yaml:9:11 resources[0].credentials[2].header: header X_Api.Key is injected twice (names differing only in "-", "_" or "." are one header upstream)',
    'a.yaml:10:11 resources[0].credentials[3].header: header X_Jit_Subject is set by the gateway and cannot be injected',
  ])
})

t.test('route conflicts are reported with the other resources\' errors, at their position', async (t) => {
  const text = [
    'resources:',
    '  - { id: one, upstream: "http://h", match: { path_prefix: /crm }, max_ttl: 1h }',
    '  - { id: two, upstream: "http://h", match: { path_prefix: /crm/ }, max_ttl: 1h }',
    '  - { id: three, upstream: "http://h?x", match: { path_prefix: /z }, max_ttl: 1h, timeout: 0s }',
    '  - { id: four, upstream: 1, match: { path_prefix: /y }, max_ttl: 1h }',
  ].join('\n')
  t.same(errors({ 'r.yaml': text }), [
    'r.yaml:3:38 resources[1].match: same host and path_prefix as resource "one" (r.yaml:2): any host /crm',
    'r.yaml:4:18 resources[2].upstream: the upstream URL must not carry a query, fragment or user info (use credentials)',
    'r.yaml:4:83 resources[2].timeout: timeout must be longer than 0',
    'r.yaml:5:17 resources[3].upstream: expected an http:// or https:// URL',
  ])
})

t.test('schema errors do not hide the reference errors of well-formed items, however nested', async (t) => {
  const text = [
    'resources:',
    '  - { id: crm, upstream: "http://h", match: { path_prefix: /crm }, max_ttl: 8h }',
    'approver_groups:',
    '  - { id: owners, members: alice }',
    '  - { id: security, members: [carol] }',
    'approval_policies:',
    '  - { id: two, stages: [{ group: securty, approvals: 1 }], request_ttl: 1d }',
    'subprocessors:',
    '  - id: acme',
    '    name: ACME',
    '    contract_ends: "2030-01-01"',
    '    entitlements:',
    '      - { resource: crm, approval: two, scopes: ["GET /crm/**"], max_duraton: 1h }',
    '      - { resource: crm, approval: tow, scopes: ["GET /crm/**"], max_duration: 1h }',
  ].join('\n')
  t.same(errors({ 'p.yaml': text }), [
    'p.yaml:4:19 approver_groups[0].members: expected array',
    'p.yaml:7:27 approval_policies[0].stages[0].group: unknown approver group "securty"',
    'p.yaml:13:9 subprocessors[0].entitlements[0].max_duration: missing required key "max_duration"',
    'p.yaml:13:66 subprocessors[0].entitlements[0].max_duraton: unknown key',
    'p.yaml:14:26 subprocessors[0].entitlements[1].approval: unknown approval policy "tow"',
  ])
})

t.test('a folder without any resource is refused', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-pol-'))
  writeFileSync(join(dir, 'empty.yaml'), '')
  t.throws(() => loadPolicy(dir, { env: {} }), new SourceError([{ file: dir, line: 0, column: 0, path: '', message: 'no resources are declared in any *.yaml file of this folder' }]))
})

t.test('YAML traps: duplicate keys, alias bombs, `no` stays a string', async (t) => {
  t.match(errors({ 'd.yaml': 'resources: []\nresources: []\n' }), [/d\.yaml:2:1: Map keys must be unique/])
  const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
  for (let i = 1; i < 10; i++) bomb.push(`${'b'.repeat(i)}: &${'b'.repeat(i)} [${Array(10).fill(i === 1 ? '*a' : `*${'b'.repeat(i - 1)}`).join(',')}]`)
  const started = Date.now()
  t.match(errors({ 'bomb.yaml': bomb.join('\n') }), [/bomb\.yaml:1:1: Excessive alias count/])
  t.ok(Date.now() - started < 1000, 'refused quickly')
  t.match(errors({ 'n.yaml': 'resources:\n  - { id: a, upstream: "http://h", match: { path_prefix: /p }, max_ttl: 1h, websocket: no }\n' }), [
    /websocket: expected boolean/,
  ])
})

t.test('secrets: from env and file, never enumerable on the resource', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-pol-'))
  writeFileSync(join(dir, 'key.txt'), 'file-secret\n')
  writeFileSync(
    join(dir, 'p.yaml'),
    `resources:
  - id: api
    upstream: http://127.0.0.1:9000/base/
    match: { path_prefix: /api }
    strip_prefix: true
    max_ttl: 2h
    credentials:
      - { header: Authorization, env: TOKEN, prefix: "Bearer " }
      - { header: X-Key, file: key.txt }
`,
  )
  const p = loadPolicy(dir, { env: { TOKEN: 'env-secret' } })
  const r = p.resources.get('api')!
  t.same(r.inject, [['authorization', 'Bearer env-secret'], ['x-key', 'file-secret']])
  t.notOk(JSON.stringify(r).includes('secret'), 'serialising a resource never shows a secret')
  t.same(r.injectedHeaders, ['authorization', 'x-key'])
  t.equal(r.maxTtlMs, 7_200_000)
  t.equal(upstreamPath(r, '/api/v1/x'), '/base/v1/x')
  t.equal(upstreamPath(r, '/api'), '/base/')
  t.equal(p.matchRoute('anything', '/api/v1')?.id, 'api')
  t.equal(p.matchRoute(undefined, '/apix'), undefined)
  t.ok(Object.isFrozen(r))
})

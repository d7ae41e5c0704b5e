/**
 * Principals in policy (sub-processors, entitlements, approver groups, approval policies, local
 * approvers, MFA): the compiled shapes, and the exact error list for a broken policy per trap.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseEnv } from 'node:util'
import { compilePolicy, loadPolicy } from '../../src/policy/policy.js'
import { SourceError, formatIssues } from '../../src/config/yaml-source.js'

const POLICIES = new URL('../../policies', import.meta.url).pathname
const DEV_ENV = parseEnv(readFileSync(new URL('../../config/dev-secrets/example.env', import.meta.url), 'utf8'))
/** 160 random bits, base32. */
const SECRET = 'M437FKSVFU6OEXCLS3MUOUARRXOF4LJK'
const ED25519_X = 'n5ffZQL0I1NemHS07bHQCHDUEYh_tCgnITb9HHexuOs'

/** Writes the files into a fresh folder (relative key and secret files resolve there) and loads it. */
function load(files: Record<string, string>, env: NodeJS.ProcessEnv = {}) {
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-principals-'))
  for (const [name, text] of Object.entries(files)) writeFileSync(join(dir, name), text)
  return { dir, load: () => loadPolicy(dir, { env }) }
}

/** The error lines of loading `files`, with the temp folder shown as `DIR`. */
function errors(files: Record<string, string>, env: NodeJS.ProcessEnv = {}): string[] {
  const { dir, load: run } = load(files, env)
  try {
    run()
  } catch (err) {
    if (err instanceof SourceError) return formatIssues(err.issues).replaceAll(dir, 'DIR').split('\n')
    throw err
  }
  return []
}

const RESOURCE = 'resources:\n  - { id: crm, upstream: "http://h", match: { path_prefix: /crm }, max_ttl: 8h }\n'
const APPROVAL = 'approver_groups:\n  - { id: owners, members: [alice, bob] }\napproval_policies:\n  - { id: two, stages: [{ group: owners, approvals: 2 }], request_ttl: 1d }\n'

/** A sub-processor `acme` with one entitlement whose extra keys are `entitlement` (YAML flow). */
function withEntitlement(entitlement: string): Record<string, string> {
  return {
    'p.yaml':
      RESOURCE +
      APPROVAL +
      'subprocessors:\n' +
      '  - id: acme\n' + //                                                   line 7
      '    name: ACME\n' +
      '    contract_ends: "2027-06-30"\n' +
      '    entitlements:\n' +
      `      - { resource: crm, approval: two, ${entitlement} }\n`, //          line 11
  }
}

t.test('the shipped example compiles into the documented shapes', async (t) => {
  const p = loadPolicy(POLICIES, { env: DEV_ENV })
  t.same([...p.resources.keys()], ['crm-api', 'billing-ws'])
  const { subprocessors, approverGroups, approvalPolicies, localApprovers, mfa } = p.principals
  t.same([...subprocessors.keys()], ['acme', 'globex'])
  const acme = subprocessors.get('acme')!
  t.equal(acme.name, 'ACME Support Ltd')
  t.equal(acme.contractEndsAt, Date.parse('2030-07-01T00:00:00Z'), 'the end of the last day, UTC')
  t.same(acme.keys, [{ kind: 'jwk', jwk: { kty: 'OKP', crv: 'Ed25519', x: ED25519_X } }])
  t.equal(subprocessors.get('globex')!.keys[0]?.kind, 'jwks_file')
  const [support, breakGlass] = acme.entitlements
  t.match(support, {
    resource: 'crm-api',
    scopes: ['GET /crm/customers/**', 'GET,POST /crm/tickets/**'],
    maxDurationMs: 4 * 3_600_000,
    approval: 'two-stage',
    window: { source: 'Mon-Fri 08:00-18:00 Europe/Berlin' },
    enforceWindowAtUse: false,
    requireTicket: true,
    claimWithinMs: undefined,
    autoApprove: { maxDurationMs: 30 * 60_000, scopes: ['GET /crm/customers/**'] },
    breakGlass: undefined,
  })
  t.ok(support?.scopeSet.allows('POST', '/crm/tickets/7'))
  t.match(breakGlass, { approval: 'security-review', breakGlass: { maxDurationMs: 3_600_000 } })
  t.equal(p.entitlementsOf('acme', 'crm-api')?.length, 2)
  t.same(p.entitlementsOf('acme', 'billing-ws'), [])
  t.equal(p.entitlementsOf('nobody', 'crm-api'), undefined)
  const line = readFileSync(join(POLICIES, 'example.yaml'), 'utf8').split('\n').indexOf('      - resource: crm-api') + 1
  t.equal(p.originOf(support as object), `${join(POLICIES, 'example.yaml')}:${line}`, 'where the entitlement is declared')
  t.same([...approverGroups.get('security')!.members], ['carol'])
  t.same([...approverGroups.get('security')!.oidcGroups], ['security-team'])
  t.match(approvalPolicies.get('two-stage'), {
    stages: [{ group: 'crm-owners', approvals: 1 }, { group: 'security', approvals: 1 }],
    requestTtlMs: 86_400_000,
    escalateAfterMs: 1_800_000,
    escalationGroup: 'security-oncall',
    escalationAdmits: false,
  })
  const alice = localApprovers.get('alice')!
  t.equal(alice.totpSecret.length, 20, 'base32 decoded')
  t.equal(JSON.stringify(alice), '{"id":"alice"}', 'the secret is never serialised')
  t.same(mfa, { amrAny: ['mfa', 'otp', 'hwk'], acrAny: [] })
})

t.test('a missing local-approver secret fails the example loudly (no fallback)', async (t) => {
  t.same(errors({ 'a.yaml': readFileSync(join(POLICIES, 'example-approvers.yaml'), 'utf8') }), [
    'DIR/a.yaml:23:20 local_approvers[0].totp_secret.env: environment variable EXAMPLE_ALICE_TOTP_SECRET is not set',
    'DIR/a.yaml:25:20 local_approvers[1].totp_secret.env: environment variable EXAMPLE_BOB_TOTP_SECRET is not set',
    'DIR/a.yaml:27:20 local_approvers[2].totp_secret.env: environment variable EXAMPLE_CAROL_TOTP_SECRET is not set',
  ])
})

t.test('defaults: no principals at all, MFA rule', async (t) => {
  const p = compilePolicy([{ file: 'r.yaml', text: RESOURCE }], { env: {} })
  t.equal(p.principals.subprocessors.size, 0)
  t.same(p.principals.mfa, { amrAny: ['mfa'], acrAny: [] }, 'RFC 8176 "mfa" by default')
})

t.test('secrets from a file; base32 as authenticator apps show it', async (t) => {
  const { load: run } = load(
    {
      'p.yaml': RESOURCE + 'local_approvers:\n  - { id: alice, totp_secret: { file: alice.totp } }\n  - { id: bob, totp_secret: { env: BOB } }\n',
      'alice.totp': `${SECRET.toLowerCase().replace(/(.{4})/g, '$1 ')}\n`,
    },
    { BOB: `${SECRET}====` },
  )
  const p = run()
  t.same([...p.principals.localApprovers.get('alice')!.totpSecret], [...p.principals.localApprovers.get('bob')!.totpSecret])
})

/** One broken policy per trap, and the exact error list it gives. */
const TRAPS: { name: string; files: Record<string, string>; env?: NodeJS.ProcessEnv; errors: string[] }[] = [
  {
    name: 'entitlement names a missing resource and a missing approval policy',
    files: {
      'p.yaml': RESOURCE + APPROVAL + 'subprocessors:\n  - id: acme\n    name: ACME\n    contract_ends: "2027-06-30"\n    entitlements:\n      - { resource: crm-api, approval: three, scopes: ["GET /crm/**"], max_duration: 1h }\n',
    },
    errors: [
      'DIR/p.yaml:12:11 subprocessors[0].entitlements[0].resource: unknown resource "crm-api"',
      'DIR/p.yaml:12:30 subprocessors[0].entitlements[0].approval: unknown approval policy "three"',
    ],
  },
  {
    name: 'stage names a missing group; escalation group missing',
    files: {
      'p.yaml':
        'approver_groups:\n  - { id: owners, members: [alice] }\napproval_policies:\n  - id: two\n    stages: [{ group: owners, approvals: 1 }, { group: ghosts, approvals: 1 }]\n    request_ttl: 1h\n    escalate_after: 10m\n    escalation_group: oncall\n',
    },
    errors: [
      'DIR/p.yaml:5:49 approval_policies[0].stages[1].group: unknown approver group "ghosts"',
      'DIR/p.yaml:8:5 approval_policies[0].escalation_group: unknown approver group "oncall"',
    ],
  },
  {
    name: 'duplicate ids, across files too',
    files: {
      'a.yaml': RESOURCE + APPROVAL + 'subprocessors:\n  - { id: acme, name: A, contract_ends: "2027-01-01" }\nlocal_approvers:\n  - { id: alice, totp_secret: { env: S } }\n',
      'b.yaml':
        RESOURCE +
        'approver_groups:\n  - { id: owners, members: [x] }\napproval_policies:\n  - { id: two, stages: [{ group: owners, approvals: 1 }], request_ttl: 1d }\nsubprocessors:\n  - { id: acme, name: B, contract_ends: "2027-01-01" }\nlocal_approvers:\n  - { id: alice, totp_secret: { env: S } }\nmfa: { amr_any: [mfa] }\n',
      'c.yaml': 'mfa: { acr_any: [phr] }\n',
    },
    env: { S: SECRET },
    errors: [
      'DIR/b.yaml:2:7 resources[0].id: duplicate resource id "crm" (first defined at DIR/a.yaml:2)',
      'DIR/b.yaml:4:7 approver_groups[0].id: duplicate approver group id "owners" (first defined at DIR/a.yaml:4)',
      'DIR/b.yaml:6:7 approval_policies[0].id: duplicate approval policy id "two" (first defined at DIR/a.yaml:6)',
      'DIR/b.yaml:8:7 subprocessors[0].id: duplicate sub-processor id "acme" (first defined at DIR/a.yaml:8)',
      'DIR/b.yaml:10:7 local_approvers[0].id: duplicate local approver id "alice" (first defined at DIR/a.yaml:10)',
      'DIR/c.yaml:1:1 mfa: mfa is already defined at DIR/b.yaml:11',
    ],
  },
  {
    name: 'max_duration above the resource max_ttl; auto_approve and break_glass above max_duration',
    files: withEntitlement(
      'scopes: ["GET /crm/**"], max_duration: 12h, auto_approve: { max_duration: 1d, scopes: ["GET /crm/**"] }, break_glass: { max_duration: 13h }',
    ),
    errors: [
      'DIR/p.yaml:12:66 subprocessors[0].entitlements[0].max_duration: max_duration 12h is above the max_ttl 8h of resource "crm"',
      'DIR/p.yaml:12:101 subprocessors[0].entitlements[0].auto_approve.max_duration: auto_approve.max_duration 1d is above the entitlement\'s max_duration 12h',
      'DIR/p.yaml:12:161 subprocessors[0].entitlements[0].break_glass.max_duration: break_glass.max_duration 13h is above the entitlement\'s max_duration 12h',
    ],
  },
  {
    name: 'approvals below 1 (schema), above a static group size, and an empty stage list',
    files: {
      'p.yaml':
        'approver_groups:\n  - { id: owners, members: [alice, bob, alice] }\n  - { id: sec, members: [carol], oidc_groups: [security] }\napproval_policies:\n  - { id: a, stages: [{ group: owners, approvals: 3 }, { group: sec, approvals: 5 }], request_ttl: 1d }\n  - { id: b, stages: [], request_ttl: 1d }\n  - { id: c, stages: [{ group: owners, approvals: 0 }], request_ttl: 1d }\n',
    },
    // The schema errors don't hide the semantic one of the well-formed policy `a`: all at once.
    errors: [
      'DIR/p.yaml:2:19 approver_groups[0].members: approver group "owners" lists "alice" more than once',
      'DIR/p.yaml:5:40 approval_policies[0].stages[0].approvals: 3 approvals needed but group "owners" has only 2 member(s)',
      'DIR/p.yaml:6:14 approval_policies[1].stages: expected at least one stage',
      'DIR/p.yaml:7:40 approval_policies[2].stages[0].approvals: expected a whole number of approvals, at least 1',
    ],
  },
  {
    name: 'approvals above the size of a group with static members only',
    files: {
      'p.yaml':
        'approver_groups:\n  - { id: owners, members: [alice, bob, alice] }\n  - { id: sec, members: [carol], oidc_groups: [security] }\n  - { id: nobody }\napproval_policies:\n  - { id: a, stages: [{ group: owners, approvals: 3 }, { group: sec, approvals: 5 }, { group: nobody, approvals: 1 }], request_ttl: 1d }\n',
    },
    errors: [
      'DIR/p.yaml:2:19 approver_groups[0].members: approver group "owners" lists "alice" more than once',
      'DIR/p.yaml:4:7 approver_groups[2].id: approver group "nobody" has neither members nor oidc_groups: nobody could approve',
      'DIR/p.yaml:6:40 approval_policies[0].stages[0].approvals: 3 approvals needed but group "owners" has only 2 member(s)',
    ],
  },
  {
    name: 'escalation that can never happen',
    files: {
      'p.yaml':
        'approver_groups:\n  - { id: owners, members: [alice] }\napproval_policies:\n  - { id: a, stages: [{ group: owners, approvals: 1 }], request_ttl: 1h, escalate_after: 2h, escalation_group: owners }\n  - { id: b, stages: [{ group: owners, approvals: 1 }], request_ttl: 1h, escalate_after: 5m }\n  - { id: c, stages: [{ group: owners, approvals: 1 }], request_ttl: 1h, escalation_admits: true }\n',
    },
    errors: [
      'DIR/p.yaml:4:74 approval_policies[0].escalate_after: escalate_after 2h is not before request_ttl 1h: the request would expire first',
      'DIR/p.yaml:5:74 approval_policies[1].escalate_after: escalate_after needs an escalation_group',
      'DIR/p.yaml:6:74 approval_policies[2].escalation_admits: escalation_admits needs an escalation_group',
    ],
  },
  {
    name: 'scopes that do not parse or lie outside the resource path prefix; auto_approve scopes beyond the entitlement',
    files: withEntitlement(
      'scopes: ["GET /crm/customers/**", "get /crm/x", "GET /cmr/**", "GET /crm/a/*.json"], max_duration: 1h, auto_approve: { max_duration: 5m, scopes: ["GET /crm/customers/1", "POST /crm/customers/1", "GET /crm/**"] }',
    ),
    errors: [
      'DIR/p.yaml:12:75 subprocessors[0].entitlements[0].scopes[1]: method "get" must be uppercase: methods are case-sensitive (RFC 9110 §9.1), write "GET"',
      'DIR/p.yaml:12:89 subprocessors[0].entitlements[0].scopes[2]: "GET /cmr/**" can never match: resource "crm" serves /crm only',
      'DIR/p.yaml:12:104 subprocessors[0].entitlements[0].scopes[3]: segment "*.json" of "/crm/a/*.json": wildcards must be whole segments ("*" or "**"); partial wildcards such as "*.json" are not supported',
      'DIR/p.yaml:12:211 subprocessors[0].entitlements[0].auto_approve.scopes[1]: "POST /crm/customers/1" is not within the entitlement\'s scopes',
      'DIR/p.yaml:12:236 subprocessors[0].entitlements[0].auto_approve.scopes[2]: "GET /crm/**" is not within the entitlement\'s scopes',
    ],
  },
  {
    name: 'time windows that do not parse; enforce_window_at_use without a window',
    files: {
      'p.yaml':
        RESOURCE +
        APPROVAL +
        'subprocessors:\n  - id: acme\n    name: ACME\n    contract_ends: "2027-06-30"\n    entitlements:\n' +
        '      - { resource: crm, approval: two, scopes: ["GET /crm/**"], max_duration: 1h, window: "Mon-Fri 08:00-18:00" }\n' +
        '      - { resource: crm, approval: two, scopes: ["GET /crm/**"], max_duration: 1h, window: "Mon-Fri 8-18 Europe/Berlin" }\n' +
        '      - { resource: crm, approval: two, scopes: ["GET /crm/**"], max_duration: 1h, window: "Mon-Fri 08:00-18:00 Berlin" }\n' +
        '      - { resource: crm, approval: two, scopes: ["GET /crm/**"], max_duration: 1h, enforce_window_at_use: true }\n',
    },
    errors: [
      'DIR/p.yaml:12:84 subprocessors[0].entitlements[0].window: expected "DAYS HH:MM-HH:MM ZONE", e.g. "Mon-Fri 08:00-18:00 Europe/Berlin"',
      'DIR/p.yaml:13:84 subprocessors[0].entitlements[1].window: hours "8-18": expected HH:MM-HH:MM, e.g. 08:00-18:00',
      'DIR/p.yaml:14:84 subprocessors[0].entitlements[2].window: time zone "Berlin" is not an IANA time zone name (e.g. Europe/Berlin, UTC)',
      'DIR/p.yaml:15:84 subprocessors[0].entitlements[3].enforce_window_at_use: enforce_window_at_use needs a window',
    ],
  },
  {
    name: 'contract_ends not in YYYY-MM-DD form (an unquoted YAML date stays a string)',
    files: {
      'p.yaml':
        'subprocessors:\n  - { id: b, name: B, contract_ends: 2027-02-28 }\n  - { id: c, name: C, contract_ends: "30.06.2027" }\n',
    },
    errors: [
      'DIR/p.yaml:3:23 subprocessors[1].contract_ends: expected a date YYYY-MM-DD',
    ],
  },
  {
    name: 'contract_ends: a date that does not exist',
    files: { 'p.yaml': 'subprocessors:\n  - { id: a, name: A, contract_ends: "2027-02-30" }\n  - { id: d, name: D, contract_ends: 2027-13-01 }\n' },
    errors: [
      'DIR/p.yaml:2:23 subprocessors[0].contract_ends: "2027-02-30" is not a calendar date',
      'DIR/p.yaml:3:23 subprocessors[1].contract_ends: "2027-13-01" is not a calendar date',
    ],
  },
  {
    name: 'local approver secrets: missing, unreadable, not base32, too short, both sources',
    files: {
      'p.yaml':
        'local_approvers:\n  - { id: a, totp_secret: { env: A_TOTP } }\n  - { id: b, totp_secret: { file: b.totp } }\n  - { id: c, totp_secret: { env: C_TOTP } }\n  - { id: d, totp_secret: { env: D_TOTP } }\n',
      'q.yaml': 'local_approvers:\n  - { id: e, totp_secret: { env: E_TOTP, file: e.totp } }\n  - { id: f, totp_secret: {} }\n',
    },
    env: { C_TOTP: 'not base32!', D_TOTP: 'MZXW6YTBOI' },
    errors: [
      'DIR/p.yaml:2:29 local_approvers[0].totp_secret.env: environment variable A_TOTP is not set',
      'DIR/p.yaml:3:29 local_approvers[1].totp_secret.file: cannot read secret file: ENOENT',
      'DIR/p.yaml:4:14 local_approvers[2].totp_secret: the TOTP secret is not base32 (RFC 4648: letters A-Z and digits 2-7)',
      'DIR/p.yaml:5:14 local_approvers[3].totp_secret: the TOTP secret has 48 bits; at least 128 are required (RFC 4226 §4)',
      'DIR/q.yaml:2:14 local_approvers[0].totp_secret: expected exactly one of env or file',
      'DIR/q.yaml:3:14 local_approvers[1].totp_secret: expected exactly one of env or file',
    ],
  },
  {
    name: 'keys: private JWK, weak RSA, unsupported curve, not a key, unreadable or invalid JWKS file, plain-http URL',
    files: {
      'p.yaml':
        'subprocessors:\n  - id: acme\n    name: ACME\n    contract_ends: "2027-06-30"\n    keys:\n' +
        `      - jwk: { kty: OKP, crv: Ed25519, x: ${ED25519_X}, d: ${ED25519_X} }\n` +
        '      - jwk: { kty: RSA, n: AQAB, e: AQAB }\n' +
        '      - jwk: { kty: OKP, crv: X25519, x: hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo }\n' +
        '      - jwk: { kty: EC, crv: P-256, x: AAAA, y: AAAA }\n' +
        '      - jwk: { kty: oct, k: c2VjcmV0 }\n' +
        '      - jwks_file: missing.json\n' +
        '      - jwks_file: bad.json\n' +
        '      - jwks_file: empty.json\n' +
        '      - jwks_url: "http://vendor.example/jwks.json"\n' +
        '      - { jwk: { kty: OKP }, jwks_url: "https://vendor.example/jwks.json" }\n' +
        `      - jwk: { kty: OKP, crv: Ed25519, x: ${ED25519_X}, use: enc }\n`,
      'bad.json': '{"keys": [',
      'empty.json': '{"keys": []}',
    },
    errors: [
      'DIR/p.yaml:14:9 subprocessors[0].keys[8].jwks_url: expected an https:// URL (http:// only for localhost)',
      'DIR/p.yaml:15:9 subprocessors[0].keys[9]: expected exactly one of jwk, jwks_file or jwks_url',
    ],
  },
  {
    name: 'keys: each problem once the file is well-formed',
    files: {
      'p.yaml':
        'subprocessors:\n  - id: acme\n    name: ACME\n    contract_ends: "2027-06-30"\n    keys:\n' +
        `      - jwk: { kty: OKP, crv: Ed25519, x: ${ED25519_X}, d: ${ED25519_X} }\n` +
        '      - jwk: { kty: RSA, n: AQAB, e: AQAB }\n' +
        '      - jwk: { kty: OKP, crv: X25519, x: hSDwCYkwp1R0i33ctD73Wg2_Og0mOBr066SpjqqbTmo }\n' +
        '      - jwk: { kty: EC, crv: secp256k1, x: AAAA, y: AAAA }\n' +
        '      - jwk: { kty: oct, k: c2VjcmV0 }\n' +
        '      - jwks_file: missing.json\n' +
        '      - jwks_file: bad.json\n' +
        '      - jwks_file: empty.json\n' +
        '      - jwks_url: "http://127.0.0.1:9999/jwks.json"\n' +
        `      - jwk: { kty: OKP, crv: Ed25519, x: ${ED25519_X}, use: enc }\n` +
        '      - jwk: { kty: EC, crv: P-256, x: AAAA, y: AAAA }\n',
      'bad.json': '{"keys": [',
      'empty.json': '{"keys": []}',
    },
    errors: [
      'DIR/p.yaml:6:9 subprocessors[0].keys[0].jwk: not a public key (it has "d"): register the public key only',
      'DIR/p.yaml:7:9 subprocessors[0].keys[1].jwk: RSA key of 17 bits; at least 2048 are required',
      'DIR/p.yaml:8:9 subprocessors[0].keys[2].jwk: OKP X25519 keys are not supported: expected an Ed25519, EC (P-256, P-384, P-521) or RSA public key',
      'DIR/p.yaml:9:9 subprocessors[0].keys[3].jwk: EC secp256k1 keys are not supported: expected an Ed25519, EC (P-256, P-384, P-521) or RSA public key',
      'DIR/p.yaml:10:9 subprocessors[0].keys[4].jwk: not a public key (it has "k"): register the public key only',
      'DIR/p.yaml:11:9 subprocessors[0].keys[5].jwks_file: cannot read JWKS file DIR/missing.json: ENOENT',
      'DIR/p.yaml:12:9 subprocessors[0].keys[6].jwks_file: JWKS file DIR/bad.json is not valid JSON',
      'DIR/p.yaml:13:9 subprocessors[0].keys[7].jwks_file: JWKS file DIR/empty.json has no "keys" array',
      'DIR/p.yaml:15:9 subprocessors[0].keys[9].jwk: "use" is "enc"; a verification key has use "sig" or none',
      'DIR/p.yaml:16:9 subprocessors[0].keys[10].jwk: not a valid EC P-256 public key (check x and y)',
    ],
  },
  {
    name: 'durations only as strings with a unit (no bare numbers, no sexagesimal)',
    files: withEntitlement('scopes: ["GET /crm/**"], max_duration: 90, claim_within: 1:30, auto_approve: { max_duration: 0.5h, scopes: ["GET /crm/**"] }'),
    errors: [
      'DIR/p.yaml:12:66 subprocessors[0].entitlements[0].max_duration: expected a duration such as 30s, 15m, 2h or 7d',
      'DIR/p.yaml:12:84 subprocessors[0].entitlements[0].claim_within: expected a duration such as 30s, 15m, 2h or 7d',
      'DIR/p.yaml:12:120 subprocessors[0].entitlements[0].auto_approve.max_duration: expected a duration such as 30s, 15m, 2h or 7d',
    ],
  },
  {
    name: 'claim_within: a positive duration, never with auto_approve (break_glass is fine)',
    files: {
      ...withEntitlement('scopes: ["GET /crm/**"], max_duration: 1h, claim_within: 0s, break_glass: { max_duration: 1h }'),
      'q.yaml':
        'subprocessors:\n  - id: globex\n    name: Globex\n    contract_ends: "2027-06-30"\n    entitlements:\n      - { resource: crm, approval: two, scopes: ["GET /crm/**"], max_duration: 1h, claim_within: 1h, auto_approve: { max_duration: 5m, scopes: ["GET /crm/**"] } }\n',
    },
    errors: [
      'DIR/p.yaml:12:84 subprocessors[0].entitlements[0].claim_within: must be at least 1s',
      'DIR/q.yaml:6:84 subprocessors[0].entitlements[0].claim_within: claim_within cannot be combined with auto_approve: an auto-approved request is granted on demand; put the two in separate entitlements',
    ],
  },
  {
    name: 'unknown keys and wrong types in principals (YAML 1.2: `on` is a string)',
    files: withEntitlement('scopes: ["GET /crm/**"], max_duration: 1h, require_ticket: on, ticket_required: true'),
    errors: [
      'DIR/p.yaml:12:84 subprocessors[0].entitlements[0].require_ticket: expected boolean',
      'DIR/p.yaml:12:104 subprocessors[0].entitlements[0].ticket_required: unknown key',
    ],
  },
  {
    name: 'a file that fails the schema does not make its ids unknown elsewhere',
    files: {
      'a.yaml': 'resources:\n  - { id: crm, upstream: "http://h", match: { path_prefix: /crm }, max_ttl: 8 hours }\napproval_policies:\n  - { id: two, stages: [], request_ttl: 1d }\n',
      'b.yaml': 'subprocessors:\n  - id: acme\n    name: ACME\n    contract_ends: "2027-06-30"\n    entitlements:\n      - { resource: crm, approval: two, scopes: ["GET /crm/**"], max_duration: 1h }\n',
    },
    errors: [
      'DIR/a.yaml:2:68 resources[0].max_ttl: expected a duration such as 30s, 15m, 2h or 7d',
      'DIR/a.yaml:4:16 approval_policies[0].stages: expected at least one stage',
    ],
  },
  {
    name: 'mfa that no ID token could satisfy',
    files: { 'p.yaml': 'mfa: { amr_any: [], acr_any: [] }\n' },
    errors: [
      'DIR/p.yaml:1:1 mfa: mfa lists no amr_any and no acr_any value: no approver could ever prove MFA',
    ],
  },
]

for (const trap of TRAPS) {
  t.test(`trap: ${trap.name}`, async (t) => {
    t.same(errors(trap.files, trap.env ?? {}), trap.errors)
  })
}

t.test('a JWKS file is part of the policy version: rotating a vendor key is a real reload', async (t) => {
  const { generateSigningKey } = await import('../../src/authn/keys.js')
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-jwks-'))
  const policy = `${RESOURCE}subprocessors:\n  - id: acme\n    name: ACME\n    contract_ends: "2030-01-01"\n    keys: [{ jwks_file: acme.jwks.json }]\n`
  writeFileSync(join(dir, 'p.yaml'), policy)
  writeFileSync(join(dir, 'acme.jwks.json'), JSON.stringify({ keys: [(await generateSigningKey()).publicJwk] }))
  const before = loadPolicy(dir, { env: {} }).version
  writeFileSync(join(dir, 'acme.jwks.json'), JSON.stringify({ keys: [(await generateSigningKey()).publicJwk] }))
  t.not(loadPolicy(dir, { env: {} }).version, before)
})

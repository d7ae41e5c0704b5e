/** The jitgate command as a real process: help, exit codes, clear errors (never a stack trace). */
import t from 'tap'
import { writeFileSync, statSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseEnv } from 'node:util'
import { tempDir } from '../helpers/tmp.js'
import { runCli } from '../helpers/process.js'
import { main } from '../../src/cli/main.js'

/** Runs the CLI in-process (fast); `runCli` spawns a real process where exit behaviour matters. */
async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await main(args, { out: (s) => void (stdout += s), err: (s) => void (stderr += s), env: { ...process.env, ...env } })
  return { code, stdout, stderr }
}
import { startTestGateway, ADMIN_TOKEN } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'

/** The example policy's development-only TOTP secrets, as `npm start` sets them. */
const DEV_ENV = parseEnv(readFileSync(new URL('../../config/dev-secrets/example.env', import.meta.url), 'utf8'))
const tmp = () => tempDir(t, 'cli')

t.test('help for the tool and every command', async (t) => {
  const top = await runCli(['--help'])
  t.match(top.stdout, 'jitgate 0.1.0', 'the real process prints help')
  t.equal(top.code, 0)
  for (const cmd of ['serve', 'grant issue', 'grant list', 'grant revoke', 'keys generate', 'policy check']) {
    t.match(top.stdout, cmd)
    const r = await cli([...cmd.split(' '), '--help'])
    t.equal(r.code, 0, `${cmd} --help`)
    t.match(r.stdout, `Usage: jitgate ${cmd}`)
  }
  const unknown = await cli(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, 'unknown command "frobnicate"')
  const group = await cli(['grant', '--help'])
  t.equal(group.code, 0)
  t.match(group.stdout, /grant issue.*\n.*grant list.*\n.*grant revoke/)
  const badFlag = await cli(['grant', 'issue', '--nope'])
  t.equal(badFlag.code, 2)
  t.match(badFlag.stderr, /Unknown option '--nope'/)
})

t.test('policy check: OK on the shipped policy; every error listed, exit 1, no stack trace', async (t) => {
  const ok = await cli(['policy', 'check'], DEV_ENV)
  t.equal(ok.code, 0)
  t.match(ok.stdout, /policy OK: version [0-9a-f]{16}, 2 resource\(s\), 2 sub-processor\(s\) in 2 file\(s\)/)
  const dir = tmp()
  writeFileSync(join(dir, 'bad.yaml'), 'resources:\n  - id: x\n    upstream: http://h\n    match: { path_prefix: /x }\n    max_ttl: 1h\n    typo: true\n  - id: x\n    upstream: http://h\n    match: { path_prefix: /y }\n    max_ttl: 1h\n')
  const bad = await cli(['policy', 'check', '--dir', dir])
  t.equal(bad.code, 1)
  t.match(bad.stderr, `invalid policy:\n  ${join(dir, 'bad.yaml')}:6:5 resources[0].typo: unknown key`)
  t.notMatch(bad.stderr, /\n\s+at /, 'no stack trace')
})

t.test('serve with a bad config or a policy error stops with a clear message', async (t) => {
  const dir = tmp()
  writeFileSync(join(dir, 'c.yaml'), 'data_plane:\n  listen: everywhere\n')
  const r = await runCli(['serve', '--config', join(dir, 'c.yaml')])
  t.equal(r.code, 1)
  t.match(r.stderr, `${join(dir, 'c.yaml')}:2:3 data_plane.listen: expected host:port`)
  t.notMatch(r.stderr, /\n\s+at /)
  const exposed = await runCli(['serve'], { JITGATE_CONTROL_LISTEN: '0.0.0.0:0', JITGATE_DATA_LISTEN: '127.0.0.1:0', JITGATE_ADMIN_TOKEN: '', JITGATE_DATA_DIR: dir })
  t.equal(exposed.code, 1)
  t.match(exposed.stderr, 'jitgate: the control plane listens on 0.0.0.0:0 but no admin token is configured')
})

t.test('keys generate writes a 0600 private JWK and never overwrites', async (t) => {
  const out = join(tmp(), 'k.json')
  const r = await cli(['keys', 'generate', '--out', out])
  t.equal(r.code, 0)
  t.equal(statSync(out).mode & 0o777, 0o600)
  const pub = JSON.parse(r.stdout)
  t.same(Object.keys(pub).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x'])
  t.equal(JSON.parse(readFileSync(out, 'utf8')).kid, pub.kid)
  const again = await cli(['keys', 'generate', '--out', out])
  t.equal(again.code, 1)
  t.equal(again.stderr, `jitgate: ${out} exists (refusing to overwrite)\n`)
  const nowhere = await cli(['keys', 'generate', '--out', '/nonexistent-dir/k.json'])
  t.equal(nowhere.code, 1)
  t.equal(nowhere.stderr, 'jitgate: cannot write /nonexistent-dir/k.json: no such folder\n')
})

t.test('grant issue / list / revoke against a running gateway', async (t) => {
  const g = await startTestGateway(t, { policy: 'resources:\n  - { id: api, upstream: "http://127.0.0.1:9", match: { path_prefix: /api }, max_ttl: 1h }\n' })
  const env = { JITGATE_CONTROL_URL: g.controlUrl, JITGATE_ADMIN_TOKEN: ADMIN_TOKEN, USER: 'alice' }
  const issued = await cli(['grant', 'issue', '--subject', 'acme', '--resource', 'api', '--scope', 'GET /api/**', '--ttl', '5m', '--reason', 'SUP-1'], env)
  t.equal(issued.code, 0, issued.stderr)
  t.match(issued.stdout, /^eyJ[\w-]+\.[\w-]+\.[\w-]+\n$/, 'prints the token alone (pipe-friendly)')
  const id = /grant (g_\S+)/.exec(issued.stderr)?.[1] as string
  t.match(g.audit.find((e) => e.event === 'grant.issued'), { actor: 'operator:alice', reason: 'SUP-1' })
  const list = await cli(['grant', 'list'], env)
  t.match(list.stdout, `${id}  acme → api  [GET /api/**]`)
  const tooLong = await cli(['grant', 'issue', '--subject', 'acme', '--resource', 'api', '--scope', 'GET /api/**', '--ttl', '2h'], env)
  t.equal(tooLong.code, 1)
  t.match(tooLong.stderr, "jitgate: ttl_exceeds_max: The ttl exceeds the resource's max_ttl.\n  ttl 2h > max_ttl 1h")
  const wrong = await cli(['grant', 'list'], { ...env, JITGATE_ADMIN_TOKEN: 'wrong-wrong-wrong-wrong' })
  t.equal(wrong.code, 1)
  t.match(wrong.stderr, 'unauthorized')
  const rev = await cli(['grant', 'revoke', id, '--reason', 'done'], env)
  t.equal(rev.code, 0)
  t.match((await cli(['grant', 'list'], env)).stdout, 'no active grants')
  const upstream = await startUpstream(t)
  const notJitgate = await cli(['grant', 'list'], { ...env, JITGATE_CONTROL_URL: upstream.url })
  t.equal(notJitgate.code, 1)
  t.match(notJitgate.stderr, `unexpected response from ${upstream.url}: is this a jitgate control plane?`)
  const down = await cli(['grant', 'list'], { ...env, JITGATE_CONTROL_URL: 'http://127.0.0.1:9' })
  t.equal(down.code, 1)
  t.match(down.stderr, 'cannot reach the control plane at http://127.0.0.1:9')
})

t.test('a --ttl or --duration without a unit is refused before anything is sent (exit 2)', async (t) => {
  // A control plane that is not there: a command that got as far as calling it would exit 1.
  const env = { JITGATE_CONTROL_URL: 'http://127.0.0.1:9', JITGATE_ADMIN_TOKEN: ADMIN_TOKEN, JITGATE_SUBPROCESSOR: 'acme' }
  const cases: [string[], string][] = [
    [['grant', 'issue', '--subject', 'acme', '--resource', 'crm-api', '--scope', 'GET /crm/**', '--ttl', '60'], '--ttl: "60" has no unit'],
    [['request', 'create', '--resource', 'crm-api', '--scope', 'GET /crm/**', '--duration', '60', '--reason', 'SUP-1'], '--duration: "60" has no unit'],
    [['grant', 'extend', 'g_0123456789abcdef', '--duration', '60', '--reason', 'SUP-1'], '--duration: "60" has no unit'],
    [['policy', 'explain', '--request', '--subject', 'acme', '--resource', 'crm-api', '--scope', 'GET /crm/customers/**', '--duration', '60', '--dir', 'policies'], '--duration: "60" has no unit'],
  ]
  for (const [args, message] of cases) {
    const r = await cli(args, env)
    t.equal(r.code, 2, args.slice(0, 2).join(' '))
    t.match(r.stderr, `${message}: give one, e.g. 60s, 15m or 1h (a bare number is ambiguous)`)
    t.match(r.stderr, 'Usage: jitgate')
  }
  const help = await cli(['grant', 'issue', '--help'])
  t.match(help.stdout, /--ttl DURATION\s+with a unit: 15m, 2h, 1h30m/)
})

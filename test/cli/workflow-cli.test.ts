/** The workflow's CLI commands against a real gateway: the vendor's key file, TOTP and ID tokens. */
import t from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { decodeJwt } from 'jose'
import { main } from '../../src/cli/main.js'
import { tempDir } from '../helpers/tmp.js'
import { startTestGateway, call, ADMIN_TOKEN } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { makeWorld, principalsYaml } from '../helpers/workflow.js'

async function cli(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const code = await main(args, { out: (s) => void (stdout += s), err: (s) => void (stderr += s), env })
  return { code, stdout, stderr }
}

t.test('request, approve in two stages, token, call through, extend, cancel: all from the CLI', async (t) => {
  const w = await makeWorld(t)
  const upstream = await startUpstream(t)
  const policy = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 8h
${principalsYaml(w)}`
  const g = await startTestGateway(t, { policy, upstream: upstream.url, env: w.env, config: w.config })
  const keyFile = join(tempDir(t, 'cli-wf'), 'acme.jwk.json')
  writeFileSync(keyFile, JSON.stringify(w.acme.privateJwk), { mode: 0o600 })
  const base = { PATH: process.env.PATH, JITGATE_CONTROL_URL: g.controlUrl }
  const vendor = { ...base, JITGATE_VENDOR_KEY_FILE: keyFile, JITGATE_SUBPROCESSOR: 'acme' }
  const alice = { ...base, JITGATE_ADMIN_TOKEN: ADMIN_TOKEN, JITGATE_APPROVER: 'alice' }
  const carol = { ...base, JITGATE_ID_TOKEN: await w.idToken('00u-carol') }

  const created = await cli(['request', 'create', '--resource', 'crm-api', '--scope', 'GET /crm/customers/*', '--duration', '1h', '--reason', 'SUP-7'], vendor)
  t.equal(created.code, 0, created.stderr)
  const id = created.stdout.trim()
  t.match(id, /^r_/)
  t.match(created.stderr, `request ${id}: pending`)

  const pending = await cli(['approvals', 'list'], alice)
  t.match(pending.stdout, new RegExp(`${id}  pending  acme → crm-api for 60 min`))
  t.match(pending.stdout, 'stage 1 crm-owners: 0/1; stage 2 security: 0/1')

  const noCode = await cli(['approvals', 'approve', id], alice)
  t.equal(noCode.code, 2)
  t.match(noCode.stderr, '--totp CODE is required')
  const one = await cli(['approvals', 'approve', id, '--totp', w.alice.code(), '--comment', 'ok'], alice)
  t.equal(one.code, 0, one.stderr)
  t.match(one.stdout, 'stage 1 crm-owners: 1/1 (alice)')
  const two = await cli(['approvals', 'approve', id], carol)
  t.equal(two.code, 0, two.stderr)
  t.match(two.stdout, `${id}  approved`)

  const status = await cli(['request', 'status', id, '--json'], vendor)
  t.equal(status.code, 0)
  t.notOk('token' in JSON.parse(status.stdout), 'status never prints the token')
  const token = await cli(['request', 'token', id], vendor)
  t.equal(token.code, 0, token.stderr)
  t.equal((await call(`${g.dataUrl}/crm/customers/9`, { token: token.stdout.trim() })).status, 200)

  const grantId = decodeJwt(token.stdout.trim()).jti as string
  const ext = await cli(['grant', 'extend', grantId, '--duration', '30m', '--reason', 'export still running'], vendor)
  t.equal(ext.code, 0, ext.stderr)
  t.match(ext.stderr, /extension r_\S+: pending/)
  const denied = await cli(['approvals', 'deny', ext.stdout.trim(), '--comment', 'finish tomorrow'], carol)
  t.equal(denied.code, 0, denied.stderr)
  t.match(denied.stdout, 'denied (extension)')
  t.match(denied.stdout, '  denied by: 00u-carol', 'who denied it')

  const other = (await cli(['request', 'create', '--resource', 'crm-api', '--scope', 'GET /crm/customers/*', '--duration', '1h', '--reason', 'x'], vendor)).stdout.trim()
  t.match((await cli(['request', 'cancel', other], vendor)).stdout, `${other}  cancelled`)
  const again = await cli(['request', 'cancel', other], vendor)
  t.equal(again.code, 1)
  t.match(again.stderr, 'jitgate: wrong_state: The request is not in a state that allows this.\n  the request is cancelled')
  const noToken = await cli(['request', 'token', other], vendor)
  t.equal(noToken.code, 1)
  t.match(noToken.stderr, 'no token: the request is cancelled')
  const noKey = await cli(['request', 'status', other], base)
  t.equal(noKey.code, 2)
  t.match(noKey.stderr, '--key FILE (or $JITGATE_VENDOR_KEY_FILE) is required')

  // Approvers revoke from the CLI too (here grants an operator issued to acme, which acme's
  // approvers may end): a local approver with its code, or an ID token.
  const issue = async (): Promise<string> => (await g.issue({ resource: 'crm-api', scopes: ['GET /crm/customers/*'], ttl: '10m' })).id
  const g1 = await issue()
  // The exact input of a finding: `grant list --approver` was an unknown option, so an approver
  // could not see from the CLI which grants it may revoke.
  const listed = await cli(['grant', 'list', '--json', '--approver', 'alice'], { ...alice, JITGATE_APPROVER: undefined })
  t.equal(listed.code, 0, listed.stderr)
  t.ok((JSON.parse(listed.stdout) as { grants: { id: string }[] }).grants.some((x) => x.id === g1), 'a local approver lists the grants it may revoke, no code needed')
  const byIdToken = await cli(['grant', 'list'], carol)
  t.equal(byIdToken.code, 0, byIdToken.stderr)
  t.match(byIdToken.stdout, g1)
  const noTotp = await cli(['grant', 'revoke', g1, '--reason', 'done'], alice)
  t.equal(noTotp.code, 2, 'a local approver needs its code')
  t.match(noTotp.stderr, '--totp CODE is required')
  // Alice's current code may have been used for her approval above: the next step's is in the window.
  const byAlice = await cli(['grant', 'revoke', g1, '--reason', 'done', '--totp', w.alice.code(Date.now() + 30_000)], alice)
  t.equal(byAlice.code, 0, byAlice.stderr)
  t.match(g.audit.findLast((e) => e.event === 'grant.revoked'), { grant_id: g1, actor: 'alice', reason: 'done' })
  const g2 = await issue()
  const byCarol = await cli(['grant', 'revoke', g2, '--reason', 'offboarded'], carol)
  t.equal(byCarol.code, 0, byCarol.stderr)
  t.match(g.audit.findLast((e) => e.event === 'grant.revoked'), { grant_id: g2, actor: '00u-carol', reason: 'offboarded' })
})

t.test('request status of an auto-approved request says so, not "0/1" per stage', async (t) => {
  const w = await makeWorld(t)
  const policy = `
resources:
  - id: crm-api
    upstream: http://127.0.0.1:1
    match: { path_prefix: /crm }
    max_ttl: 8h
${principalsYaml(w, { entitlement: '        auto_approve: { max_duration: 30m, scopes: ["GET /crm/customers/**"] }' })}`
  const g = await startTestGateway(t, { policy, env: w.env, config: w.config })
  const keyFile = join(tempDir(t, 'cli-wf-auto'), 'acme.jwk.json')
  writeFileSync(keyFile, JSON.stringify(w.acme.privateJwk), { mode: 0o600 })
  const vendor = { PATH: process.env.PATH, JITGATE_CONTROL_URL: g.controlUrl, JITGATE_VENDOR_KEY_FILE: keyFile, JITGATE_SUBPROCESSOR: 'acme' }
  const created = await cli(['request', 'create', '--resource', 'crm-api', '--scope', 'GET /crm/customers/*', '--duration', '10m', '--reason', 'SUP-8'], vendor)
  t.equal(created.code, 0, created.stderr)
  const status = await cli(['request', 'status', created.stdout.trim()], vendor)
  t.equal(status.code, 0, status.stderr)
  t.match(status.stdout, 'approval: auto-approved by its entitlement')
  t.notMatch(status.stdout, '0/1')
})

t.test('a break-glass request shows its review, open then closed, in the status text', async (t) => {
  // The exact input of a finding: the text output never said the review had been closed.
  const w = await makeWorld(t)
  const policy = `
resources:
  - id: crm-api
    upstream: http://127.0.0.1:1
    match: { path_prefix: /crm }
    max_ttl: 8h
${principalsYaml(w, { entitlement: '        break_glass: { max_duration: 30m }' })}`
  const g = await startTestGateway(t, { policy, env: w.env, config: w.config })
  const keyFile = join(tempDir(t, 'cli-wf-bg'), 'acme.jwk.json')
  writeFileSync(keyFile, JSON.stringify(w.acme.privateJwk), { mode: 0o600 })
  const base = { PATH: process.env.PATH, JITGATE_CONTROL_URL: g.controlUrl }
  const vendor = { ...base, JITGATE_VENDOR_KEY_FILE: keyFile, JITGATE_SUBPROCESSOR: 'acme' }
  const carol = { ...base, JITGATE_ID_TOKEN: await w.idToken('00u-carol') }
  const created = await cli(['request', 'create', '--resource', 'crm-api', '--scope', 'GET /crm/customers/*', '--duration', '10m', '--reason', 'INC-9 outage', '--break-glass'], vendor)
  t.equal(created.code, 0, created.stderr)
  const id = created.stdout.trim()
  t.match((await cli(['request', 'status', id], vendor)).stdout, 'review: open')
  const reviewed = await cli(['approvals', 'review', id, '--comment', 'justified'], carol)
  t.equal(reviewed.code, 0, reviewed.stderr)
  t.match(reviewed.stdout, /review: closed by 00u-carol at \S+: justified/)
})

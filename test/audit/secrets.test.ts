/**
 * A full run of a real gateway process with real secrets (signing key, admin token, injected
 * upstream credentials, issued tokens, client passwords and cookies), then a scan of everything it
 * wrote (stdout, stderr, every file in its folders but the key file) for each of them.
 */
import t from 'tap'
import { mkdtempSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { request } from 'undici'
import { generateSigningKey } from '../../src/authn/keys.js'
import { startGatewayProcess } from '../helpers/process.js'
import { startUpstream } from '../helpers/upstream.js'
import { rawCall } from '../helpers/gateway.js'

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n)
    return statSync(p).isDirectory() ? filesUnder(p) : [p]
  })
}

t.test('no secret used in a full run appears in anything the gateway wrote', async (t) => {
  const upstream = await startUpstream(t)
  const root = mkdtempSync(join(tmpdir(), 'jitgate-secrets-'))
  const out = join(root, 'out')
  mkdirSync(join(root, 'policies'))
  mkdirSync(out)
  const { privateJwk } = await generateSigningKey()
  const keyFile = join(root, 'key.jwk.json')
  writeFileSync(keyFile, JSON.stringify(privateJwk), { mode: 0o600 })
  writeFileSync(
    join(root, 'policies', 'p.yaml'),
    `resources:
  - id: crm-api
    upstream: ${upstream.url}
    match: { path_prefix: /crm }
    max_ttl: 1h
    credentials:
      - { header: Authorization, env: SECRET_CRM_TOKEN, prefix: "Bearer " }
      - { header: X-Api-Key, env: SECRET_CRM_KEY }
`,
  )
  const secrets: Record<string, string> = {
    'signing key d': privateJwk.d as string,
    'admin token': 'admin-secret-5d41402abc4b2a76b9719d911017c592',
    'injected token': 'crm-upstream-secret-7c6a180b36896a0a8c02787eeafb0e4c',
    'injected api key': 'crm-api-key-6512bd43d9caa6e02c990b0a82652dca',
    'client password': 'hunter2-password-c20ad4d76fe97759aa27a0c99bff6710',
    'client cookie': 'session-cookie-c51ce410c124a10e0db5e4b97fc2af39',
  }
  const gw = await startGatewayProcess(t, {
    JITGATE_SIGNING_KEY_FILE: keyFile,
    JITGATE_ADMIN_TOKEN: secrets['admin token'],
    JITGATE_POLICY_DIR: join(root, 'policies'),
    JITGATE_DATA_DIR: join(out, 'data'),
    JITGATE_AUDIT_OUTPUT: join(out, 'audit.log'),
    SECRET_CRM_TOKEN: secrets['injected token'],
    SECRET_CRM_KEY: secrets['injected api key'],
  })
  const admin = { authorization: `Bearer ${secrets['admin token']}`, 'content-type': 'application/json' }
  const issue = async () => {
    const res = await request(`${gw.controlUrl}/v1/grants`, {
      method: 'POST',
      headers: admin,
      body: JSON.stringify({ subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m', reason: 'scan' }),
    })
    return (await res.body.json()) as { id: string; token: string }
  }
  const grant = await issue()
  const revoked = await issue()
  secrets['token'] = grant.token
  secrets['token signature'] = grant.token.split('.')[2] as string
  secrets['revoked token'] = revoked.token

  t.equal((await rawCall(gw.dataUrl, '/crm/a', { token: grant.token })).status, 200)
  t.equal(upstream.received.at(-1)?.headers['x-api-key'], secrets['injected api key'], 'the credential was really injected')
  await rawCall(gw.dataUrl, `/crm/a?access_token=${grant.token}&password=${secrets['client password']}`)
  await rawCall(gw.dataUrl, `/crm/%2f?access_token=${grant.token}`)
  await rawCall(gw.dataUrl, '/crm/a', { headers: { cookie: `session=${secrets['client cookie']}`, authorization: `Basic ${Buffer.from(`acme:${secrets['client password']}`).toString('base64')}` } })
  await rawCall(gw.dataUrl, '/crm/a', { headers: { authorization: `Bearer ${grant.token}x` } })
  await rawCall(gw.dataUrl, '/nowhere', { token: grant.token })
  await rawCall(gw.dataUrl, '/crm/a', { headers: { authorization: `Bearer ${grant.token}`, 'x-api-key': secrets['client password'] as string } })
  await rawCall(gw.controlUrl, '/v1/grants', { headers: { authorization: `Bearer ${secrets['admin token']}x` } })
  await rawCall(gw.controlUrl, '/v1/grants', { headers: { authorization: `Bearer ${grant.token}` } })
  const del = await request(`${gw.controlUrl}/v1/grants/${revoked.id}`, { method: 'DELETE', headers: admin, body: '{"reason":"scan done"}' })
  await del.body.dump()
  t.equal(del.statusCode, 204)
  await rawCall(gw.dataUrl, '/crm/a', { token: revoked.token })
  t.equal(await gw.stop(), 0)

  const outputs: [string, string][] = [
    ['stdout', gw.stdout()],
    ['stderr', gw.stderr()],
    ...filesUnder(out).map((f): [string, string] => [f, readFileSync(f, 'latin1')]),
  ]
  const audit = readFileSync(join(out, 'audit.log'), 'utf8')
  t.ok(audit.includes('"event":"access.allowed"') && audit.includes('"event":"grant.revoked"') && audit.includes('"event":"admin.denied"'), 'the run wrote a full trail')
  for (const [where, text] of outputs) {
    for (const [what, secret] of Object.entries(secrets)) t.notOk(text.includes(secret), `${what} not in ${where}`)
  }
})

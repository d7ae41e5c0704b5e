/**
 * `npm run demo`: the whole idea in one minute. Starts the example upstream and a real gateway
 * process (embedded memory store, a throwaway dev key, a demo policy with an injected upstream
 * credential). The sub-processor asks for access with a signed assertion; two approvers approve
 * in two stages, each proving MFA with a TOTP code (an approval without one is refused); the
 * sub-processor reads its token and calls through; an out-of-scope call is denied; the operator
 * revokes and the next call is refused; then the audit lines the SIEM would receive.
 */
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseEnv } from 'node:util'
import type { AddressInfo } from 'node:net'
import { SignJWT, exportJWK, generateKeyPair } from 'jose'
import { decodeBase32 } from '../src/policy/compile-principals.js'
import { totpCode } from '../src/workflow/auth/totp.js'
import { createExampleUpstream } from './upstream.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const ADMIN = 'demo-admin-token-not-for-production'
/** The example policy's public, development-only TOTP secrets (config/dev-secrets/example.env). */
const DEV_SECRETS = parseEnv(readFileSync(join(ROOT, 'config', 'dev-secrets', 'example.env'), 'utf8'))
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s)
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s)
const step = (n: number, s: string) => console.log(`\n${bold(`${n}. ${s}`)}`)

async function main(): Promise<void> {
  const upstream = createExampleUpstream()
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`

  // The vendor's key pair: it registers the public key with us, and signs its assertions.
  const vendor = await generateKeyPair('EdDSA')
  const vendorJwk = JSON.stringify(await exportJWK(vendor.publicKey))
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-demo-'))
  mkdirSync(join(dir, 'policies'))
  writeFileSync(
    join(dir, 'policies', 'demo.yaml'),
    `resources:
  - id: crm-api
    description: Customer CRM REST API (the example upstream)
    upstream: ${upstreamUrl}
    match: { path_prefix: /crm }
    max_ttl: 1h
    credentials:
      - header: Authorization
        env: DEMO_CRM_TOKEN
        prefix: "Bearer "
subprocessors:
  - id: acme
    name: ACME Support Ltd
    contract_ends: "2099-12-31"
    keys: [{ jwk: ${vendorJwk} }]
    entitlements:
      - { resource: crm-api, scopes: ["GET /crm/customers/**"], max_duration: 1h, approval: two-stage }
approver_groups:
  - { id: crm-owners, members: [alice] }
  - { id: security, members: [carol] }
approval_policies:
  - id: two-stage
    stages: [{ group: crm-owners, approvals: 1 }, { group: security, approvals: 1 }]
    request_ttl: 1h
local_approvers:
  - { id: alice, totp_secret: { env: EXAMPLE_ALICE_TOTP_SECRET } }
  - { id: carol, totp_secret: { env: EXAMPLE_CAROL_TOTP_SECRET } }
`,
  )
  const gw = spawn(process.execPath, [join(ROOT, 'bin', 'jitgate.js'), 'serve'], {
    env: {
      ...process.env,
      JITGATE_DATA_LISTEN: '127.0.0.1:0',
      JITGATE_CONTROL_LISTEN: '127.0.0.1:0',
      JITGATE_POLICY_DIR: join(dir, 'policies'),
      JITGATE_DATA_DIR: join(dir, 'data'),
      JITGATE_ADMIN_TOKEN: ADMIN,
      JITGATE_LOG_LEVEL: 'info',
      DEMO_CRM_TOKEN: 'crm-secret-the-vendor-never-sees',
      ...DEV_SECRETS,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let audit = ''
  let log = ''
  gw.stdout.on('data', (c: Buffer) => (audit += c.toString()))
  gw.stderr.on('data', (c: Buffer) => (log += c.toString()))
  const cleanup = () => {
    gw.kill('SIGTERM')
    upstream.close()
    rmSync(dir, { recursive: true, force: true })
  }
  try {
    const { data, control } = await waitForListening(gw, () => log)
    console.log(bold('jitgate demo'))
    console.log(dim(`gateway ${data}   control plane ${control}   example upstream ${upstreamUrl}`))

    /** A fresh single-use assertion: acme's signed "this is acme", valid one minute. */
    const assertion = () =>
      new SignJWT({ jti: randomUUID() })
        .setProtectedHeader({ alg: 'EdDSA' })
        .setIssuer('acme')
        .setSubject('acme')
        .setAudience('jitgate')
        .setIssuedAt()
        .setExpirationTime('1m')
        .sign(vendor.privateKey)
    const asVendor = async () => ({ authorization: `Bearer ${await assertion()}`, 'content-type': 'application/json' })
    /** A local approver: the operator credential, its id, and the code its authenticator shows now. */
    const asApprover = (id: 'alice' | 'carol', mfa = true) => ({
      authorization: `Bearer ${ADMIN}`,
      'x-jitgate-approver': id,
      ...(mfa ? { 'x-jitgate-totp': totpCode(decodeBase32(DEV_SECRETS[`EXAMPLE_${id.toUpperCase()}_TOTP_SECRET`] as string) as Uint8Array, Date.now()) } : {}),
    })

    step(1, 'Sub-processor "acme" asks for 10 minutes of GET /crm/customers/** (signed assertion)')
    console.log(dim(`   POST ${control}/v1/requests`))
    const request = (await json(`${control}/v1/requests`, {
      method: 'POST',
      headers: await asVendor(),
      body: JSON.stringify({ resource: 'crm-api', scopes: ['GET /crm/customers/**'], duration: '10m', reason: 'ticket SUP-1234: export broken' }),
    })) as { id: string; status: string }
    console.log(`   request ${request.id}: ${request.status}, two stages: crm-owners, then security`)

    step(2, 'alice (crm-owners) approves, proving MFA with her TOTP code')
    const one = (await json(`${control}/v1/requests/${request.id}/approve`, { method: 'POST', headers: asApprover('alice') })) as { status: string }
    console.log(`   stage 1 done; the request is still ${one.status}`)

    step(3, 'carol (security) tries to approve without a second factor: refused')
    const noMfa = await fetch(`${control}/v1/requests/${request.id}/approve`, { method: 'POST', headers: asApprover('carol', false) })
    console.log(`   → ${noMfa.status} ${await noMfa.text()}`)

    step(4, 'carol approves with her TOTP code: the grant is issued')
    const two = (await json(`${control}/v1/requests/${request.id}/approve`, { method: 'POST', headers: asApprover('carol') })) as {
      status: string
      grant: { id: string; expires_at: string }
    }
    console.log(`   ${two.status}: grant ${two.grant.id}, expires ${two.grant.expires_at}`)

    step(5, 'acme reads its token (only the requester ever sees it) and calls the CRM through the gateway')
    const mine = (await json(`${control}/v1/requests/${request.id}`, { headers: await asVendor() })) as { token: string }
    console.log(`   token ${mine.token.slice(0, 24)}… (a signed JWT; useless without the live grant)`)
    const ok = await fetch(`${data}/crm/customers/42`, { headers: { authorization: `Bearer ${mine.token}` } })
    console.log(`   GET /crm/customers/42 → ${ok.status}; the upstream saw:`)
    console.log(indent(JSON.stringify(((await ok.json()) as { received: unknown }).received, null, 2), 5))
    console.log(dim('   (the CRM credential was injected by the gateway; the JIT token never reached the upstream)'))
    const denied = await fetch(`${data}/crm/admin/users`, { method: 'DELETE', headers: { authorization: `Bearer ${mine.token}` } })
    console.log(`   DELETE /crm/admin/users → ${denied.status} ${await denied.text()}`)

    step(6, 'The operator revokes the grant; the very next call with the same token is refused')
    const rev = await fetch(`${control}/v1/requests/${request.id}/revoke`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'work finished' }),
    })
    console.log(`   POST /v1/requests/${request.id}/revoke → ${rev.status}`)
    const after = await fetch(`${data}/crm/customers/42`, { headers: { authorization: `Bearer ${mine.token}` } })
    console.log(`   GET /crm/customers/42 → ${after.status} ${await after.text()}`)

    step(7, 'The audit trail (JSON lines on stdout, for the SIEM)')
    await new Promise((r) => setTimeout(r, 100))
    for (const line of audit.split('\n').filter(Boolean)) {
      const e = JSON.parse(line) as Record<string, unknown>
      if (String(e.event).startsWith('gateway.') || e.event === 'policy.loaded') continue
      console.log(`   ${line}`)
    }
    console.log(`\n${bold('Next:')} npm start, then follow "Try it with curl" in README.md.`)
  } finally {
    cleanup()
  }
}

function waitForListening(proc: ReturnType<typeof spawn>, stderr: () => string): Promise<{ data: string; control: string }> {
  return new Promise((resolve, reject) => {
    const timer = setInterval(() => {
      const line = stderr()
        .split('\n')
        .find((l) => l.includes('"jitgate listening"'))
      if (line) {
        clearInterval(timer)
        resolve(JSON.parse(line) as { data: string; control: string })
      }
    }, 20)
    proc.on('exit', (code) => {
      clearInterval(timer)
      reject(new Error(`the gateway exited (${code}):\n${stderr()}`))
    })
  })
}

async function json(url: string, init: RequestInit): Promise<unknown> {
  const res = await fetch(url, init)
  const body = await res.json()
  if (!res.ok) throw new Error(`${res.status} ${JSON.stringify(body)}`)
  return body
}

function indent(s: string, n: number): string {
  return s
    .split('\n')
    .map((l) => ' '.repeat(n) + l)
    .join('\n')
}

main().catch((err: unknown) => {
  console.error(`demo failed: ${(err as Error).message}`)
  process.exitCode = 1
})

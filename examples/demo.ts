/**
 * `npm run demo`: the whole idea in one minute. Starts the example upstream and a real gateway
 * process (embedded memory store, a throwaway dev key, a demo policy with an injected upstream
 * credential), issues a grant, calls through it, shows an out-of-scope call denied, revokes,
 * shows the denial, and prints the audit lines the SIEM would receive.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AddressInfo } from 'node:net'
import { createExampleUpstream } from './upstream.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const ADMIN = 'demo-admin-token-not-for-production'
const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s)
const dim = (s: string) => (process.stdout.isTTY ? `\x1b[2m${s}\x1b[0m` : s)
const step = (n: number, s: string) => console.log(`\n${bold(`${n}. ${s}`)}`)

async function main(): Promise<void> {
  const upstream = createExampleUpstream()
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r))
  const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`

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

    step(1, 'An operator issues a 10-minute grant to sub-processor "acme" for GET /crm/customers/**')
    console.log(dim(`   POST ${control}/v1/grants`))
    const grant = (await json(`${control}/v1/grants`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ subject: 'acme', resource: 'crm-api', scopes: ['GET /crm/customers/**'], ttl: '10m', reason: 'ticket SUP-1234' }),
    })) as { id: string; token: string; expires_at: string }
    console.log(`   grant ${grant.id}, expires ${grant.expires_at}`)
    console.log(`   token ${grant.token.slice(0, 24)}… (a signed JWT; useless without the live grant)`)

    step(2, 'acme calls the CRM through the gateway with its token')
    const ok = await fetch(`${data}/crm/customers/42`, { headers: { authorization: `Bearer ${grant.token}` } })
    console.log(`   GET /crm/customers/42 → ${ok.status}; the upstream saw:`)
    console.log(indent(JSON.stringify((await ok.json() as { received: unknown }).received, null, 2), 5))
    console.log(dim('   (the CRM credential was injected by the gateway; the JIT token never reached the upstream)'))

    step(3, 'An out-of-scope call is denied')
    const denied = await fetch(`${data}/crm/admin/users`, { method: 'DELETE', headers: { authorization: `Bearer ${grant.token}` } })
    console.log(`   DELETE /crm/admin/users → ${denied.status} ${await denied.text()}`)

    step(4, 'The operator revokes the grant')
    const rev = await fetch(`${control}/v1/grants/${grant.id}`, {
      method: 'DELETE',
      headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'work finished' }),
    })
    console.log(`   DELETE /v1/grants/${grant.id} → ${rev.status}`)

    step(5, 'The very next call with the same token is refused')
    const after = await fetch(`${data}/crm/customers/42`, { headers: { authorization: `Bearer ${grant.token}` } })
    console.log(`   GET /crm/customers/42 → ${after.status} ${await after.text()}`)

    step(6, 'The audit trail (JSON lines on stdout, for the SIEM)')
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

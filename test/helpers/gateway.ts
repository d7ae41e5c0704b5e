/**
 * Starts a real gateway in-process for a test: temp policy folder, listeners on 127.0.0.1:0,
 * the audit trail captured as parsed JSON lines from its real pino output, the operational log
 * silenced. Grants are issued through the real control-plane API.
 */
import { writeFileSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { tempDir } from './tmp.js'
import { PassThrough } from 'node:stream'
import { pino, type Logger } from 'pino'
import { request } from 'undici'
import { request as httpRequest } from 'node:http'
import { loadConfig } from '../../src/config/config.js'
import { startGateway, type RunningGateway } from '../../src/gateway.js'

export interface AuditRecord {
  readonly event: string
  readonly [field: string]: unknown
}

export interface TestGateway {
  readonly gw: RunningGateway
  readonly dataUrl: string
  readonly controlUrl: string
  readonly dataDir: string
  /** The policy folder (`test.yaml` holds the policy given): tests rewrite it to reload. */
  readonly policyDir: string
  /** Every audit line written so far, parsed. */
  readonly audit: AuditRecord[]
  /** Raw audit text (for secret scans). */
  auditText(): string
  /** The first audit event (so far or to come) matching `pred`; rejects after `withinMs`. */
  waitForEvent(pred: (e: AuditRecord) => boolean, withinMs?: number): Promise<AuditRecord>
  issue(body: { subject?: string; resource: string; scopes: string[]; ttl: string; reason?: string }): Promise<IssuedGrant>
  revoke(id: string, reason?: string): Promise<number>
  stop(): Promise<void>
}

export interface IssuedGrant {
  readonly id: string
  readonly token: string
  readonly expires_at: string
  readonly [k: string]: unknown
}

export interface TestGatewayOptions {
  /** Policy YAML; `UPSTREAM` is replaced by the upstream URL. */
  readonly policy: string
  readonly upstream?: string
  /** Extra config YAML. */
  readonly config?: string
  readonly env?: NodeJS.ProcessEnv
  /** Share the signing key with another gateway (replicas). */
  readonly dataDir?: string
  readonly adminToken?: string
  /** The operational log; silent by default. */
  readonly log?: Logger
}

export const ADMIN_TOKEN = 'test-admin-token-0123456789'

export async function startTestGateway(t: { teardown(fn: () => unknown): void }, opts: TestGatewayOptions): Promise<TestGateway> {
  const root = tempDir(t, 'gw')
  const policyDir = join(root, 'policies')
  mkdirSync(policyDir)
  writeFileSync(join(policyDir, 'test.yaml'), opts.policy.replaceAll('UPSTREAM', opts.upstream ?? 'http://127.0.0.1:9'))
  const dataDir = opts.dataDir ?? join(root, 'data')
  const adminToken = opts.adminToken ?? ADMIN_TOKEN
  const env = {
    JITGATE_DATA_LISTEN: '127.0.0.1:0',
    JITGATE_CONTROL_LISTEN: '127.0.0.1:0',
    JITGATE_POLICY_DIR: policyDir,
    JITGATE_DATA_DIR: dataDir,
    JITGATE_ADMIN_TOKEN: adminToken,
    ...opts.env,
  }
  const config = loadConfig({ text: opts.config ?? '{}', env, baseDir: root })
  const stream = new PassThrough()
  let text = ''
  const audit: AuditRecord[] = []
  stream.on('data', (chunk: Buffer) => {
    text += chunk.toString()
    let nl: number
    while ((nl = text.indexOf('\n')) !== -1) {
      const line = text.slice(0, nl)
      text = text.slice(nl + 1)
      all += `${line}\n`
      audit.push(JSON.parse(line) as AuditRecord)
    }
  })
  let all = ''
  const gw = await startGateway({ config, auditStream: stream, log: opts.log ?? pino({ level: 'silent' }), env })
  let stopped = false
  const stop = async () => {
    if (stopped) return
    stopped = true
    await gw.stop()
  }
  t.teardown(stop)
  const auth = { authorization: `Bearer ${adminToken}` }
  return {
    gw,
    dataUrl: gw.dataUrl,
    controlUrl: gw.controlUrl,
    dataDir,
    policyDir,
    audit,
    auditText: () => all,
    async waitForEvent(pred, withinMs = 10_000) {
      const deadline = Date.now() + withinMs
      for (;;) {
        const found = audit.find(pred)
        if (found !== undefined) return found
        if (Date.now() > deadline) throw new Error(`no matching audit event within ${withinMs} ms`)
        await sleep(20)
      }
    },
    async issue(body) {
      const res = await request(`${gw.controlUrl}/v1/grants`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ subject: 'acme', ...body }),
      })
      const json = (await res.body.json()) as IssuedGrant
      if (res.statusCode !== 201) throw new Error(`issue failed: ${res.statusCode} ${JSON.stringify(json)}`)
      return json
    },
    async revoke(id, reason = 'test') {
      const res = await request(`${gw.controlUrl}/v1/grants/${id}`, {
        method: 'DELETE',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ reason }),
      })
      await res.body.dump()
      return res.statusCode
    },
    stop,
  }
}

/** A GET/any request through the gateway; returns status, headers and parsed JSON (or text). */
export async function call(
  url: string,
  opts: { method?: string; token?: string; headers?: Record<string, string | string[]>; body?: string } = {},
): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; json: any; text: string }> {
  const headers: Record<string, string | string[]> = { ...opts.headers }
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
  const res = await request(url, { method: (opts.method ?? 'GET') as 'GET', headers, ...(opts.body !== undefined ? { body: opts.body } : {}) })
  const text = await res.body.text()
  let json: any
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.statusCode, headers: res.headers, json, text }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

/**
 * A request with the path sent exactly as given (undici and fetch resolve dot segments through
 * the URL parser, which would hide the very tricks a test wants to send).
 */
export function rawCall(
  base: string,
  path: string,
  opts: { method?: string; token?: string; headers?: Record<string, string> } = {},
): Promise<{ status: number; json: any; text: string; headers: import('node:http').IncomingHttpHeaders }> {
  const u = new URL(base)
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        host: u.hostname,
        port: u.port,
        path,
        method: opts.method ?? 'GET',
        headers: { ...opts.headers, ...(opts.token !== undefined ? { authorization: `Bearer ${opts.token}` } : {}) },
        agent: false,
      },
      (res) => {
        let text = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => (text += c))
        res.on('end', () => {
          let json: any
          try {
            json = JSON.parse(text)
          } catch {
            json = undefined
          }
          resolve({ status: res.statusCode ?? 0, json, text, headers: res.headers })
        })
      },
    )
    req.on('error', reject)
    req.end()
  })
}

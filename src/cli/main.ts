/**
 * The `jitgate` command line: `serve`, `grant issue|list|revoke`, `keys generate`, `policy check`,
 * `audit verify|export`, and the workflow's `request …`, `approvals …` and `grant extend` (workflow.ts).
 * Errors are one clear message and a non-zero exit code, never a stack trace.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { writeFileSync } from 'node:fs'
import { SourceError, formatIssues } from '../config/yaml-source.js'
import { loadConfig, DEFAULT_CONFIG_FILE } from '../config/config.js'
import { loadPolicy } from '../policy/policy.js'
import { generateSigningKey, KeyError } from '../authn/keys.js'
import { formatDuration, isBareNumber, noUnitMessage } from '../util/duration.js'
import { workflowCommands } from './workflow.js'
import { policyCommands } from './policy.js'

const VERSION = '0.1.0'

/** Where the CLI reads its environment and writes its output (tests pass their own). */
export interface CliIO {
  out(text: string): void
  err(text: string): void
  readonly env: NodeJS.ProcessEnv
}

const processIO: CliIO = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
  env: process.env,
}

class UsageError extends Error {}

interface Command {
  readonly summary: string
  readonly usage: string
  readonly options: NonNullable<ParseArgsConfig['options']>
  run(values: Record<string, string | boolean | string[] | undefined>, positionals: string[], io: CliIO): Promise<number>
}

const controlOptions = {
  url: { type: 'string' },
  json: { type: 'boolean' },
} as const

const COMMANDS: Record<string, Command> = {
  serve: {
    summary: 'Run the gateway (data plane and control plane).',
    usage: `jitgate serve [--config FILE]

  --config FILE   configuration file (default: ${DEFAULT_CONFIG_FILE})

Environment (see README.md, "Configuration"):
  REDIS_URL                  use Redis instead of the embedded memory store
  JITGATE_ADMIN_TOKEN        operator API token
  JITGATE_SIGNING_KEY_FILE   token signing key file (or JITGATE_SIGNING_KEY: the key itself)
  JITGATE_DATA_LISTEN, JITGATE_CONTROL_LISTEN   host:port of each listener
  JITGATE_POLICY_DIR, JITGATE_DATA_DIR, JITGATE_AUDIT_OUTPUT, JITGATE_LOG_LEVEL,
  JITGATE_GATEWAY_ID, JITGATE_KEY_PREFIX

Signals: SIGTERM/SIGINT drain and stop; SIGHUP reloads the policy.`,
    options: { config: { type: 'string', short: 'c' } },
    async run(values, _positionals, io) {
      const config = loadConfig({ env: io.env, ...(values.config ? { file: values.config as string } : {}) })
      // Loaded on demand: the other commands start faster without the data-plane stack.
      const { startGateway, createOpsLogger } = await import('../gateway.js')
      const log = createOpsLogger(config)
      const gw = await startGateway({ config, env: io.env, log })
      let signalled = false
      const onSignal = (sig: string) => {
        if (signalled) return
        signalled = true
        log.info({ signal: sig }, 'draining and stopping')
        gw.stop().then(
          () => process.exit(0),
          () => process.exit(1),
        )
      }
      process.on('SIGTERM', () => onSignal('SIGTERM'))
      process.on('SIGINT', () => onSignal('SIGINT'))
      // The reload reports its own outcome (log, metric, audit event).
      process.on('SIGHUP', () => void gw.reloadPolicy())
      return new Promise<number>(() => {})
    },
  },
  'grant issue': {
    summary: 'Issue a grant directly (operator) and print its token.',
    usage: `jitgate grant issue --subject ID --resource ID --scope "METHODS PATH" [--scope ...] --ttl DURATION [--reason TEXT]

  --subject ID      sub-processor id
  --resource ID     resource id from policy
  --scope PATTERN   e.g. "GET /crm/customers/**" (repeatable)
  --ttl DURATION    with a unit: 15m, 2h, 1h30m (at most the resource's max_ttl); a bare
                    number such as 60 is refused
  --reason TEXT     why (audited)
  --url URL         control plane (default $JITGATE_CONTROL_URL or http://127.0.0.1:8081)
  --json            print the whole grant as JSON instead of the token alone`,
    options: {
      ...controlOptions,
      subject: { type: 'string' },
      resource: { type: 'string' },
      scope: { type: 'string', multiple: true },
      ttl: { type: 'string' },
      reason: { type: 'string' },
    },
    async run(v, _positionals, io) {
      for (const k of ['subject', 'resource', 'scope', 'ttl']) if (v[k] === undefined) throw new UsageError(`--${k} is required`)
      if (isBareNumber(v.ttl)) throw new UsageError(noUnitMessage('--ttl', v.ttl))
      const body = { subject: v.subject, resource: v.resource, scopes: v.scope, ttl: v.ttl, ...(v.reason ? { reason: v.reason } : {}) }
      const res = expectShape<{ id: string; expires_at: string; token: string; warnings?: string[] }>(
        await api(io, v, 'POST', '/v1/grants', body),
        (r) => typeof r.token === 'string' && typeof r.id === 'string',
        controlBase(io, v),
      )
      if (v.json) print(io, res)
      else {
        const g = res
        io.err(`grant ${g.id} expires ${g.expires_at}\n`)
        for (const w of g.warnings ?? []) io.err(`warning: ${w}\n`)
        io.out(`${g.token}\n`)
      }
      return 0
    },
  },
  'grant list': {
    summary: 'List active grants (all of them, or as an approver the ones you may revoke).',
    usage: `jitgate grant list [--url URL] [--json] [--approver ID]

  As an operator: $JITGATE_ADMIN_TOKEN (or nothing, on a loopback control plane without one).
  As an approver: $JITGATE_ID_TOKEN holds your ID token, or as a local approver --approver ID
  (or $JITGATE_APPROVER); reading needs no TOTP code.`,
    options: { ...controlOptions, approver: { type: 'string' } },
    async run(v, _positionals, io) {
      const res = expectShape<{ grants: Record<string, unknown>[] }>(await api(io, v, 'GET', '/v1/grants', undefined, approverReadAuth(v, io)), (r) => Array.isArray(r.grants), controlBase(io, v))
      if (v.json) return print(io, res), 0
      if (res.grants.length === 0) io.out('no active grants\n')
      for (const g of res.grants) {
        const left = formatDuration(Math.max(0, Math.round((Date.parse(g.expires_at as string) - Date.now()) / 1000)) * 1000)
        io.out(`${g.id}  ${g.subject} → ${g.resource}  [${(g.scopes as string[]).join('; ')}]  ${left} left\n`)
      }
      return 0
    },
  },
  'grant revoke': {
    summary: 'Revoke a grant now (operator, or an approver of its entitlement).',
    usage: `jitgate grant revoke GRANT_ID --reason TEXT [--url URL] [--approver ID --totp CODE]

  As an operator: $JITGATE_ADMIN_TOKEN (or nothing, on a loopback control plane without one).
  As an approver: $JITGATE_ID_TOKEN holds your ID token, or as a local approver --approver ID
  (or $JITGATE_APPROVER) with --totp CODE, the code your authenticator shows now.`,
    options: { ...controlOptions, reason: { type: 'string' }, approver: { type: 'string' }, totp: { type: 'string' } },
    async run(v, pos, io) {
      const id = pos[0]
      if (!id) throw new UsageError('GRANT_ID is required')
      if (!v.reason) throw new UsageError('--reason is required')
      await api(io, v, 'DELETE', `/v1/grants/${encodeURIComponent(id)}`, { reason: v.reason }, approverRevokeAuth(v, io))
      io.out(`revoked ${id}\n`)
      return 0
    },
  },
  'keys generate': {
    summary: 'Generate an Ed25519 signing key (private JWK, mode 0600) and print its public JWK.',
    usage: `jitgate keys generate --out FILE`,
    options: { out: { type: 'string', short: 'o' } },
    async run(v, _positionals, io) {
      if (!v.out) throw new UsageError('--out FILE is required')
      const { privateJwk, publicJwk } = await generateSigningKey()
      writeFileSync(v.out as string, `${JSON.stringify(privateJwk)}\n`, { mode: 0o600, flag: 'wx' })
      io.err(`wrote private key ${v.out} (kid ${publicJwk.kid})\n`)
      print(io, publicJwk)
      return 0
    },
  },
  'audit verify': {
    summary: 'Verify audit files (hash chains, signed checkpoints); exit 1 with each problem and where.',
    usage: `jitgate audit verify FILE... (--jwks FILE|URL | --skip-signatures) [--partial] [--json]

  FILE...            native JSON audit files, oldest first (rotated files, then the current one)
  --jwks FILE|URL    public keys: a JWKS file, or the control plane's /.well-known/jwks.json
                     (a file holding a private key, JWK or PEM, is refused)
  --skip-signatures  check the hash chains only (anyone can recompute those)
  --partial          accept chains that start after seq 1 or lack their final checkpoint
                     (older files not given; a running or crashed gateway)
  --json             print the report as JSON`,
    options: { jwks: { type: 'string' }, 'skip-signatures': { type: 'boolean' }, partial: { type: 'boolean' }, json: { type: 'boolean' } },
    async run(v, files, io) {
      const { auditVerify } = await import('../audit/cli.js')
      return auditVerify(v, files, { out: io.out, usage: (m) => new UsageError(m), fail: (m) => new CliError(m) })
    },
  },
  'audit export': {
    summary: "Write a sub-processor's evidence report (JSON and CSV) from audit files.",
    usage: `jitgate audit export --subprocessor ID --from DATE --to DATE --out PREFIX [--jwks FILE|URL] FILE...

  --subprocessor ID  the vendor (the events' subject)
  --from DATE        start: 2026-10-01 (UTC midnight) or an RFC 3339 time
  --to DATE          end: 2026-12-31 includes that whole day; an RFC 3339 time is exclusive
  --out PREFIX       writes PREFIX.json (requests, approvals, grants, calls, integrity) and PREFIX.csv (events)
  --jwks FILE|URL    also check checkpoint signatures (else the hash chains only)
  FILE...            native JSON audit files, oldest first; exit 1 when they do not verify`,
    options: { subprocessor: { type: 'string' }, from: { type: 'string' }, to: { type: 'string' }, out: { type: 'string', short: 'o' }, jwks: { type: 'string' } },
    async run(v, files, io) {
      const { auditExport } = await import('../audit/cli.js')
      return auditExport(v, files, { out: io.out, usage: (m) => new UsageError(m), fail: (m) => new CliError(m) })
    },
  },
  'policy check': {
    summary: 'Validate policy files; exit 1 with every problem listed.',
    usage: `jitgate policy check [--dir DIR]

  --dir DIR   policy folder (default: the configured one, ./policies)`,
    options: { dir: { type: 'string' }, config: { type: 'string', short: 'c' } },
    async run(v, _positionals, io) {
      const policy = loadPolicy(policyDir(io, v), { env: io.env })
      io.out(
        `policy OK: version ${policy.version}, ${policy.resources.size} resource(s), ${policy.principals.subprocessors.size} sub-processor(s) in ${policy.files.length} file(s)\n`,
      )
      return 0
    },
  },
  ...policyCommands({ api: (io, v, method, path) => api(io, v, method, path), policyDir, usage: (m) => new UsageError(m), fail: (m) => new CliError(m) }),
  ...workflowCommands({ api, usage: (m) => new UsageError(m), fail: (m) => new CliError(m) }),
}

/** `--dir`, or the policy folder of the configuration (`--config`, environment). */
function policyDir(io: CliIO, v: Record<string, unknown>): string {
  return (v.dir as string | undefined) ?? loadConfig({ env: io.env, ...(v.config ? { file: v.config as string } : {}) }).policyDir
}

function print(io: CliIO, value: unknown): void {
  io.out(`${JSON.stringify(value, null, 2)}\n`)
}

/** Calls the control plane as an operator, or with the credential headers `auth` (workflow commands). */
/**
 * An approver's credential for `grant revoke`, or undefined for the operator's: an ID token from
 * $JITGATE_ID_TOKEN, or a local approver (--approver / $JITGATE_APPROVER) with a TOTP code.
 */
function approverRevokeAuth(v: Record<string, unknown>, io: CliIO): Record<string, string> | undefined {
  const approver = (v.approver as string | undefined) ?? io.env.JITGATE_APPROVER
  if (io.env.JITGATE_ID_TOKEN && approver === undefined) return { authorization: `Bearer ${io.env.JITGATE_ID_TOKEN}` }
  if (approver === undefined) {
    if (v.totp !== undefined) throw new UsageError('--totp goes with --approver ID (a local approver)')
    return undefined
  }
  if (!v.totp) throw new UsageError('--totp CODE is required: the code your authenticator shows now')
  const auth: Record<string, string> = { 'x-jitgate-approver': approver, 'x-jitgate-totp': v.totp as string }
  if (io.env.JITGATE_ADMIN_TOKEN) auth.authorization = `Bearer ${io.env.JITGATE_ADMIN_TOKEN}`
  return auth
}

/** An approver's credential for reading (`grant list`), or undefined for the operator's. */
function approverReadAuth(v: Record<string, unknown>, io: CliIO): Record<string, string> | undefined {
  const approver = (v.approver as string | undefined) ?? io.env.JITGATE_APPROVER
  if (io.env.JITGATE_ID_TOKEN && approver === undefined) return { authorization: `Bearer ${io.env.JITGATE_ID_TOKEN}` }
  if (approver === undefined) return undefined
  const auth: Record<string, string> = { 'x-jitgate-approver': approver }
  if (io.env.JITGATE_ADMIN_TOKEN) auth.authorization = `Bearer ${io.env.JITGATE_ADMIN_TOKEN}`
  return auth
}

async function api(io: CliIO, v: Record<string, unknown>, method: string, path: string, body?: unknown, auth?: Record<string, string>): Promise<unknown> {
  const base = controlBase(io, v)
  const headers: Record<string, string> = { ...auth }
  if (auth === undefined && io.env.JITGATE_ADMIN_TOKEN) headers.authorization = `Bearer ${io.env.JITGATE_ADMIN_TOKEN}`
  if (io.env.USER) headers['x-jitgate-actor'] = io.env.USER.replace(/[^A-Za-z0-9@._-]/g, '').slice(0, 64)
  if (body !== undefined) headers['content-type'] = 'application/json'
  let res: Response
  try {
    res = await fetch(new URL(path, base), { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })
  } catch (err) {
    throw new CliError(`cannot reach the control plane at ${base}: ${(err as { cause?: Error }).cause?.message ?? (err as Error).message}`)
  }
  if (res.status === 204) return undefined
  const text = await res.text()
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    throw new CliError(`unexpected ${res.status} response from ${base}: is this a jitgate control plane?`)
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: unknown; message?: unknown; details?: unknown } } | null)?.error
    const details = Array.isArray(e?.details) && e.details.length ? `\n  ${e.details.join('\n  ')}` : ''
    throw new CliError(`${typeof e?.code === 'string' ? e.code : res.status}: ${typeof e?.message === 'string' ? e.message : 'request failed'}${details}`)
  }
  return json
}

/** The shape a command expects from the control plane, or a clear error (never a TypeError). */
function expectShape<T>(value: unknown, ok: (v: Record<string, unknown>) => boolean, base: string): T {
  if (value !== null && typeof value === 'object' && ok(value as Record<string, unknown>)) return value as T
  throw new CliError(`unexpected response from ${base}: is this a jitgate control plane?`)
}

class CliError extends Error {}

function controlBase(io: CliIO, v: Record<string, unknown>): string {
  return (v.url as string | undefined) ?? io.env.JITGATE_CONTROL_URL ?? 'http://127.0.0.1:8081'
}

function help(): string {
  const lines = Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(20)} ${c.summary}`)
  return `jitgate ${VERSION}: just-in-time, time-boxed access for sub-processors

Usage: jitgate <command> [options]   (jitgate <command> --help for details)

Commands:
${lines.join('\n')}
`
}

export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  if (argv.length === 0 || argv[0] === '--help' || argv[0] === '-h' || argv[0] === 'help') {
    io.out(help())
    return argv.length === 0 ? 2 : 0
  }
  if (argv[0] === '--version') return io.out(`${VERSION}\n`), 0
  const two = `${argv[0]} ${argv[1] ?? ''}`
  const name = COMMANDS[two] ? two : argv[0] as string
  const cmd = COMMANDS[name]
  const group = Object.keys(COMMANDS).filter((c) => c.startsWith(`${argv[0]} `))
  if (!cmd && group.length > 0) {
    // `jitgate grant`, `jitgate grant --help`: list the group's commands.
    const asked = argv[1] === undefined || argv[1] === '--help' || argv[1] === '-h'
    ;(asked ? io.out : io.err)(`${asked ? '' : `jitgate: unknown command "${argv.slice(0, 2).join(' ')}"\n\n`}Commands:\n${group.map((c) => `  ${c.padEnd(20)} ${(COMMANDS[c] as Command).summary}`).join('\n')}\n`)
    return asked && argv[1] !== undefined ? 0 : 2
  }
  if (!cmd) {
    // Only the words that could be a command: `jitgate bogus --help` names `bogus`.
    const words = argv.slice(0, 2).filter((a, i) => i === 0 || !a.startsWith('-'))
    io.err(`jitgate: unknown command "${words.join(' ')}"\n\n${help()}`)
    return 2
  }
  const rest = argv.slice(name.split(' ').length)
  try {
    const parsed = parseArgs({ args: rest, options: { ...cmd.options, help: { type: 'boolean', short: 'h' } }, allowPositionals: true, strict: true })
    if (parsed.values.help) {
      io.out(`${cmd.summary}\n\nUsage: ${cmd.usage}\n`)
      return 0
    }
    return await cmd.run(parsed.values as Record<string, string | boolean | string[] | undefined>, parsed.positionals, io)
  } catch (err) {
    if (err instanceof SourceError) {
      io.err(`jitgate: invalid ${name === 'policy check' ? 'policy' : 'configuration or policy'}:\n${indent(formatIssues(err.issues))}\n`)
      return 1
    }
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.err(`jitgate ${name}: ${(err as Error).message}\n\nUsage: ${cmd.usage}\n`)
      return 2
    }
    if (err instanceof CliError || err instanceof KeyError || (err as Error).name === 'StartupError') {
      io.err(`jitgate: ${(err as Error).message}\n`)
      return 1
    }
    const fsCode = (err as NodeJS.ErrnoException).code
    if (fsCode === 'EEXIST') {
      io.err(`jitgate: ${(err as NodeJS.ErrnoException).path ?? 'file'} exists (refusing to overwrite)\n`)
      return 1
    }
    if (fsCode === 'ENOENT' || fsCode === 'EACCES' || fsCode === 'ENOTDIR') {
      io.err(`jitgate: cannot write ${(err as NodeJS.ErrnoException).path ?? 'file'}: ${fsCode === 'EACCES' ? 'permission denied' : 'no such folder'}\n`)
      return 1
    }
    io.err(`jitgate: unexpected error: ${(err as Error).stack ?? String(err)}\n`)
    return 1
  }
}

function indent(s: string): string {
  return s
    .split('\n')
    .map((l) => `  ${l}`)
    .join('\n')
}

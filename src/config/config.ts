/**
 * Loads the gateway configuration: file → schema check → environment overrides → resolved,
 * frozen `GatewayConfig`. Every problem is collected and reported together.
 */
import { hostname } from 'node:os'
import { dirname, resolve } from 'node:path'
import { readFileSync } from 'node:fs'
import { checkSchema, issueAt, readYaml, parseYaml, type SourceIssue, type YamlSource, SourceError } from './yaml-source.js'
import { ConfigSchema, type ConfigFile } from './schema.js'
import { parseDuration } from '../util/duration.js'
import { parseListen, type ListenAddress } from '../util/listen.js'
import { deepFreeze } from '../util/freeze.js'
import { resolveAuditSinks } from './audit-sinks.js'
import type { SinkConfig } from '../audit/sinks/index.js'
import type { WebhookSpec } from '../workflow/notify.js'

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent'

export interface GatewayConfig {
  readonly gatewayId: string
  readonly configFile: string | undefined
  readonly dataDir: string
  readonly dataPlane: {
    readonly listen: ListenAddress
    readonly upstreamTimeoutMs: number
    readonly connectTimeoutMs: number
    /** A client that reads none of its response for this long is cut (the upstream request dropped). */
    readonly sendTimeoutMs: number
    readonly drainTimeoutMs: number
    /** Requests one grant may have in flight at once; 0 = no limit. */
    readonly maxInflightPerGrant: number
    readonly publicProto: 'http' | 'https'
  }
  readonly controlPlane: {
    readonly listen: ListenAddress
    /** Operator bearer token; never logged. Undefined = API refuses non-loopback listen. */
    readonly adminToken: string | undefined
  }
  readonly policyDir: string
  /** Reload the policy when its folder changes (SIGHUP reloads regardless). */
  readonly policyWatch: boolean
  readonly store:
    | { readonly kind: 'memory'; readonly timeoutMs: number; readonly tombstoneMs: number; readonly expirySweepMs: number }
    | {
        readonly kind: 'redis'
        readonly url: string
        readonly keyPrefix: string
        readonly timeoutMs: number
        readonly tombstoneMs: number
        /** How often this replica claims expired grants and writes their `grant.expired`. */
        readonly expirySweepMs: number
      }
  readonly tokens: {
    readonly issuer: string
    /** Signing key: a file path, or the key material itself (from the environment). */
    readonly signingKey: { readonly file: string } | { readonly inline: string } | undefined
    readonly verificationKeyFiles: readonly string[]
    readonly clockToleranceS: number
    readonly cacheSize: number
  }
  readonly audit: {
    readonly output: 'stdout' | { readonly file: string }
    /** `audit.sinks`, when configured (`JITGATE_AUDIT_OUTPUT` still wins: one native sink). */
    readonly sinks: readonly SinkConfig[] | undefined
    /** Signed checkpoints: after `everyEvents` events or `intervalMs` with events pending. */
    readonly checkpoint: { readonly everyEvents: number; readonly intervalMs: number }
  }
  readonly logLevel: LogLevel
  readonly approvers: {
    /** Approvers signing in with the organisation's OpenID Connect provider (ID tokens). */
    readonly oidc:
      | {
          readonly issuer: string
          readonly jwksUrl: string
          readonly audience: string
          readonly groupsClaim: string
          /** ID tokens whose sign-in (`auth_time`, else `iat`) is older are refused (`reauthentication_required`). */
          readonly maxAgeMs: number
        }
      | undefined
  }
  readonly workflow: { readonly sweepIntervalMs: number; readonly retentionMs: number }
  readonly notifications: {
    readonly webhooks: readonly WebhookSpec[]
    readonly queueSize: number
    readonly maxAttempts: number
    readonly timeoutMs: number
    readonly backoffMs: number
  }
}

/** Environment variables read by the loader (documented in the README). */
export const CONFIG_ENV = Object.freeze([
  'REDIS_URL',
  'JITGATE_ADMIN_TOKEN',
  'JITGATE_SIGNING_KEY',
  'JITGATE_SIGNING_KEY_FILE',
  'JITGATE_DATA_LISTEN',
  'JITGATE_CONTROL_LISTEN',
  'JITGATE_POLICY_DIR',
  'JITGATE_DATA_DIR',
  'JITGATE_AUDIT_OUTPUT',
  'JITGATE_LOG_LEVEL',
  'JITGATE_GATEWAY_ID',
  'JITGATE_KEY_PREFIX',
] as const)

export interface LoadConfigOptions {
  /** Config file; default `config/default.yaml` next to the package. */
  readonly file?: string
  /** Raw YAML text instead of a file (tests). */
  readonly text?: string
  readonly env?: NodeJS.ProcessEnv
  /** Base directory for relative paths when `text` is used. */
  readonly baseDir?: string
}

export const DEFAULT_CONFIG_FILE = resolve(dirname(new URL(import.meta.url).pathname), '../../config/default.yaml')

/** Loads and validates; throws SourceError listing every problem. */
/**
 * One vendor must not hold every upstream connection (128 per origin): a grant's slow or stalled
 * calls are capped well below that.
 */
export const DEFAULT_MAX_INFLIGHT_PER_GRANT = 32

export function loadConfig(opts: LoadConfigOptions = {}): GatewayConfig {
  const env = opts.env ?? process.env
  const file = opts.text === undefined ? resolve(opts.file ?? DEFAULT_CONFIG_FILE) : undefined
  const parsed = opts.text !== undefined ? parseYaml('<config>', opts.text) : readYaml(file as string)
  if (!parsed.source) throw new SourceError(parsed.issues)
  const source = parsed.source
  const raw = source.value ?? {}
  const checked = checkSchema(ConfigSchema, raw, source)
  if (!checked.ok) throw new SourceError(checked.issues)
  const baseDir = file ? dirname(file) : resolve(opts.baseDir ?? '.')
  const issues: SourceIssue[] = []
  const envIssue = (name: string, message: string) =>
    issues.push({ file: `env ${name}`, line: 0, column: 0, path: '', message })
  const c: ConfigFile = checked.value
  const ms = (v: string | undefined, dflt: number) => (v === undefined ? dflt : (parseDuration(v) as number))
  const path = (p: string) => resolve(baseDir, p)

  const listenOf = (envName: string, section: string, value: string | undefined, dflt: string): ListenAddress => {
    const fromEnv = env[envName]
    const text = fromEnv || value || dflt
    const addr = parseListen(text)
    if (!addr && fromEnv) envIssue(envName, `expected host:port, got ${JSON.stringify(text)}`)
    else if (!addr) issues.push(issueAt(source, [section, 'listen'], `expected host:port with a port from 0 to 65535, got ${JSON.stringify(text)}`))
    return addr ?? { host: '127.0.0.1', port: 0 }
  }

  const adminToken = env.JITGATE_ADMIN_TOKEN || readSecretFile(c.control_plane?.admin_token_file, path, issues)
  if (adminToken !== undefined && adminToken.length < 16) {
    envIssue('JITGATE_ADMIN_TOKEN', 'the admin token must be at least 16 characters')
  }

  const redisUrl = env.REDIS_URL || c.store?.redis_url || ''
  if (redisUrl && !/^(redis|rediss|unix):\/\//.test(redisUrl)) {
    envIssue('REDIS_URL', 'expected a redis://, rediss:// or unix:// URL')
  }
  const timeoutMs = ms(c.store?.timeout, 250)
  const tombstoneMs = ms(c.store?.tombstone_ttl, 600_000)
  const expirySweepMs = ms(c.store?.expiry_sweep_interval, 5_000)
  if (expirySweepMs < 100) issues.push(issueAt(source, ['store', 'expiry_sweep_interval'], 'expiry_sweep_interval must be at least 100ms'))
  const keyPrefix = env.JITGATE_KEY_PREFIX || c.store?.key_prefix || 'jitgate:'

  const signingKey = env.JITGATE_SIGNING_KEY
    ? { inline: env.JITGATE_SIGNING_KEY }
    : env.JITGATE_SIGNING_KEY_FILE
      ? { file: resolve(env.JITGATE_SIGNING_KEY_FILE) }
      : c.tokens?.signing_key_file
        ? { file: path(c.tokens.signing_key_file) }
        : undefined

  const dataDir = env.JITGATE_DATA_DIR ? resolve(env.JITGATE_DATA_DIR) : c.data_dir ? path(c.data_dir) : resolve('.jitgate')
  const auditOut = env.JITGATE_AUDIT_OUTPUT || c.audit?.output || 'stdout'
  const level = (env.JITGATE_LOG_LEVEL || c.log?.level || 'info') as LogLevel
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(level)) {
    envIssue('JITGATE_LOG_LEVEL', `unknown level ${JSON.stringify(level)}`)
  }

  const config: GatewayConfig = {
    gatewayId: env.JITGATE_GATEWAY_ID || c.gateway_id || `${hostname()}-${process.pid}`,
    configFile: file,
    // Paths written in the file are relative to the file; defaults are relative to the working
    // directory (so a minimal --config elsewhere still finds ./policies).
    dataDir,
    dataPlane: {
      listen: listenOf('JITGATE_DATA_LISTEN', 'data_plane', c.data_plane?.listen, '0.0.0.0:8080'),
      upstreamTimeoutMs: ms(c.data_plane?.upstream_timeout, 30_000),
      connectTimeoutMs: ms(c.data_plane?.connect_timeout, 5_000),
      sendTimeoutMs: ms(c.data_plane?.send_timeout, 60_000),
      drainTimeoutMs: ms(c.data_plane?.drain_timeout, 10_000),
      maxInflightPerGrant: c.data_plane?.max_inflight_per_grant ?? DEFAULT_MAX_INFLIGHT_PER_GRANT,
      publicProto: c.data_plane?.public_proto ?? 'http',
    },
    controlPlane: {
      listen: listenOf('JITGATE_CONTROL_LISTEN', 'control_plane', c.control_plane?.listen, '127.0.0.1:8081'),
      adminToken,
    },
    policyDir: env.JITGATE_POLICY_DIR ? resolve(env.JITGATE_POLICY_DIR) : c.policy?.dir ? path(c.policy.dir) : resolve('policies'),
    policyWatch: c.policy?.watch ?? true,
    store: redisUrl
      ? { kind: 'redis', url: redisUrl, keyPrefix, timeoutMs, tombstoneMs, expirySweepMs }
      : { kind: 'memory', timeoutMs, tombstoneMs, expirySweepMs },
    tokens: {
      issuer: c.tokens?.issuer ?? 'jitgate',
      signingKey,
      verificationKeyFiles: (c.tokens?.verification_key_files ?? []).map(path),
      clockToleranceS: Math.ceil(ms(c.tokens?.clock_tolerance, 30_000) / 1000),
      cacheSize: c.tokens?.cache_size ?? 10_000,
    },
    audit: {
      output: auditOut === 'stdout' ? 'stdout' : { file: resolve(auditOut === env.JITGATE_AUDIT_OUTPUT ? '.' : baseDir, auditOut) },
      sinks: auditSinks(c, env, path, dataDir, source, issues),
      checkpoint: { everyEvents: c.audit?.checkpoint?.every ?? 1000, intervalMs: ms(c.audit?.checkpoint?.interval, 60_000) },
    },
    logLevel: level,
    ...workflowSettings(c, env, path, source, issues),
  }
  if (issues.length > 0) throw new SourceError(issues)
  return deepFreeze(config)
}

function readSecretFile(
  file: string | undefined,
  path: (p: string) => string,
  issues: SourceIssue[],
): string | undefined {
  if (!file) return undefined
  try {
    return readFileSync(path(file), 'utf8').trim()
  } catch (err) {
    issues.push({ file: path(file), line: 0, column: 0, path: 'control_plane.admin_token_file', message: (err as Error).message })
    return undefined
  }
}

/**
 * How old an approver's sign-in may be (OIDC Core §3.1.2.1 `max_age`, enforced by the relying
 * party): a working day. An approval is a privileged act; a token minted from a sign-in days ago
 * (silent renewal, a laptop left unlocked) should not count as the approver being present.
 */
export const DEFAULT_OIDC_MAX_AGE_MS = 12 * 3_600_000

/** The `approvers`, `workflow` and `notifications` sections, with webhook secrets read. */
function workflowSettings(
  c: ConfigFile,
  env: NodeJS.ProcessEnv,
  path: (p: string) => string,
  source: YamlSource,
  issues: SourceIssue[],
): Pick<GatewayConfig, 'approvers' | 'workflow' | 'notifications'> {
  const ms = (v: string | undefined, dflt: number) => (v === undefined ? dflt : (parseDuration(v) as number))
  const oidc = c.approvers?.oidc
  const maxAgeMs = ms(oidc?.max_age, DEFAULT_OIDC_MAX_AGE_MS)
  if (maxAgeMs < 1000) issues.push(issueAt(source, ['approvers', 'oidc', 'max_age'], 'must be at least 1s'))
  const webhooks = (c.notifications?.webhooks ?? []).map((w, i): WebhookSpec => {
    const at = (key: string, message: string) => issues.push(issueAt(source, ['notifications', 'webhooks', i, key], message))
    const format = w.format ?? 'generic'
    let secret: string | undefined
    if (w.secret_env !== undefined && w.secret_file !== undefined) at('secret_env', 'give secret_env or secret_file, not both')
    else if (w.secret_env !== undefined) {
      secret = env[w.secret_env] || undefined
      if (secret === undefined) at('secret_env', `environment variable ${w.secret_env} is not set`)
    } else if (w.secret_file !== undefined) {
      try {
        secret = readFileSync(path(w.secret_file), 'utf8').trim()
      } catch (err) {
        at('secret_file', `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
      }
    } else if (format === 'generic') at('url', 'a generic webhook is signed: give secret_env or secret_file')
    const spec: WebhookSpec = { url: w.url, format, ...(w.events !== undefined ? { events: w.events } : {}) }
    // Non-enumerable: a logged or serialised config never carries the key.
    if (secret !== undefined) Object.defineProperty(spec, 'secret', { value: secret, enumerable: false })
    return spec
  })
  return {
    approvers: {
      oidc:
        oidc === undefined
          ? undefined
          : { issuer: oidc.issuer, jwksUrl: oidc.jwks_url, audience: oidc.audience, groupsClaim: oidc.groups_claim ?? 'groups', maxAgeMs },
    },
    workflow: {
      sweepIntervalMs: ms(c.workflow?.sweep_interval, 10_000),
      retentionMs: ms(c.workflow?.retention, 30 * 86_400_000),
    },
    notifications: {
      webhooks,
      queueSize: c.notifications?.queue_size ?? 1000,
      maxAttempts: c.notifications?.max_attempts ?? 5,
      timeoutMs: ms(c.notifications?.timeout, 5_000),
      backoffMs: ms(c.notifications?.backoff, 1_000),
    },
  }
}

/** `audit.sinks`, resolved; unset when `JITGATE_AUDIT_OUTPUT` names the single sink instead. */
function auditSinks(
  c: ConfigFile,
  env: NodeJS.ProcessEnv,
  path: (p: string) => string,
  dataDir: string,
  source: YamlSource,
  issues: SourceIssue[],
): SinkConfig[] | undefined {
  const raw = c.audit?.sinks
  if (raw === undefined || env.JITGATE_AUDIT_OUTPUT) return undefined
  if (c.audit?.output !== undefined) issues.push(issueAt(source, ['audit', 'output'], 'set either audit.output or audit.sinks, not both'))
  return resolveAuditSinks(raw, {
    path,
    dataDir,
    env,
    issue: (i, field, message) => issues.push(issueAt(source, ['audit', 'sinks', i, ...field.split('.')], message)),
  })
}

/**
 * `audit.sinks` in the config file: its schema (part of `ConfigSchema`) and its resolution into
 * the audit log's sink configurations (paths against the config file, sizes and durations
 * parsed, header secrets read from the environment).
 */
import { Type, type Static } from '@sinclair/typebox'
import { join } from 'node:path'
import { DURATION_PATTERN, parseDuration } from '../util/duration.js'
import type { SinkConfig } from '../audit/sinks/index.js'

const SIZE_PATTERN = '^[0-9]{1,12}(B|KiB|MiB|GiB)?$'
const Size = (description: string) => Type.String({ pattern: SIZE_PATTERN, description, errorMessage: 'expected a size such as 512KiB, 100MiB or 1GiB' })
const Dur = (description: string) => Type.String({ pattern: DURATION_PATTERN, description, errorMessage: 'expected a duration such as 500ms, 10s or 1d' })
const Strict = { additionalProperties: false } as const
const common = {
  name: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,32}$', description: 'Names the sink in the metric and in audit.dropped; default its type.' })),
  format: Type.Optional(Type.Union(['json', 'ocsf', 'ecs', 'cef'].map((f) => Type.Literal(f)), { description: 'Default json (the native line).' })),
}

/**
 * One object for every sink type, so that a mistake is reported on its own key (a union would
 * only say "expected union value"); which keys each type takes is checked in `resolveAuditSinks`.
 */
export const AuditSinkSchema = Type.Object(
  {
    type: Type.Union([Type.Literal('stdout'), Type.Literal('file'), Type.Literal('http'), Type.Literal('syslog')]),
    ...common,
    // file
    path: Type.Optional(Type.String({ minLength: 1, description: 'Relative to the config file.' })),
    rotate_size: Type.Optional(Size('Rotate once the file reaches this size.')),
    rotate_interval: Type.Optional(Dur('Rotate at each multiple of this interval (UTC; 1d = at midnight).')),
    keep: Type.Optional(Type.Integer({ minimum: 0, maximum: 100_000, description: 'Rotated files kept; 0 keeps all (default).' })),
    // http
    url: Type.Optional(Type.String({ pattern: '^https?://', description: 'Collector endpoint; batches are POSTed as newline-delimited lines.', errorMessage: 'expected an http:// or https:// URL' })),
    headers_from_env: Type.Optional(
      Type.Record(Type.String({ pattern: '^[A-Za-z0-9-]{1,64}$' }), Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }), {
        description: 'Request headers whose values come from environment variables (secrets never go in this file).',
      }),
    ),
    batch_size: Type.Optional(Type.Integer({ minimum: 1, maximum: 100_000 })),
    batch_wait: Type.Optional(Dur('How long a line waits for others before a POST (default 1s).')),
    timeout: Type.Optional(Dur('Per POST (default 10s).')),
    spool_dir: Type.Optional(Type.String({ minLength: 1, description: 'Spool folder; default <data_dir>/audit-spool/<name>.' })),
    spool_max_size: Type.Optional(Size('Unsent lines kept on disk while the collector is down (default 256MiB).')),
    // syslog
    address: Type.Optional(
      Type.String({ pattern: '^(\\[[0-9a-fA-F:.]+\\]|[A-Za-z0-9.-]+):[0-9]{1,5}$', description: 'host:port of an RFC 5424 receiver over TCP.', errorMessage: 'expected host:port' }),
    ),
    facility: Type.Optional(Type.Integer({ minimum: 0, maximum: 23, description: 'Default 13 (log audit).' })),
    app_name: Type.Optional(Type.String({ pattern: '^[\\x21-\\x7e]{1,48}$' })),
  },
  Strict,
)

/** The keys each sink type takes (besides type, name and format), the first ones required. */
const KEYS = {
  stdout: { required: [], optional: [] },
  file: { required: ['path'], optional: ['rotate_size', 'rotate_interval', 'keep'] },
  http: { required: ['url'], optional: ['headers_from_env', 'batch_size', 'batch_wait', 'timeout', 'spool_dir', 'spool_max_size'] },
  syslog: { required: ['address'], optional: ['facility', 'app_name'] },
} as const satisfies Record<string, { required: readonly string[]; optional: readonly string[] }>

export type AuditSinkFile = Static<typeof AuditSinkSchema>

/** Bytes of a size string (`100MiB`). */
export function parseSize(text: string): number {
  const m = /^([0-9]+)(B|KiB|MiB|GiB)?$/.exec(text)
  const unit = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[(m?.[2] ?? 'B') as 'B']
  return Number(m?.[1] ?? 0) * unit
}

export interface ResolveContext {
  readonly path: (p: string) => string
  readonly dataDir: string
  readonly env: NodeJS.ProcessEnv
  /** Reports a problem with the sink at `index`. */
  readonly issue: (index: number, field: string, message: string) => void
}

/** Resolves the file's sinks; problems go to `ctx.issue`. */
export function resolveAuditSinks(raw: readonly AuditSinkFile[], ctx: ResolveContext): SinkConfig[] {
  const ms = (v: string | undefined) => (v === undefined ? undefined : parseDuration(v))
  return raw.map((s, i): SinkConfig => {
    const keys: { required: readonly string[]; optional: readonly string[] } = KEYS[s.type]
    for (const k of keys.required) if ((s as Record<string, unknown>)[k] === undefined) ctx.issue(i, k, `a ${s.type} sink needs ${k}`)
    for (const k of Object.keys(s)) {
      if (!['type', 'name', 'format', ...keys.required, ...keys.optional].includes(k)) ctx.issue(i, k, `not an option of a ${s.type} sink`)
    }
    const base = { ...(s.name !== undefined ? { name: s.name } : {}), ...(s.format !== undefined ? { format: s.format as 'json' } : {}) }
    switch (s.type) {
      case 'stdout':
        return { type: 'stdout', ...base }
      case 'file': {
        const rotate =
          s.rotate_size !== undefined || s.rotate_interval !== undefined
            ? {
                keep: s.keep ?? 0,
                ...(s.rotate_size !== undefined ? { maxBytes: parseSize(s.rotate_size) } : {}),
                ...(s.rotate_interval !== undefined ? { intervalMs: ms(s.rotate_interval) as number } : {}),
              }
            : undefined
        return { type: 'file', ...base, path: ctx.path(s.path ?? ''), ...(rotate ? { rotate } : {}) }
      }
      case 'http': {
        const headers: Record<string, string> = {}
        for (const [header, variable] of Object.entries(s.headers_from_env ?? {})) {
          const value = ctx.env[variable]
          if (value === undefined || value === '') ctx.issue(i, `headers_from_env.${header}`, `environment variable ${variable} is not set`)
          else headers[header] = value
        }
        return {
          type: 'http',
          ...base,
          url: s.url ?? '',
          headers,
          ...(s.batch_size !== undefined ? { batchSize: s.batch_size } : {}),
          ...(s.batch_wait !== undefined ? { batchWaitMs: ms(s.batch_wait) as number } : {}),
          ...(s.timeout !== undefined ? { timeoutMs: ms(s.timeout) as number } : {}),
          spoolDir: s.spool_dir !== undefined ? ctx.path(s.spool_dir) : join(ctx.dataDir, 'audit-spool', s.name ?? `http-${i + 1}`),
          ...(s.spool_max_size !== undefined ? { spoolMaxBytes: parseSize(s.spool_max_size) } : {}),
        }
      }
      case 'syslog': {
        const address = s.address ?? ''
        const at = address.lastIndexOf(':')
        return {
          type: 'syslog',
          ...base,
          host: address.slice(0, at).replace(/^\[|\]$/g, ''),
          port: Number(address.slice(at + 1)),
          ...(s.facility !== undefined ? { facility: s.facility } : {}),
          ...(s.app_name !== undefined ? { appName: s.app_name } : {}),
        }
      }
    }
  })
}

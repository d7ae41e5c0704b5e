/**
 * The audit trail: one JSON line per decision and per state change, for the SIEM.
 * Written through pino to stdout (default) or a file. Events never carry a token, key, cookie or
 * injected secret: callers pass only the documented fields below, and values from clients are
 * bounded in length.
 */
import { pino, destination as pinoDestination, type Logger } from 'pino'
import type { Writable } from 'node:stream'

/** Event names are a public contract (DESIGN.md). */
export type AuditEventName =
  | 'access.allowed'
  | 'access.denied'
  | 'grant.issued'
  | 'grant.revoked'
  | 'grant.expired'
  | 'connection.closed'
  | 'policy.loaded'
  | 'policy.rejected'
  | 'gateway.started'
  | 'gateway.stopped'
  | 'admin.denied'

export interface AuditFields {
  readonly request_id?: string
  readonly subject?: string
  readonly grant_id?: string
  readonly resource?: string
  readonly method?: string
  readonly path?: string
  readonly status?: number
  readonly code?: string
  readonly client_ip?: string
  readonly duration_ms?: number
  readonly upstream_ms?: number
  readonly actor?: string
  readonly reason?: string
  readonly scopes?: readonly string[]
  readonly expires_at?: string
  readonly starts_at?: string
  readonly detail?: string
  readonly store?: string
  readonly listen?: Readonly<Record<string, string>>
  readonly policy_files?: readonly string[]
  readonly protocol?: 'http' | 'websocket'
}

export interface AuditLog {
  emit(event: AuditEventName, fields: AuditFields): void
  /** Writes out everything buffered (SIGTERM, tests). */
  flush(): Promise<void>
  close(): Promise<void>
}

export interface AuditLogOptions {
  /** `stdout`, a file path, or a stream (tests read the real JSON lines from it). */
  readonly output: 'stdout' | { readonly file: string } | Writable
  readonly gatewayId: string
  /** Current policy version, stamped on every event. */
  readonly policyVersion: () => string | undefined
}

/** Longest client-controlled string kept in an event; longer ones are cut and marked. */
export const MAX_FIELD_LENGTH = 2048
const TRUNCATION_MARK = '…[truncated]'

export function createAuditLog(opts: AuditLogOptions): AuditLog {
  const isStream = typeof opts.output === 'object' && !('file' in opts.output)
  const dest = isStream
    ? (opts.output as Writable)
    : pinoDestination({
        dest: opts.output === 'stdout' ? 1 : (opts.output as { file: string }).file,
        sync: false,
        mkdir: true,
        minLength: 0,
      })
  const logger: Logger = pino(
    {
      // Audit events carry `time` (RFC 3339, ms) first and `event`, not a log level: the SIEM
      // routes on the event name. pino caches the level formatter's output once per level, so the
      // level slot is emptied and the time comes from the timestamp hook, which runs per line;
      // with no level before it, it takes no leading comma.
      base: null,
      timestamp: () => `"time":"${new Date().toISOString()}"`,
      messageKey: 'message',
      formatters: { level: () => ({}) },
    },
    dest as Parameters<typeof pino>[1],
  )
  return {
    emit(event, fields) {
      const path = fields.path
      const record =
        path !== undefined && path.length > MAX_FIELD_LENGTH
          ? { ...fields, path: path.slice(0, MAX_FIELD_LENGTH) + TRUNCATION_MARK }
          : fields
      logger.info({
        event,
        ...record,
        policy_version: opts.policyVersion(),
        gateway_id: opts.gatewayId,
      })
    },
    flush() {
      return new Promise((resolve) => {
        if (isStream) return resolve()
        try {
          ;(dest as ReturnType<typeof pinoDestination>).flushSync()
        } catch {
          // flushSync throws while the destination is still opening; the async flush below covers it.
        }
        logger.flush(() => resolve())
      })
    },
    async close() {
      await this.flush()
      if (!isStream) (dest as ReturnType<typeof pinoDestination>).end()
    },
  }
}

/** Truncates a client-controlled string for an audit field. */
export function bounded(value: string): string {
  return value.length > MAX_FIELD_LENGTH ? value.slice(0, MAX_FIELD_LENGTH) + TRUNCATION_MARK : value
}

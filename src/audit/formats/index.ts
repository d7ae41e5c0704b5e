/**
 * The formats a sink can write: the native JSON line (what the hash chain covers), OCSF, ECS or
 * CEF. Each is one line per event; each mapping is documented field by field in docs/audit.md.
 */
import { toLine } from '../line.js'
import type { AuditRecord } from './common.js'
import { toOcsf } from './ocsf.js'
import { toEcs } from './ecs.js'
import { toCef } from './cef.js'

export const AUDIT_FORMATS = ['json', 'ocsf', 'ecs', 'cef'] as const
export type AuditFormat = (typeof AUDIT_FORMATS)[number]

/** The line a sink of `format` writes for a record whose native line is `native`. */
export function formatEvent(format: AuditFormat, record: AuditRecord, native: string): string {
  switch (format) {
    case 'json':
      return native
    case 'ocsf':
      return toLine(toOcsf(record))
    case 'ecs':
      return toLine(toEcs(record))
    case 'cef':
      return toCef(record)
  }
}

/**
 * What every SIEM format shares: the product's identity, and how an event reads as an outcome.
 */
import { readFileSync } from 'node:fs'

/** An audit record as written in the native format (bounded, envelope included). */
export type AuditRecord = Readonly<Record<string, unknown>>

/** Product identity stamped in every format (OCSF metadata.product, ECS observer, CEF header). */
export const PRODUCT = Object.freeze({
  name: 'jitgate',
  vendor: 'jitgate',
  // src/audit/formats and dist/audit/formats are both three levels below package.json.
  version: (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version,
})

/** Failure: a denial, a refused call or reload, dropped events, or a failed upstream call. */
export function isFailure(r: AuditRecord): boolean {
  return r.event === 'access.denied' || r.event === 'admin.denied' || r.event === 'policy.rejected' || r.event === 'audit.dropped' || r.code !== undefined
}

/** A one-line human summary of an event (OCSF message, ECS message, CEF name). */
export function summary(r: AuditRecord): string {
  const who = typeof r.subject === 'string' ? ` ${r.subject}` : ''
  switch (r.event) {
    case 'access.allowed':
    case 'access.denied':
      return `${r.event === 'access.allowed' ? 'allowed' : 'denied'}${who} ${String(r.method)} ${String(r.path)} ${String(r.status)}${r.code !== undefined ? ` ${String(r.code)}` : ''}`
    case 'admin.denied':
      return `operator call refused: ${String(r.method)} ${String(r.path)}`
    default:
      return `${String(r.event)}${who}${typeof r.resource === 'string' ? ` ${r.resource}` : ''}`
  }
}

/** The severity of an event on a 0 (info) to 3 (high) scale, each format maps it to its own. */
export function severity(r: AuditRecord): 0 | 1 | 2 | 3 {
  switch (r.event) {
    case 'breakglass.used':
    case 'audit.dropped':
      return 3
    case 'admin.denied':
    case 'policy.rejected':
      return 2
    case 'access.denied':
      return 1
    default:
      return r.code !== undefined ? 1 : 0
  }
}

/** Epoch milliseconds of the record's `time`. */
export function epochMs(r: AuditRecord): number {
  return Date.parse(String(r.time))
}

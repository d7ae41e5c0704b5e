/**
 * ArcSight Common Event Format (CEF) version 0:
 * `CEF:0|Vendor|Product|Version|SignatureID|Name|Severity|Extension`.
 * Escaping follows the CEF specification: in header fields `\` and `|`; in extension values `\`,
 * `=` and line breaks (`\n`, `\r`). Every other character a reader could take as a control or line
 * break is written as `\uXXXX` too, so one event stays one line whatever a client sent.
 * docs/audit.md "CEF" lists every key.
 */
import { isIPv4 } from 'node:net'
import { PRODUCT, epochMs, isFailure, severity, summary, type AuditRecord } from './common.js'

const CONTROLS = /[\u0000-\u0009\u000b\u000c\u000e-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]/g
const hex = (c: string) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`

/** Header field: `\` → `\\`, `|` → `\|`; line breaks and controls cannot appear in a header. */
export function escapeHeader(value: string): string {
  return value.replace(/[\\|]/g, '\\$&').replace(/\r?\n|\r/g, ' ').replace(CONTROLS, hex)
}

/** Anything an extension value must escape; most values have none (fast path). */
const EXTENSION_SPECIAL = /[\\=\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]/

/** Extension value: `\` → `\\`, `=` → `\=`, LF → `\n`, CR → `\r`. */
export function escapeExtension(value: string): string {
  if (!EXTENSION_SPECIAL.test(value)) return value
  return value
    .replace(/[\\=]/g, '\\$&')
    .replace(/\n/g, '\\n')
    .replace(/\r/g, '\\r')
    .replace(CONTROLS, hex)
}

/** Native fields with a CEF key below; the rest go, as compact JSON, into cs6 ("jitgate_fields"). */
const MAPPED = new Set([
  'time', 'event', 'request_id', 'subject', 'actor', 'method', 'path', 'status', 'code', 'detail', 'reason',
  'client_ip', 'duration_ms', 'protocol', 'gateway_id', 'seq', 'grant_id', 'resource', 'policy_version', 'chain', 'prev_hash',
])

/** One native record as one CEF line. */
export function toCef(r: AuditRecord): string {
  const ext: [string, unknown][] = [
    ['rt', epochMs(r)],
    ['act', r.event],
    ['outcome', isFailure(r) ? 'failure' : 'success'],
    ['dvchost', r.gateway_id],
    ['externalId', r.request_id],
    ['requestMethod', r.method],
    ['request', r.path],
    ['app', r.protocol],
  ]
  const iam = String(r.event).startsWith('grant.') || String(r.event).startsWith('request.') || String(r.event).startsWith('breakglass.')
  // On grant and request events the subject is the target (duser) and `actor` acted (suser).
  if (iam) ext.push(['suser', r.actor], ['duser', r.subject])
  else ext.push(['suser', r.subject ?? r.actor])
  const ip = typeof r.client_ip === 'string' ? r.client_ip.replace(/^::ffff:(?=\d+\.)/, '') : undefined
  if (ip !== undefined && ip !== '') {
    if (isIPv4(ip)) ext.push(['src', ip])
    else ext.push(['c6a2', ip], ['c6a2Label', 'Source IPv6 Address'])
  }
  ext.push(['reason', r.code ?? r.reason], ['msg', r.detail ?? (r.code !== undefined ? undefined : r.reason)])
  const labelled: [string, string, unknown][] = [
    ['cs1', 'grant_id', r.grant_id],
    ['cs2', 'resource', r.resource],
    ['cs3', 'policy_version', r.policy_version],
    ['cs4', 'chain', r.chain],
    ['cs5', 'prev_hash', r.prev_hash],
    ['cn1', 'seq', r.seq],
    ['cn2', 'http_status', r.status],
    ['cn3', 'duration_ms', typeof r.duration_ms === 'number' ? Math.round(r.duration_ms) : undefined],
  ]
  const rest: Record<string, unknown> = {}
  for (const k in r) if (!MAPPED.has(k)) rest[k] = r[k]
  if (Object.keys(rest).length > 0) labelled.push(['cs6', 'jitgate_fields', JSON.stringify(rest)])
  for (const [key, label, value] of labelled) if (value !== undefined) ext.push([key, value], [`${key}Label`, label])

  const header = ['CEF:0', PRODUCT.vendor, PRODUCT.name, PRODUCT.version, String(r.event), summary(r), String([3, 5, 7, 9][severity(r)])]
  const extension = ext
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${k}=${escapeExtension(String(v))}`)
    .join(' ')
  return `${header.map((h, i) => (i === 0 ? h : escapeHeader(h))).join('|')}|${extension}`
}

/**
 * Elastic Common Schema 8.11. Native fields with an ECS field go there (docs/audit.md "ECS" has
 * the table); every other field goes under the custom `jitgate.` namespace with its native name,
 * as ECS recommends for fields it does not define.
 */
import { PRODUCT, epochMs, isFailure, summary, type AuditRecord } from './common.js'

export const ECS_VERSION = '8.11.0'

/** event.category and event.type per event, from ECS's allowed values. */
function categorize(event: string): { category: string[]; type: string[] } {
  switch (event) {
    // ECS expects `allowed`/`denied` with the network category, `access` with both.
    case 'access.allowed':
      return { category: ['web', 'network'], type: ['access', 'allowed'] }
    case 'access.denied':
      return { category: ['web', 'network'], type: ['access', 'denied'] }
    case 'connection.closed':
      return { category: ['network'], type: ['connection', 'end'] }
    case 'grant.issued':
    case 'breakglass.used':
      return { category: ['iam'], type: ['user', 'creation'] }
    case 'grant.revoked':
    case 'grant.expired':
      return { category: ['iam'], type: ['user', 'deletion'] }
    case 'admin.denied':
      return { category: ['authentication'], type: ['start'] }
    case 'policy.loaded':
    case 'policy.rejected':
      return { category: ['configuration'], type: ['change'] }
    case 'gateway.started':
      return { category: ['process'], type: ['start'] }
    case 'gateway.stopped':
      return { category: ['process'], type: ['end'] }
    case 'audit.checkpoint':
    case 'audit.dropped':
      return { category: ['process'], type: ['info'] }
    default:
      // grant.extended, grant.claimed, request.*, breakglass.reviewed
      return { category: ['iam'], type: ['change'] }
  }
}

/** Native fields placed in ECS fields below; every other one goes under `jitgate.`. */
const MAPPED = new Set(['time', 'event', 'request_id', 'subject', 'actor', 'method', 'path', 'status', 'client_ip', 'duration_ms', 'protocol', 'gateway_id', 'seq', 'detail'])

/** One native record as an ECS document. */
export function toEcs(r: AuditRecord): Record<string, unknown> {
  const event = String(r.event)
  const { category, type } = categorize(event)
  // On grant and request events the subject is the target and `actor` the one who acted.
  const iam = category[0] === 'iam'
  const actor = iam ? r.actor : (r.subject ?? r.actor)
  const users = [r.subject, r.actor].filter((u): u is string => typeof u === 'string')
  const out: Record<string, unknown> = {
    '@timestamp': new Date(epochMs(r)).toISOString(),
    ecs: { version: ECS_VERSION },
    message: summary(r),
    event: {
      kind: 'event',
      module: 'jitgate',
      dataset: 'jitgate.audit',
      action: event,
      category,
      type,
      outcome: isFailure(r) ? 'failure' : 'success',
      sequence: r.seq,
      id: `${String(r.chain)}:${String(r.seq)}`,
      ...(typeof r.duration_ms === 'number' ? { duration: Math.round(r.duration_ms * 1e6) } : {}),
      ...(r.detail !== undefined || r.reason !== undefined ? { reason: r.detail ?? r.reason } : {}),
    },
    observer: { vendor: PRODUCT.vendor, product: PRODUCT.name, version: PRODUCT.version, type: 'proxy', name: r.gateway_id },
    service: { name: PRODUCT.name, type: 'jitgate', version: PRODUCT.version, node: { name: r.gateway_id } },
  }
  if (typeof actor === 'string') out.user = { id: actor, name: actor, ...(iam && typeof r.subject === 'string' ? { target: { id: r.subject, name: r.subject } } : {}) }
  else if (iam && typeof r.subject === 'string') out.user = { target: { id: r.subject, name: r.subject } }
  if (r.method !== undefined || r.status !== undefined || r.request_id !== undefined) {
    out.http = {
      ...(r.request_id !== undefined ? { request: { id: r.request_id, ...(r.method !== undefined ? { method: r.method } : {}) } } : {}),
      ...(r.status !== undefined ? { response: { status_code: r.status } } : {}),
    }
  }
  if (r.path !== undefined) out.url = { path: r.path }
  if (typeof r.client_ip === 'string' && r.client_ip !== '') out.source = { ip: r.client_ip, address: r.client_ip }
  if (r.protocol !== undefined) out.network = { protocol: r.protocol }
  out.related = {
    ...(users.length ? { user: [...new Set(users)] } : {}),
    ...(typeof r.client_ip === 'string' && r.client_ip !== '' ? { ip: [r.client_ip] } : {}),
  }
  const custom: Record<string, unknown> = {}
  for (const k in r) if (!MAPPED.has(k)) custom[k] = r[k]
  out.jitgate = custom
  return out
}

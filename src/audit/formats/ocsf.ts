/**
 * OCSF 1.3.0 (Open Cybersecurity Schema Framework). Each event type maps to the class that fits
 * it best (docs/audit.md "OCSF" has the table, field by field):
 * - proxied calls: API Activity (6003), activity by HTTP method;
 * - WebSocket closes: Network Activity (4001), Close;
 * - grants and break-glass: User Access Management (3005), Assign or Revoke Privileges;
 * - refused operator calls: Authentication (3002), Logon failure;
 * - access requests and reviews: Entity Management (3004), the request being the entity;
 * - gateway, policy and audit-trail housekeeping: Application Lifecycle (6002).
 * Fields without an OCSF attribute go under `unmapped` with their native names.
 */
import { PRODUCT, epochMs, isFailure, severity, summary, type AuditRecord } from './common.js'

export const OCSF_VERSION = '1.3.0'

interface ClassMapping {
  readonly classUid: number
  readonly activityId: number
  readonly activityName: string
}

const API_ACTIVITY: Readonly<Record<string, [number, string]>> = {
  POST: [1, 'Create'],
  GET: [2, 'Read'],
  HEAD: [2, 'Read'],
  OPTIONS: [2, 'Read'],
  PUT: [3, 'Update'],
  PATCH: [3, 'Update'],
  DELETE: [4, 'Delete'],
}

function classOf(r: AuditRecord): ClassMapping {
  const e = String(r.event)
  if (e === 'access.allowed' || e === 'access.denied') {
    const [id, name] = API_ACTIVITY[String(r.method)] ?? [99, 'Other']
    return { classUid: 6003, activityId: id, activityName: name }
  }
  if (e === 'connection.closed') return { classUid: 4001, activityId: 2, activityName: 'Close' }
  if (e === 'grant.issued' || e === 'grant.extended' || e === 'grant.claimed' || e === 'breakglass.used') return { classUid: 3005, activityId: 1, activityName: 'Assign Privileges' }
  if (e === 'grant.revoked' || e === 'grant.expired') return { classUid: 3005, activityId: 2, activityName: 'Revoke Privileges' }
  if (e === 'admin.denied') return { classUid: 3002, activityId: 1, activityName: 'Logon' }
  if (e === 'request.created') return { classUid: 3004, activityId: 1, activityName: 'Create' }
  if (e.startsWith('request.') || e === 'breakglass.reviewed') return { classUid: 3004, activityId: 3, activityName: 'Update' }
  if (e === 'gateway.started') return { classUid: 6002, activityId: 3, activityName: 'Start' }
  if (e === 'gateway.stopped') return { classUid: 6002, activityId: 4, activityName: 'Stop' }
  return { classUid: 6002, activityId: 99, activityName: e }
}

/** Native fields that have an OCSF attribute below; every other field goes to `unmapped`. */
const MAPPED = new Set(['time', 'event', 'request_id', 'subject', 'resource', 'method', 'path', 'status', 'code', 'detail', 'client_ip', 'duration_ms', 'actor', 'scopes', 'seq', 'comment'])

const user = (uid: unknown) => (typeof uid === 'string' && uid !== '' ? { uid, name: uid } : { name: 'unknown', type_id: 0 })

/** One native record as an OCSF event object. */
export function toOcsf(r: AuditRecord): Record<string, unknown> {
  const c = classOf(r)
  const failed = isFailure(r)
  const out: Record<string, unknown> = {
    class_uid: c.classUid,
    category_uid: Math.floor(c.classUid / 1000),
    activity_id: c.activityId,
    activity_name: c.activityName,
    type_uid: c.classUid * 100 + c.activityId,
    time: epochMs(r),
    severity_id: [1, 2, 3, 4][severity(r)],
    status_id: failed ? 2 : 1,
    message: summary(r),
    metadata: {
      version: OCSF_VERSION,
      product: { name: PRODUCT.name, vendor_name: PRODUCT.vendor, version: PRODUCT.version },
      uid: `${String(r.chain)}:${String(r.seq)}`,
      sequence: r.seq,
      event_code: r.event,
      log_name: 'jitgate-audit',
      ...(r.request_id !== undefined ? { correlation_uid: r.request_id } : {}),
    },
  }
  if (r.code !== undefined) out.status_code = r.code
  if (r.detail !== undefined || r.reason !== undefined) out.status_detail = r.detail ?? r.reason
  if (typeof r.duration_ms === 'number') out.duration = Math.round(r.duration_ms)
  const src = typeof r.client_ip === 'string' && r.client_ip !== '' ? { ip: r.client_ip } : undefined
  const resources = typeof r.resource === 'string' ? [{ uid: r.resource, type: 'jitgate resource' }] : undefined
  const http = r.method !== undefined ? { http_method: r.method, url: { path: r.path }, uid: r.request_id } : undefined

  switch (c.classUid) {
    case 6003:
      Object.assign(out, {
        actor: { user: user(r.subject) },
        api: { operation: r.method, service: { name: r.resource ?? 'jitgate' }, request: { uid: r.request_id } },
        src_endpoint: src ?? { name: 'unknown' },
        ...(typeof r.resource === 'string' ? { dst_endpoint: { svc_name: r.resource } } : {}),
        http_request: http,
        http_response: { code: r.status },
        ...(resources ? { resources } : {}),
      })
      break
    case 4001:
      Object.assign(out, {
        actor: { user: user(r.subject) },
        src_endpoint: src ?? { name: 'unknown' },
        dst_endpoint: { svc_name: r.resource },
        connection_info: { protocol_name: 'tcp', direction_id: 1 },
        http_request: http,
      })
      break
    case 3005:
      Object.assign(out, {
        user: user(r.subject),
        actor: { user: user(r.actor) },
        ...(Array.isArray(r.scopes) ? { privileges: r.scopes } : {}),
        ...(resources ? { resources } : {}),
      })
      break
    case 3002:
      Object.assign(out, {
        user: { name: 'operator', type_id: 2 },
        service: { name: 'jitgate control plane' },
        ...(src ? { src_endpoint: src } : {}),
        http_request: http,
        is_remote: true,
      })
      break
    case 3004:
      Object.assign(out, {
        actor: { user: user(r.actor ?? r.subject) },
        entity: { uid: r.access_request_id ?? r.grant_id, type: r.access_request_id !== undefined ? 'access request' : 'grant', name: r.resource },
        ...(r.comment !== undefined ? { comment: r.comment } : {}),
      })
      break
    default:
      Object.assign(out, { app: { name: PRODUCT.name, vendor_name: PRODUCT.vendor, version: PRODUCT.version, uid: r.gateway_id } })
  }
  const unmapped: Record<string, unknown> = {}
  for (const k in r) if (!MAPPED.has(k)) unmapped[k] = r[k]
  out.unmapped = unmapped
  return out
}

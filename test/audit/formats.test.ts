/**
 * OCSF, ECS and CEF, each checked against its own rules on real events: a real gateway runs a
 * scenario (proxied calls, denials, grants, a WebSocket, a refused operator call, a rejected
 * reload, start and stop), the workflow's event types are emitted through the same audit log, and
 * every record is rendered in each format the way a sink does.
 */
import t, { type Test } from 'tap'
import { createRequire } from 'node:module'
import { isIP } from 'node:net'
import { writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { PassThrough } from 'node:stream'
import WebSocket from 'ws'
import { startUpstream } from '../helpers/upstream.js'
import { startTestGateway, call, rawCall, type AuditRecord } from '../helpers/gateway.js'
import { auditValidator } from '../helpers/audit-schema.js'
import { createAuditLog } from '../../src/audit/audit-log.js'
import { toOcsf, OCSF_VERSION } from '../../src/audit/formats/ocsf.js'
import { toEcs, ECS_VERSION } from '../../src/audit/formats/ecs.js'
import { toCef, escapeExtension, escapeHeader } from '../../src/audit/formats/cef.js'
import { PRODUCT } from '../../src/audit/formats/common.js'

const require = createRequire(import.meta.url)
const Ajv = require('ajv').default as typeof import('ajv').default

const POLICY = `
resources:
  - id: crm-api
    upstream: UPSTREAM
    match: { path_prefix: /crm }
    max_ttl: 1h
  - id: live
    upstream: UPSTREAM
    match: { path_prefix: /live }
    max_ttl: 1h
    websocket: true
`

/** Every kind of event, written by a real gateway's audit log and read back from its output. */
async function realEvents(t: Test): Promise<AuditRecord[]> {
  const upstream = await startUpstream(t)
  const g = await startTestGateway(t, { policy: POLICY, upstream: upstream.url })
  const grant = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**', 'POST /crm/tickets'], ttl: '10m', reason: 'SUP-7' })
  const live = await g.issue({ resource: 'live', scopes: ['GET /live/**'], ttl: '10m' })
  await call(`${g.dataUrl}/crm/a`, { token: grant.token })
  await call(`${g.dataUrl}/crm/tickets`, { token: grant.token, method: 'POST', body: '{}' })
  await rawCall(g.dataUrl, '/crm/x|y=z\\w', { token: grant.token })
  await rawCall(g.dataUrl, '/crm/a')
  await rawCall(g.dataUrl, '/crm/a', { token: grant.token, method: 'DELETE' })
  await rawCall(g.dataUrl, '/crm/%2f', { token: grant.token })
  const ws = new WebSocket(`${g.dataUrl.replace('http', 'ws')}/live/feed`, { headers: { authorization: `Bearer ${live.token}` } })
  await new Promise((resolve, reject) => ws.on('open', resolve).on('error', reject))
  const closed = new Promise((resolve) => ws.on('close', resolve))
  ws.close()
  await closed
  await g.revoke(grant.id, 'done = finished | closed')
  await call(`${g.controlUrl}/v1/grants`, { headers: { authorization: 'Bearer nope-nope-nope-nope' } })
  writeFileSync(join(dirname(g.dataDir), 'policies', 'broken.yaml'), 'resources: [{ id: Bad }]\n')
  await g.gw.reloadPolicy()
  const a = g.gw.audit
  const req = { access_request_id: 'r_1', subject: 'acme', resource: 'crm-api' }
  a.emit('request.created', { ...req, request_id: 'h1', actor: 'acme', scopes: ['GET /crm/**'], reason: 'SUP-8', ticket: 'SUP-8' })
  a.emit('request.approval_recorded', { ...req, request_id: 'h2', actor: 'alice', stage: 1, comment: 'ok' })
  a.emit('request.approved', { ...req, request_id: 'h3', actor: 'carol', grant_id: 'g_1' })
  a.emit('request.denied', { ...req, actor: 'bob', comment: 'no' })
  a.emit('request.expired', { ...req, expires_at: new Date().toISOString() })
  a.emit('request.escalated', { ...req, stage: 2 })
  a.emit('request.cancelled', { ...req, actor: 'acme' })
  a.emit('grant.extended', { actor: 'carol', grant_id: 'g_1', subject: 'acme', resource: 'crm-api', expires_at: new Date().toISOString(), previous_expires_at: new Date().toISOString() })
  a.emit('breakglass.used', { actor: 'acme', subject: 'acme', resource: 'crm-api', grant_id: 'g_2', reason: 'outage' })
  a.emit('breakglass.reviewed', { actor: 'alice', subject: 'acme', resource: 'crm-api', grant_id: 'g_2', comment: 'justified' })
  await g.stop()
  const validate = auditValidator()
  for (const e of g.audit) t.same(validate(e), [], `native ${e.event} valid`)
  return g.audit
}

/*
 * OCSF 1.3.0: the base event's required attributes, and each class's required attributes and
 * constraints (schema.ocsf.io: API Activity 6003, Network Activity 4001, Authentication 3002,
 * Entity Management 3004, User Access Management 3005, Application Lifecycle 6002).
 */
const product = { type: 'object', required: ['name'], properties: { name: { type: 'string' }, vendor_name: { type: 'string' }, version: { type: 'string' } } }
const user = { type: 'object', anyOf: [{ required: ['uid'] }, { required: ['name'] }], properties: { uid: { type: 'string' }, name: { type: 'string' }, type_id: { type: 'integer' } } }
const endpoint = { type: 'object', minProperties: 1, properties: { ip: { type: 'string' }, name: { type: 'string' }, svc_name: { type: 'string' } } }
const base = {
  type: 'object',
  required: ['activity_id', 'category_uid', 'class_uid', 'metadata', 'severity_id', 'time', 'type_uid'],
  properties: {
    activity_id: { type: 'integer' },
    category_uid: { type: 'integer' },
    class_uid: { type: 'integer' },
    type_uid: { type: 'integer' },
    severity_id: { enum: [0, 1, 2, 3, 4, 5, 6, 99] },
    status_id: { enum: [0, 1, 2, 99] },
    time: { type: 'integer' },
    duration: { type: 'integer' },
    message: { type: 'string' },
    metadata: {
      type: 'object',
      required: ['product', 'version'],
      properties: { product, version: { const: OCSF_VERSION }, uid: { type: 'string' }, sequence: { type: 'integer' }, correlation_uid: { type: 'string' } },
    },
    actor: { type: 'object', required: ['user'], properties: { user } },
    src_endpoint: endpoint,
    dst_endpoint: endpoint,
    http_request: { type: 'object', properties: { http_method: { type: 'string' }, url: { type: 'object', properties: { path: { type: 'string' } } } } },
    http_response: { type: 'object', required: ['code'], properties: { code: { type: 'integer' } } },
    unmapped: { type: 'object' },
  },
}
const OCSF_CLASSES: Record<number, object> = {
  6003: { required: ['actor', 'api', 'src_endpoint'], properties: { api: { type: 'object', required: ['operation'], properties: { operation: { type: 'string' } } }, activity_id: { enum: [0, 1, 2, 3, 4, 99] } } },
  4001: { anyOf: [{ required: ['src_endpoint'] }, { required: ['dst_endpoint'] }], properties: { activity_id: { enum: [0, 1, 2, 3, 4, 5, 6, 7, 99] } } },
  3002: { required: ['user'], anyOf: [{ required: ['service'] }, { required: ['dst_endpoint'] }], properties: { user, activity_id: { enum: [0, 1, 2, 3, 4, 5, 6, 7, 99] } } },
  3004: { required: ['entity'], properties: { entity: { type: 'object', anyOf: [{ required: ['uid'] }, { required: ['name'] }] }, activity_id: { enum: [0, 1, 2, 3, 4, 99] } } },
  3005: { required: ['user'], properties: { user, privileges: { type: 'array', items: { type: 'string' } }, activity_id: { enum: [0, 1, 2, 3, 4, 99] } } },
  6002: { required: ['app'], properties: { app: product, activity_id: { enum: [0, 1, 2, 3, 4, 99] } } },
}

t.test('OCSF: every event has its class required attributes, consistent ids and the native fields', async (t) => {
  const events = await realEvents(t)
  const ajv = new Ajv({ allErrors: true, strict: false })
  const validators = Object.fromEntries(Object.entries(OCSF_CLASSES).map(([uid, s]) => [uid, ajv.compile({ allOf: [base, s] })]))
  const classes = new Set<number>()
  for (const e of events) {
    const o = toOcsf(e)
    const uid = o.class_uid as number
    classes.add(uid)
    const validate = validators[uid]
    t.ok(validate, `${e.event}: mapped to a known class (${uid})`)
    t.ok(validate?.(o), `${e.event} → ${uid}: ${JSON.stringify(validate?.errors)}`)
    t.equal(o.type_uid, uid * 100 + (o.activity_id as number), `${e.event}: type_uid = class_uid × 100 + activity_id`)
    t.equal(o.category_uid, Math.floor(uid / 1000))
    t.equal(o.time, Date.parse(e.time as string))
    t.match(o.metadata, { sequence: e.seq, uid: `${String(e.chain)}:${String(e.seq)}`, product: { name: 'jitgate', version: PRODUCT.version } })
    t.equal((o.unmapped as Record<string, unknown>).prev_hash, e.prev_hash, `${e.event}: chain fields kept`)
  }
  t.same([...classes].sort(), [3002, 3004, 3005, 4001, 6002, 6003], 'every class of the mapping is exercised')
  const denied = toOcsf(events.find((e) => e.event === 'access.denied' && e.code === 'scope_denied') as AuditRecord)
  t.match(denied, { class_uid: 6003, activity_id: 4, status_id: 2, status_code: 'scope_denied', http_response: { code: 403 }, actor: { user: { uid: 'acme' } } })
  const issued = toOcsf(events.find((e) => e.event === 'grant.issued') as AuditRecord)
  t.match(issued, { class_uid: 3005, activity_id: 1, user: { uid: 'acme' }, actor: { user: { uid: 'operator' } }, privileges: ['GET /crm/**', 'POST /crm/tickets'], resources: [{ uid: 'crm-api' }] })
})

/** ECS 8.11 fields used by the mapping, with their ECS types. */
const ECS_FIELDS: Record<string, 'keyword' | 'keyword[]' | 'long' | 'date' | 'ip' | 'ip[]' | 'text' | 'wildcard'> = {
  '@timestamp': 'date',
  'ecs.version': 'keyword',
  message: 'text',
  'event.kind': 'keyword',
  'event.module': 'keyword',
  'event.dataset': 'keyword',
  'event.action': 'keyword',
  'event.category': 'keyword[]',
  'event.type': 'keyword[]',
  'event.outcome': 'keyword',
  'event.sequence': 'long',
  'event.id': 'keyword',
  'event.duration': 'long',
  'event.reason': 'keyword',
  'observer.vendor': 'keyword',
  'observer.product': 'keyword',
  'observer.version': 'keyword',
  'observer.type': 'keyword',
  'observer.name': 'keyword',
  'service.name': 'keyword',
  'service.type': 'keyword',
  'service.version': 'keyword',
  'service.node.name': 'keyword',
  'user.id': 'keyword',
  'user.name': 'keyword',
  'user.target.id': 'keyword',
  'user.target.name': 'keyword',
  'http.request.id': 'keyword',
  'http.request.method': 'keyword',
  'http.response.status_code': 'long',
  'url.path': 'wildcard',
  'source.ip': 'ip',
  'source.address': 'keyword',
  'network.protocol': 'keyword',
  'related.user': 'keyword[]',
  'related.ip': 'ip[]',
}
/** ECS categorization: allowed event.type values per event.category. */
const ECS_TYPES: Record<string, string[]> = {
  authentication: ['start', 'end', 'info'],
  configuration: ['access', 'change', 'creation', 'deletion', 'info'],
  iam: ['admin', 'change', 'creation', 'deletion', 'group', 'info', 'user'],
  network: ['access', 'allowed', 'connection', 'denied', 'end', 'info', 'protocol', 'start'],
  process: ['access', 'change', 'end', 'info', 'start'],
  web: ['access', 'error', 'info'],
}

function leaves(o: Record<string, unknown>, prefix = ''): [string, unknown][] {
  return Object.entries(o).flatMap(([k, v]) => {
    const key = prefix + k
    return v !== null && typeof v === 'object' && !Array.isArray(v) && !key.startsWith('jitgate') ? leaves(v as Record<string, unknown>, `${key}.`) : [[key, v] as [string, unknown]]
  })
}

t.test('ECS: only ECS fields (with their types) or jitgate.*, and valid categorization', async (t) => {
  const events = await realEvents(t)
  const typeOk: Record<string, (v: unknown) => boolean> = {
    keyword: (v) => typeof v === 'string',
    text: (v) => typeof v === 'string',
    wildcard: (v) => typeof v === 'string',
    'keyword[]': (v) => Array.isArray(v) && v.every((x) => typeof x === 'string'),
    long: (v) => Number.isInteger(v),
    date: (v) => typeof v === 'string' && !Number.isNaN(Date.parse(v)),
    ip: (v) => typeof v === 'string' && isIP(v) !== 0,
    'ip[]': (v) => Array.isArray(v) && v.every((x) => typeof x === 'string' && isIP(x) !== 0),
  }
  for (const e of events) {
    const doc = toEcs(e)
    for (const [key, value] of leaves(doc)) {
      if (key === 'jitgate') continue
      const type = ECS_FIELDS[key]
      t.ok(type, `${e.event}: ${key} is an ECS field`)
      if (type) t.ok(typeOk[type]?.(value), `${e.event}: ${key} is a ${type}`)
    }
    const ev = doc.event as { category: string[]; type: string[]; kind: string; outcome: string }
    t.equal(ev.kind, 'event')
    t.ok(['success', 'failure', 'unknown'].includes(ev.outcome))
    for (const type of ev.type) t.ok(ev.category.some((c) => ECS_TYPES[c]?.includes(type)), `${e.event}: type ${type} fits ${ev.category.join(',')}`)
    t.equal((doc.ecs as { version: string }).version, ECS_VERSION)
    t.equal((doc.jitgate as Record<string, unknown>).prev_hash, e.prev_hash, `${e.event}: chain fields under jitgate.`)
  }
  const allowed = toEcs(events.find((e) => e.event === 'access.allowed') as AuditRecord)
  t.match(allowed, { user: { id: 'acme' }, http: { request: { method: 'GET' }, response: { status_code: 200 } }, url: { path: '/crm/a' }, source: { ip: '127.0.0.1' }, event: { outcome: 'success' } })
  const revoked = toEcs(events.find((e) => e.event === 'grant.revoked') as AuditRecord)
  t.match(revoked, { user: { id: 'operator', target: { id: 'acme' } }, event: { category: ['iam'], type: ['user', 'deletion'] } })
})

/** Splits a CEF line into its 7 header fields and its extension, honouring `\|`. */
function parseCef(line: string): { header: string[]; ext: Record<string, string> } {
  const header: string[] = []
  let cur = ''
  let i = 0
  for (; i < line.length && header.length < 7; i++) {
    const c = line[i] as string
    if (c === '\\' && (line[i + 1] === '|' || line[i + 1] === '\\')) cur += line[++i]
    else if (c === '|') (header.push(cur), (cur = ''))
    else cur += c
  }
  const ext: Record<string, string> = {}
  // A key is a run of letters and digits followed by an unescaped `=`; escaped ones read `\=`.
  for (const part of line.slice(i).split(/ (?=[A-Za-z0-9]+=)/)) {
    const eq = part.indexOf('=')
    ext[part.slice(0, eq)] = part.slice(eq + 1).replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c === 'r' ? '\r' : c))
  }
  return { header, ext }
}

t.test('CEF: header and extension escaping, one line per event, values round-trip', async (t) => {
  const events = await realEvents(t)
  for (const e of events) {
    const line = toCef(e)
    t.notMatch(line, /[\r\n\u2028\u2029\u0085]/, `${e.event}: one line`)
    const { header, ext } = parseCef(line)
    t.same(header.slice(0, 5), ['CEF:0', 'jitgate', 'jitgate', PRODUCT.version, e.event], `${e.event}: header`)
    t.ok(Number(header[6]) >= 0 && Number(header[6]) <= 10, 'severity 0-10')
    t.equal(ext.rt, String(Date.parse(e.time as string)))
    t.equal(ext.cn1, String(e.seq))
    t.equal(ext.cs5, e.prev_hash)
    if (e.path !== undefined) t.equal(ext.request, e.path, `${e.event}: request round-trips`)
  }
  const tricky = events.find((e) => typeof e.path === 'string' && e.path.includes('|')) as AuditRecord
  t.ok(tricky, 'a path with | = and \\ was sent')
  const parsed = parseCef(toCef(tricky))
  t.equal(parsed.ext.request, tricky.path)
  t.equal(parsed.header.length, 7, 'the | in the summary did not split the header')
  t.equal(parseCef(toCef(events.find((e) => e.event === 'grant.revoked') as AuditRecord)).ext.reason, 'done = finished | closed')

  t.equal(escapeHeader('a|b\\c\nd'), 'a\\|b\\\\c d')
  t.equal(escapeExtension('a=b\\c\nd\re|f'), 'a\\=b\\\\c\\nd\\re|f')
  t.equal(escapeExtension('x\u2028y\u0085\u001b'), 'x\\u2028y\\u0085\\u001b', 'other breaks and controls written as \\uXXXX')
  const injected = toCef({ ...tricky, path: '/a\r\nCEF:0|evil|evil|1|grant.issued|x|10|act=grant.issued' })
  t.equal(injected.split('\n').length, 1)
  t.equal(parseCef(injected).ext.request, '/a\r\nCEF:0|evil|evil|1|grant.issued|x|10|act=grant.issued', 'a forged CEF record stays inside one value')
})

t.test('one audit log, four sinks, four formats: the same events in the same order', async (t) => {
  const streams = { json: new PassThrough(), ocsf: new PassThrough(), ecs: new PassThrough(), cef: new PassThrough() }
  const text: Record<string, string> = { json: '', ocsf: '', ecs: '', cef: '' }
  for (const [f, s] of Object.entries(streams)) s.on('data', (c: Buffer) => (text[f] += c.toString()))
  const log = createAuditLog({
    sinks: (Object.keys(streams) as (keyof typeof streams)[]).map((format) => ({ type: 'stream' as const, stream: streams[format], format })),
    gatewayId: 'gw',
    policyVersion: () => 'v1',
  })
  for (let i = 0; i < 5; i++) log.emit('admin.denied', { request_id: `r${i}`, method: 'GET', path: `/v1/x|${i}`, status: 401, code: 'unauthorized', client_ip: '::1' })
  await log.close()
  const lines = Object.fromEntries(Object.entries(text).map(([f, s]) => [f, s.split('\n').slice(0, -1)]))
  for (const f of Object.keys(streams)) t.equal(lines[f]?.length, 5, `${f}: 5 lines`)
  const native = (lines.json as string[]).map((l) => JSON.parse(l) as Record<string, unknown>)
  t.same((lines.ocsf as string[]).map((l) => JSON.parse(l)), native.map(toOcsf))
  t.same((lines.ecs as string[]).map((l) => JSON.parse(l)), native.map(toEcs))
  t.same(lines.cef, native.map(toCef))
  t.match(lines.cef?.[0], /c6a2=::1 c6a2Label=Source IPv6 Address/, 'IPv6 clients in c6a2')
})

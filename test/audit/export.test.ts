/**
 * Evidence export from a real gateway's audit file: one vendor's requests, approvals, grants and
 * calls over a period, as JSON and CSV, with the files' integrity; other vendors and other periods
 * left out; CSV cells safe from spreadsheet formulas.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startUpstream } from '../helpers/upstream.js'
import { startTestGateway, call, rawCall } from '../helpers/gateway.js'
import { runCli } from '../helpers/process.js'
import { CSV_COLUMNS, csvCell, type EvidenceReport } from '../../src/audit/export.js'

t.test('jitgate audit export: a vendor’s requests, grants and calls in a period, with integrity', async (t) => {
  const upstream = await startUpstream(t)
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-export-'))
  const trail = join(dir, 'audit.log')
  const g = await startTestGateway(t, {
    policy: `resources:\n  - id: crm-api\n    upstream: UPSTREAM\n    match: { path_prefix: /crm }\n    max_ttl: 1h\n`,
    upstream: upstream.url,
    config: `store: { expiry_sweep_interval: 100ms }\naudit:\n  sinks:\n    - { type: file, path: ${trail} }\n`,
  })
  const jwksFile = join(dir, 'jwks.json')
  writeFileSync(jwksFile, (await call(`${g.controlUrl}/.well-known/jwks.json`)).text)

  // The workflow's events, through the gateway's own audit log, as the workflow writes them.
  const a = g.gw.audit
  const req = { access_request_id: 'r_acme1', subject: 'acme', resource: 'crm-api' }
  a.emit('request.created', { ...req, request_id: 'h1', actor: 'acme', scopes: ['GET /crm/**'], reason: 'SUP-42 data fix', ticket: 'SUP-42' })
  a.emit('request.approval_recorded', { ...req, request_id: 'h2', actor: 'alice', stage: 1, comment: 'ok' })
  a.emit('request.approved', { ...req, request_id: 'h3', actor: 'carol', grant_id: 'g_fromrequest000000' })
  a.emit('request.created', { access_request_id: 'r_globex', subject: 'globex', resource: 'crm-api', actor: 'globex', scopes: ['GET /crm/**'] })
  const grant = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m', reason: 'SUP-42' })
  const other = await g.issue({ subject: 'globex', resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '10m' })
  const brief = await g.issue({ resource: 'crm-api', scopes: ['GET /crm/**'], ttl: '1s' })
  t.equal((await call(`${g.dataUrl}/crm/customers/1`, { token: grant.token })).status, 200)
  t.equal((await call(`${g.dataUrl}/crm/customers/2`, { token: grant.token })).status, 200)
  t.equal((await rawCall(g.dataUrl, '/crm/=HYPERLINK("http://evil"),x', { token: grant.token, method: 'DELETE' })).status, 403)
  t.equal((await call(`${g.dataUrl}/crm/customers/3`, { token: other.token })).status, 200)
  t.equal(await g.revoke(grant.id, '=HYPERLINK("http://evil","done")'), 204)
  t.equal((await call(`${g.dataUrl}/crm/customers/4`, { token: grant.token })).status, 403)
  await g.waitForEvent((e) => e.event === 'grant.expired' && e.grant_id === brief.id)
  await g.stop()

  const from = new Date(Date.now() - 3_600_000).toISOString()
  const to = new Date(Date.now() + 3_600_000).toISOString()
  const out = join(dir, 'acme')
  const run = await runCli(['audit', 'export', '--subprocessor', 'acme', '--from', from, '--to', to, '--out', out, '--jwks', jwksFile, trail])
  t.equal(run.code, 0, run.stderr)
  t.match(run.stdout, /1 request\(s\), 2 grant\(s\), 2 call\(s\) allowed, 2 denied\nintegrity: the files verify, checkpoint signatures included/)

  const report = JSON.parse(readFileSync(`${out}.json`, 'utf8')) as EvidenceReport
  t.equal(report.subprocessor, 'acme')
  t.match(report.integrity, { verified: true, signatures_checked: true, problems: [] })
  t.match(report.sources, [{ file: trail, sha256: /^[0-9a-f]{64}$/ }])
  t.ok(report.events.every((e) => e.subject === 'acme'), 'only this vendor')
  t.notOk(JSON.stringify(report).includes('globex'), "no other vendor's data")
  t.match(report.requests, [
    { access_request_id: 'r_acme1', status: 'approved', decided_by: 'carol', reason: 'SUP-42 data fix', ticket: 'SUP-42', approvals: [{ actor: 'alice', stage: 1 }], grant_id: 'g_fromrequest000000' },
  ])
  t.equal(report.grants.length, 2)
  t.match(report.grants[0], { grant_id: grant.id, issued_by: 'operator', reason: 'SUP-42', revoked_by: 'operator', revoke_reason: '=HYPERLINK("http://evil","done")', calls: { allowed: 2, denied: 2 } })
  t.notOk(report.grants[0]?.expired_at, 'a revoked grant did not expire')
  t.match(report.grants[1], { grant_id: brief.id, expires_at: brief.expires_at, expired_at: brief.expires_at, calls: { allowed: 0, denied: 0 } })
  t.notOk(report.grants[1]?.revoked_at)
  t.match(report.summary, { requests: { created: 1, approval_recorded: 1, approved: 1 }, grants: { issued: 2, revoked: 1, expired: 1 }, calls: { allowed: 2, denied: 2, denied_by_code: { scope_denied: 1, grant_revoked: 1 } } })

  const csv = readFileSync(`${out}.csv`, 'utf8').split('\r\n')
  t.equal(csv[0], CSV_COLUMNS.join(','))
  t.equal(csv.length - 2, report.events.length, 'one row per event')
  t.ok(csv.some((l) => l.includes(',"/crm/=HYPERLINK(%22http:/evil%22),x",')), 'a path with a comma is quoted')
  t.ok(csv.some((l) => l.includes(`,"'=HYPERLINK(""http://evil"",""done"")",`)), "a client's formula is quoted, its quotes doubled, and defused with '")
  t.equal(csvCell('=SUM(A1)'), "'=SUM(A1)", 'a formula is never a formula')
  t.equal(csvCell('a,"b"\nc'), '"a,""b""\nc"')
  t.equal(csvCell(['GET /a', 'POST /b']), 'GET /a; POST /b')

  const empty = await runCli(['audit', 'export', '--subprocessor', 'acme', '--from', '2020-01-01', '--to', '2020-01-31', '--out', join(dir, 'old'), '--jwks', jwksFile, trail])
  t.equal(empty.code, 0)
  const old = JSON.parse(readFileSync(join(dir, 'old.json'), 'utf8')) as EvidenceReport
  t.same([old.events.length, old.requests.length, old.grants.length], [0, 0, 0], 'another period: nothing')
  t.equal(old.to, '2020-02-01T00:00:00.000Z', '--to DATE includes that whole day')

  const lines = readFileSync(trail, 'utf8').split('\n')
  const i = lines.findIndex((l) => l.includes('"event":"access.allowed"'))
  lines[i] = (lines[i] as string).replace('"status":200', '"status":201')
  const tampered = join(dir, 'tampered.log')
  writeFileSync(tampered, lines.join('\n'))
  const bad = await runCli(['audit', 'export', '--subprocessor', 'acme', '--from', from, '--to', to, '--out', join(dir, 'bad'), tampered])
  t.equal(bad.code, 1, 'files that do not verify: exit 1, the report says so')
  t.match(bad.stdout, /integrity: the files do NOT verify/)
  t.match(JSON.parse(readFileSync(join(dir, 'bad.json'), 'utf8')), { integrity: { verified: false, signatures_checked: false } })

  const usage = await runCli(['audit', 'export', '--subprocessor', 'acme', '--from', 'yesterday', '--to', to, '--out', join(dir, 'x'), trail])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /expected a date/)
})

/**
 * Sinks against real destinations: files that rotate, a real HTTP collector on port 0 that goes
 * away and comes back, a real TCP syslog receiver, and a gateway whose collector is down: the data
 * plane keeps answering, and what cannot be kept is counted and reported, never lost silently.
 */
import t from 'tap'
import { createServer, type Server } from 'node:http'
import { createServer as createTcpServer, type Server as TcpServer, type Socket } from 'node:net'
import { existsSync, mkdtempSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { once } from 'node:events'
import { createAuditLog, type AuditLog } from '../../src/audit/audit-log.js'
import { createCheckpointSigner } from '../../src/audit/chain.js'
import { generateSigningKey } from '../../src/authn/keys.js'
import { importJWK, type CryptoKey } from 'jose'
import { verifyAuditFiles } from '../../src/audit/verify.js'
import { startTestGateway, call, sleep } from '../helpers/gateway.js'
import { startUpstream } from '../helpers/upstream.js'
import { auditValidator } from '../helpers/audit-schema.js'

const tmp = (prefix: string) => mkdtempSync(join(tmpdir(), `jitgate-${prefix}-`))

/** Signed checkpoints, so a chain ends sealed. */
async function checkpoints() {
  const { privateJwk } = await generateSigningKey()
  return { signer: createCheckpointSigner({ kid: privateJwk.kid as string, key: (await importJWK(privateJwk, 'EdDSA')) as CryptoKey }) }
}

function emitMany(log: AuditLog, n: number, from = 0): void {
  for (let i = from; i < from + n; i++) {
    log.emit('access.denied', { request_id: `r${i}`, method: 'GET', path: `/x/${i}`, status: 401, code: 'token_missing', detail: 'no token', client_ip: '127.0.0.1', duration_ms: 0.1, protocol: 'http' })
  }
}

function streamLines(): { stream: PassThrough; lines: () => string[] } {
  const stream = new PassThrough()
  let text = ''
  stream.on('data', (c: Buffer) => (text += c.toString()))
  return { stream, lines: () => text.split('\n').slice(0, -1) }
}

async function waitFor(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await sleep(10)
  }
}

/** A collector on a fixed port (0 = any) that records every line it receives, batch by batch. */
async function startCollector(port = 0): Promise<{ port: number; lines: string[]; batches: number; close(): Promise<void> }> {
  const state = { lines: [] as string[], batches: 0 }
  const server: Server = createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => (body += c))
    req.on('end', () => {
      state.batches++
      state.lines.push(...body.split('\n').filter((l) => l !== ''))
      res.writeHead(204).end()
    })
  })
  server.listen(port, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as { port: number }).port,
    get lines() {
      return state.lines
    },
    get batches() {
      return state.batches
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

t.test('file sink: rotation by size keeps every line, in order, verifiable across the files', async (t) => {
  const dir = tmp('rotate')
  const path = join(dir, 'audit.log')
  const log = createAuditLog({ sinks: [{ type: 'file', path, rotate: { maxBytes: 4096, keep: 0 } }], gatewayId: 'gw', policyVersion: () => 'v', checkpoints: await checkpoints() })
  emitMany(log, 200)
  await log.close()
  const rotated = readdirSync(dir).filter((f) => f !== 'audit.log').sort()
  t.ok(rotated.length >= 5, `rotated ${rotated.length} times`)
  for (const f of rotated) {
    t.match(f, /^audit\.log\.\d{8}T\d{6}\.\d{3}Z$/)
    t.ok(statSync(join(dir, f)).size < 4096 + 1024, `${f} near the size bound`)
  }
  const files = [...rotated.map((f) => join(dir, f)), path]
  const seqs = files.flatMap((f) => readFileSync(f, 'utf8').split('\n').slice(0, -1).map((l) => (JSON.parse(l) as { seq: number }).seq))
  t.same(seqs, Array.from({ length: 201 }, (_, i) => i + 1), 'every event once, in order, across the files')
  t.ok((await verifyAuditFiles(files, { partial: false })).ok, 'the chain verifies across the rotation')

  const kept = tmp('keep')
  const log2 = createAuditLog({ sinks: [{ type: 'file', path: join(kept, 'a.log'), rotate: { maxBytes: 2048, keep: 2 } }], gatewayId: 'gw', policyVersion: () => 'v' })
  emitMany(log2, 100)
  await log2.close()
  t.equal(readdirSync(kept).filter((f) => f !== 'a.log').length, 2, 'keep: 2 leaves the two newest rotated files')
})

t.test('file sink: lines are written in batches, in order, and a lone line still reaches the file without a flush', async (t) => {
  const dir = tmp('batch')
  const path = join(dir, 'audit.log')
  const log = createAuditLog({ sinks: [{ type: 'file', path }], gatewayId: 'gw', policyVersion: () => 'v' })
  // Well past one batch (64 Ki characters) in one synchronous burst.
  emitMany(log, 2000)
  await log.flush()
  const seqs = () => readFileSync(path, 'utf8').split('\n').slice(0, -1).map((l) => (JSON.parse(l) as { seq: number }).seq)
  t.same(seqs(), Array.from({ length: 2000 }, (_, i) => i + 1), 'after flush: every line once, in order')
  emitMany(log, 1, 2000)
  await waitFor(() => seqs().length === 2001)
  t.pass('the timer wrote the lone line')
  await log.close()
  t.ok((await verifyAuditFiles([path], { partial: true })).ok, 'the chain verifies')
})

t.test('file sink: rotation by time', async (t) => {
  const dir = tmp('rotate-time')
  const path = join(dir, 'audit.log')
  const log = createAuditLog({ sinks: [{ type: 'file', path, rotate: { intervalMs: 100, keep: 0 } }], gatewayId: 'gw', policyVersion: () => 'v', checkpoints: await checkpoints() })
  for (let i = 0; i < 6; i++) {
    emitMany(log, 3, i * 3)
    await sleep(60)
  }
  await log.close()
  const files = [...readdirSync(dir).filter((f) => f !== 'audit.log').sort().map((f) => join(dir, f)), path]
  t.ok(files.length >= 2, `${files.length} files`)
  t.ok((await verifyAuditFiles(files)).ok, 'nothing lost or reordered by time rotation')
})

t.test('HTTP collector: stopped for a while, then back on its port: everything delivered once, in order', async (t) => {
  const collector = await startCollector()
  const port = collector.port
  const spoolDir = tmp('spool')
  const copy = streamLines()
  const log = createAuditLog({
    sinks: [
      { type: 'http', name: 'collector', url: `http://127.0.0.1:${port}/ingest`, spoolDir, batchSize: 20, batchWaitMs: 10, retryMinMs: 20, retryMaxMs: 200 },
      { type: 'stream', stream: copy.stream },
    ],
    gatewayId: 'gw',
    policyVersion: () => 'v',
  })
  await log.opened
  emitMany(log, 50)
  await waitFor(() => collector.lines.length === 50)
  t.ok(collector.batches >= 3, 'batched')

  await collector.close()
  emitMany(log, 150, 50)
  await waitFor(() => existsSync(join(spoolDir, 'spool.ndjson')) && statSync(join(spoolDir, 'spool.ndjson')).size > 0)
  await sleep(300)
  t.equal(collector.lines.length, 50, 'nothing delivered while the collector is down')

  const back = await startCollector(port)
  emitMany(log, 50, 200)
  await waitFor(() => back.lines.length >= 200)
  // close() waits until the collector has everything (or the close timeout passes).
  await log.close()
  const delivered = [...collector.lines, ...back.lines]
  t.same(delivered, copy.lines(), 'the collector got exactly the lines the audit log wrote, once each, in order')
  t.equal(statSync(join(spoolDir, 'spool.ndjson')).size, 0, 'the spool is emptied once delivered')
  await back.close()
})

t.test('HTTP collector: what could not be delivered before shutdown is delivered first at the next start', async (t) => {
  const collector = await startCollector()
  const port = collector.port
  await collector.close()
  const spoolDir = tmp('spool-restart')
  const sink = { type: 'http' as const, name: 'collector', url: `http://127.0.0.1:${port}/`, spoolDir, batchWaitMs: 10, retryMinMs: 20, retryMaxMs: 100, closeTimeoutMs: 200 }
  const first = streamLines()
  const a = createAuditLog({ sinks: [sink, { type: 'stream', stream: first.stream }], gatewayId: 'gw', policyVersion: () => 'v' })
  emitMany(a, 30)
  await a.close()
  t.ok(statSync(join(spoolDir, 'spool.ndjson')).size > 0, 'kept in the spool at shutdown')

  const back = await startCollector(port)
  const second = streamLines()
  const b = createAuditLog({ sinks: [sink, { type: 'stream', stream: second.stream }], gatewayId: 'gw', policyVersion: () => 'v' })
  await b.opened
  emitMany(b, 5)
  await b.close()
  await waitFor(() => back.lines.length === first.lines().length + second.lines().length)
  t.same(back.lines, [...first.lines(), ...second.lines()], 'the previous run first, then this one, each line once')
  await back.close()
})

t.test('a bounded spool: past it, lines are dropped, counted and reported in audit.dropped', async (t) => {
  const collector = await startCollector()
  await collector.close()
  const copy = streamLines()
  const drops: [string, number][] = []
  const log = createAuditLog({
    sinks: [
      { type: 'http', name: 'siem', url: `http://127.0.0.1:${collector.port}/`, spoolDir: tmp('spool-full'), spoolMaxBytes: 4096, memoryMaxBytes: 1024, retryMinMs: 50, retryMaxMs: 100, closeTimeoutMs: 100 },
      { type: 'stream', stream: copy.stream },
    ],
    gatewayId: 'gw',
    policyVersion: () => 'v',
    onDrop: (sink, n) => drops.push([sink, n]),
  })
  await log.opened
  emitMany(log, 100)
  await waitFor(() => copy.lines().some((l) => l.includes('"event":"audit.dropped"')), 5000)
  await log.close()
  const total = drops.reduce((n, [, c]) => n + c, 0)
  t.ok(total > 50, `${total} lines dropped past the 4 KiB spool`)
  t.ok(drops.every(([sink]) => sink === 'siem'))
  const events = copy.lines().map((l) => JSON.parse(l) as Record<string, unknown>)
  const reports = events.filter((e) => e.event === 'audit.dropped')
  const validate = auditValidator()
  for (const r of reports) t.same(validate(r), [], 'audit.dropped valid')
  // Each report goes to the failing sink too, where it may be dropped and counted for a later
  // report; only the last such drop (after the final report) can go unreported.
  const reported = reports.reduce((n, r) => n + (r.dropped as number), 0)
  t.ok(reported <= total && reported >= total - 1, `${reported} of ${total} drops reported in the trail`)
  t.match(reports[0], { sink: 'siem' })
})

t.test('syslog: RFC 5424 over TCP with octet counting; reconnects after the receiver restarts', async (t) => {
  const frames: string[] = []
  let server: TcpServer | undefined
  const sockets = new Set<Socket>()
  const listen = async (port: number) => {
    server = createTcpServer((s) => {
      sockets.add(s)
      let buf = Buffer.alloc(0)
      s.on('data', (c: Buffer) => {
        buf = Buffer.concat([buf, c])
        for (;;) {
          const sp = buf.indexOf(32)
          if (sp === -1) break
          const len = Number(buf.subarray(0, sp).toString())
          if (buf.length < sp + 1 + len) break
          frames.push(buf.subarray(sp + 1, sp + 1 + len).toString('utf8'))
          buf = buf.subarray(sp + 1 + len)
        }
      })
      s.on('close', () => sockets.delete(s))
    })
    server.listen(port, '127.0.0.1')
    await once(server, 'listening')
    return (server.address() as { port: number }).port
  }
  const port = await listen(0)
  const log = createAuditLog({
    sinks: [{ type: 'syslog', host: '127.0.0.1', port, format: 'cef', retryMinMs: 20, retryMaxMs: 100 }],
    gatewayId: 'gw',
    policyVersion: () => 'v',
  })
  emitMany(log, 3)
  log.emit('grant.revoked', { request_id: 'r', actor: 'operator', reason: 'line\nbreak', grant_id: 'g_1', subject: 'acme', resource: 'crm' })
  await waitFor(() => frames.length === 4)
  const m = /^<(\d+)>1 (\S+) (\S+) jitgate (\d+) (\S+) - \ufeff(.*)$/s.exec(frames[0] as string)
  t.ok(m, 'RFC 5424 header, then the BOM and the message')
  t.equal(Number(m?.[1]), 13 * 8 + 5, 'facility 13 (log audit), severity 5 (notice) for a denial')
  t.equal(m?.[5], 'access.denied', 'MSGID is the event')
  t.match(m?.[6], /^CEF:0\|jitgate\|jitgate\|/, 'the message is the sink format (CEF)')
  t.equal(Number(/^<(\d+)>/.exec(frames[3] as string)?.[1]), 13 * 8 + 6, 'informational for a revocation')
  t.notOk((frames[3] as string).includes('\n'), 'a newline in a value stays escaped inside the frame')

  for (const s of sockets) s.destroy()
  await new Promise<void>((resolve) => server?.close(() => resolve()))
  // Let the sink see its connection close, so these lines wait for the next one.
  await sleep(200)
  emitMany(log, 5, 10)
  await sleep(100)
  await listen(port)
  await waitFor(() => frames.length === 9)
  t.match(frames.slice(4).map((f) => /access\.denied/.test(f)), [true, true, true, true, true], 'frames written while disconnected arrive after reconnecting')
  await log.close()
  for (const s of sockets) s.destroy()
  server?.close()
})

t.test('a gateway whose collector is down keeps serving, counts and reports the drops', async (t) => {
  const upstream = await startUpstream(t)
  const dead = await startCollector()
  await dead.close()
  const g = await startTestGateway(t, {
    policy: `resources:\n  - id: crm\n    upstream: UPSTREAM\n    match: { path_prefix: /crm }\n    max_ttl: 1h\n`,
    upstream: upstream.url,
    config: `audit:\n  sinks:\n    - type: http\n      name: siem\n      url: http://127.0.0.1:${dead.port}/\n      format: ocsf\n      batch_wait: 10ms\n      spool_max_size: 8KiB\n`,
  })
  const grant = await g.issue({ resource: 'crm', scopes: ['GET /crm/**'], ttl: '10m' })
  const started = Date.now()
  for (let i = 0; i < 100; i++) t.equal((await call(`${g.dataUrl}/crm/${i}`, { token: grant.token })).status, 200)
  t.ok(Date.now() - started < 20_000, 'the data plane was not held back by the collector')
  await waitFor(() => g.audit.some((e) => e.event === 'audit.dropped'), 5000)
  const metrics = await call(`${g.controlUrl}/metrics`)
  const m = /jitgate_audit_dropped_total\{sink="siem"\} (\d+)/.exec(metrics.text)
  t.ok(m && Number(m[1]) > 0, `metric counts the drops (${m?.[1]})`)
  t.match(g.audit.find((e) => e.event === 'audit.dropped'), { sink: 'siem', dropped: Number })
})

/**
 * Forwarding engines compared on 127.0.0.1, for picking one by measurement:
 *
 *   node --import tsx bench/forwarders.ts [seconds per slice, default 0.25]
 *
 * One upstream process; each proxy variant runs in its own process in front of it, so the CPU
 * time per request is the proxy's alone (process.cpuUsage read over IPC around each measured
 * slice). The load generator (this process) keeps 50 requests in flight over 50 keep-alive
 * connections per proxy (undici Pool). After a warm-up of every process, the variants take turns
 * in short slices (order reversed every other round), as many rounds as the budget allows, and
 * each figure is the median over the rounds: on a shared machine, load from elsewhere then hits
 * every variant alike instead of whichever ran at that moment. The minimum CPU per request is
 * shown too: it is the figure least disturbed by other processes. Latency is per request, client
 * side. Variants:
 * - `http-proxy bare`: `proxy.web()` with a keep-alive agent, nothing else;
 * - `http-proxy + headers`: the same plus `buildUpstreamHeaders` (the work the gateway needs);
 * - `undici forwarder`: `buildUpstreamHeaders` + `createForwarder().forward()`.
 * Two workloads: GET with a 1 KiB response, POST with a 32 KiB body echoed back.
 * Total time stays under 20 s at the default slice length.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { Agent as HttpAgent, createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { fileURLToPath } from 'node:url'
import httpProxy from 'http-proxy'
import { Pool } from 'undici'
import { createForwarder } from '../src/forward/forwarder.js'
import { buildUpstreamHeaders, type UpstreamHeaderContext } from '../src/forward/headers.js'

const VARIANTS = ['http-proxy bare', 'http-proxy + headers', 'undici forwarder'] as const
type Variant = (typeof VARIANTS)[number]

const WORKLOADS = {
  'GET 1 KiB': { method: 'GET', body: undefined },
  'POST 32 KiB': { method: 'POST', body: Buffer.alloc(32 * 1024, 'p') },
} as const
type Workload = keyof typeof WORKLOADS

const CONCURRENCY = 50
const WARMUP_MS = 300
const MAX_ROUNDS = 12
/** Wall-clock budget of the whole run, from process start. */
const BUDGET_MS = 16_000

type ToParent = { port: number } | { cpuMicros: number }

/** Child side: serve, report the port, answer CPU readings. */
function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): void {
  const server = createServer({ keepAliveTimeout: 60_000 }, handler)
  server.listen(0, '127.0.0.1', () => send({ port: (server.address() as AddressInfo).port }))
  process.on('message', () => {
    const { user, system } = process.cpuUsage()
    send({ cpuMicros: user + system })
  })
  process.on('disconnect', () => process.exit(0))
}

function send(message: ToParent): void {
  process.send?.(message)
}

function runUpstream(): void {
  const body = Buffer.alloc(1024, 'u')
  serve((req, res) => {
    if (req.method === 'POST') {
      req.pipe(res)
      return
    }
    req.resume()
    res.setHeader('content-type', 'application/octet-stream')
    res.end(body)
  })
}

function runProxy(variant: Variant, upstreamOrigin: string): void {
  const upstreamHost = new URL(upstreamOrigin).host
  const context = (req: IncomingMessage): UpstreamHeaderContext => ({
    clientIp: req.socket.remoteAddress ?? '',
    proto: 'https',
    host: req.headers.host ?? '',
    requestId: 'bench',
    identity: { subject: 'acme', grantId: 'g-1' },
    inject: [['x-upstream-key', 'k-123']],
    upstreamHost,
    upgrade: false,
  })

  if (variant === 'undici forwarder') {
    const forwarder = createForwarder()
    serve((req, res) => {
      const headers = buildUpstreamHeaders(req, context(req))
      void forwarder.forward(req, res, { origin: upstreamOrigin, path: req.url ?? '/', headers, timeoutMs: 10_000 }).then((outcome) => {
        if (!outcome.ok && !outcome.responseStarted) res.writeHead(502).end()
      })
    })
    return
  }

  const proxy = httpProxy.createProxyServer({
    target: upstreamOrigin,
    agent: new HttpAgent({ keepAlive: true, maxSockets: 128 }),
    xfwd: false,
  })
  proxy.on('error', (_err, _req, res) => {
    if ('writeHead' in res && !res.headersSent) res.writeHead(502).end()
    else res.destroy()
  })
  const withHeaders = variant === 'http-proxy + headers'
  serve((req, res) => {
    if (withHeaders) req.headers = buildUpstreamHeaders(req, context(req)) as IncomingMessage['headers']
    proxy.web(req, res)
  })
}

interface Result {
  readonly variant: Variant
  readonly workload: Workload
  readonly requests: number
  readonly errors: number
  readonly seconds: number
  readonly p50: number
  readonly p99: number
  readonly cpuMicrosPerRequest: number
}

async function start(args: string[]): Promise<{ child: ChildProcess; origin: string }> {
  const child = fork(fileURLToPath(import.meta.url), args, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const [message] = (await once(child, 'message')) as [ToParent]
  if (!('port' in message)) throw new Error('child did not report its port')
  return { child, origin: `http://127.0.0.1:${message.port}` }
}

async function cpuOf(child: ChildProcess): Promise<number> {
  const reply = once(child, 'message') as Promise<[ToParent]>
  child.send('cpu')
  const [message] = await reply
  if (!('cpuMicros' in message)) throw new Error('child did not report its CPU time')
  return message.cpuMicros
}

/** Keeps CONCURRENCY requests in flight until `ms` has passed; returns per-request latencies. */
async function load(pool: Pool, workload: Workload, ms: number): Promise<{ latencies: number[]; errors: number }> {
  const { method, body } = WORKLOADS[workload]
  const deadline = performance.now() + ms
  const latencies: number[] = []
  let errors = 0
  const worker = async (): Promise<void> => {
    while (performance.now() < deadline) {
      const started = performance.now()
      try {
        const res = await pool.request({
          path: '/bench?q=1',
          method,
          headers: { authorization: 'Bearer not.a.token', 'x-forwarded-for': '10.0.0.1', accept: '*/*' },
          ...(body !== undefined ? { body } : {}),
        })
        await res.body.dump({ limit: Infinity })
        if (res.statusCode === 200) latencies.push(performance.now() - started)
        else errors++
      } catch {
        errors++
      }
    }
  }
  await Promise.all(Array.from({ length: CONCURRENCY }, worker))
  return { latencies, errors }
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN
}

interface Proxy {
  readonly variant: Variant
  readonly child: ChildProcess
  readonly pool: Pool
}

async function slice(proxy: Proxy, workload: Workload, ms: number): Promise<Result> {
  const cpuBefore = await cpuOf(proxy.child)
  const started = performance.now()
  const { latencies, errors } = await load(proxy.pool, workload, ms)
  const seconds = (performance.now() - started) / 1000
  const cpuMicros = (await cpuOf(proxy.child)) - cpuBefore
  latencies.sort((a, b) => a - b)
  return {
    variant: proxy.variant,
    workload,
    requests: latencies.length,
    errors,
    seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    cpuMicrosPerRequest: cpuMicros / Math.max(1, latencies.length + errors),
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2
}

async function main(): Promise<void> {
  const sliceSeconds = Number(process.argv[2] ?? 0.25)
  const workloads = Object.keys(WORKLOADS) as Workload[]
  const upstream = await start(['upstream'])
  const proxies: Proxy[] = []
  const rows: Record<string, string | number>[] = []
  let rounds = 0
  try {
    for (const { child, origin } of await Promise.all(VARIANTS.map((v) => start(['proxy', v, upstream.origin])))) {
      const variant = VARIANTS[proxies.length] as Variant
      proxies.push({ variant, child, pool: new Pool(origin, { connections: CONCURRENCY, pipelining: 1 }) })
    }
    for (const proxy of proxies) for (const workload of workloads) await load(proxy.pool, workload, WARMUP_MS)

    // Whole rounds only, and only while they fit in the 20 s budget (process start-up included).
    const roundMs = workloads.length * proxies.length * (sliceSeconds * 1000 + 20)
    const slices: Result[] = []
    while (rounds < MAX_ROUNDS && (rounds === 0 || performance.now() + roundMs < BUDGET_MS)) {
      const order = rounds % 2 === 0 ? proxies : [...proxies].reverse()
      for (const workload of workloads) {
        for (const proxy of order) slices.push(await slice(proxy, workload, sliceSeconds * 1000))
      }
      rounds++
    }
    for (const workload of workloads) {
      for (const variant of VARIANTS) {
        const mine = slices.filter((r) => r.workload === workload && r.variant === variant)
        rows.push({
          workload,
          variant,
          'req/s': Math.round(median(mine.map((r) => r.requests / r.seconds))),
          'p50 ms': median(mine.map((r) => r.p50)).toFixed(2),
          'p99 ms': median(mine.map((r) => r.p99)).toFixed(2),
          'proxy CPU µs/req': Math.round(median(mine.map((r) => r.cpuMicrosPerRequest))),
          'min CPU µs/req': Math.round(Math.min(...mine.map((r) => r.cpuMicrosPerRequest))),
          errors: mine.reduce((n, r) => n + r.errors, 0),
        })
      }
    }
  } finally {
    await Promise.all(proxies.map((p) => p.pool.close()))
    for (const p of proxies) p.child.disconnect()
    upstream.child.disconnect()
  }
  console.log(
    `${CONCURRENCY} concurrent keep-alive connections, 127.0.0.1, node ${process.version}; ` +
      `median of ${rounds} interleaved ${sliceSeconds} s slices per row`,
  )
  console.table(rows)
}

const [role, variant, upstreamOrigin] = process.argv.slice(2)
if (role === 'upstream') runUpstream()
else if (role === 'proxy' && upstreamOrigin !== undefined) runProxy(variant as Variant, upstreamOrigin)
else await main()

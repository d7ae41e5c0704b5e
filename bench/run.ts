/**
 * `npm run bench`: jitgate's cost against a bare forwarder, measured in one run on this machine.
 *
 * Targets, each its own process: the upstream direct; a bare forwarder (jitgate's forwarding
 * module with no checks); jitgate on the memory store; jitgate on Redis (a private redis-server).
 * A separate load-generator process drives each in turn (rounds interleaved, so drift in the
 * machine's load hits every target alike) and the script prints requests/s, p50, p99, the
 * target's CPU time per request and its memory, each with its ratio to the bare forwarder.
 *
 * Targets (issue #2): jitgate with Redis keeps ≥ 0.85 of the bare forwarder's throughput and
 * ≤ 1.25× its p99. This prints the verdict; it never fails a test run (timing varies by machine).
 *
 * Env: BENCH_SECONDS (default 5), BENCH_ROUNDS (default 2), BENCH_CONNECTIONS (default 32).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const SECONDS = Number(process.env.BENCH_SECONDS ?? 5)
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2)
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 32)
const ADMIN = 'bench-admin-token-0123456789'
const TSX = ['--import', 'tsx']

const children: ChildProcess[] = []
const tmp = mkdtempSync(join(tmpdir(), 'jitgate-bench-'))

function start(args: string[], env: NodeJS.ProcessEnv = {}): ChildProcess {
  const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  return child
}

function firstLine(child: ChildProcess, stream: 'stdout' | 'stderr', match: (line: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = ''
    const onData = (c: Buffer) => {
      buf += c.toString()
      const line = buf.split('\n').slice(0, -1).find(match)
      if (line !== undefined) {
        child[stream]?.off('data', onData)
        resolve(line)
      }
    }
    child[stream]?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`${child.spawnargs.slice(-2).join(' ')} exited (${code}) before it was ready:\n${buf}`)))
  })
}

async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r))
  const port = (s.address() as { port: number }).port
  await new Promise((r) => s.close(r))
  return port
}

async function startRedis(): Promise<string> {
  const port = await freePort()
  const child = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  await firstLine(child, 'stdout', (l) => l.includes('Ready to accept connections'))
  return `redis://127.0.0.1:${port}`
}

async function startJitgate(name: string, upstream: string, env: NodeJS.ProcessEnv): Promise<{ url: string; pid: number; token: string }> {
  const dir = join(tmp, name)
  mkdirSync(join(dir, 'policies'), { recursive: true })
  writeFileSync(
    join(dir, 'policies', 'bench.yaml'),
    `resources:\n  - id: api\n    upstream: ${upstream}\n    match: { path_prefix: /api }\n    max_ttl: 2h\n    credentials:\n      - { header: Authorization, env: BENCH_UPSTREAM_TOKEN, prefix: "Bearer " }\n`,
  )
  const child = start([join(ROOT, 'bin', 'jitgate.js'), 'serve'], {
    JITGATE_DATA_LISTEN: '127.0.0.1:0',
    JITGATE_CONTROL_LISTEN: '127.0.0.1:0',
    JITGATE_POLICY_DIR: join(dir, 'policies'),
    JITGATE_DATA_DIR: join(dir, 'data'),
    JITGATE_AUDIT_OUTPUT: join(dir, 'audit.log'),
    JITGATE_ADMIN_TOKEN: ADMIN,
    JITGATE_GATEWAY_ID: name,
    BENCH_UPSTREAM_TOKEN: 'bench-upstream-secret',
    ...env,
  })
  const line = await firstLine(child, 'stderr', (l) => l.includes('"jitgate listening"'))
  const { data, control } = JSON.parse(line) as { data: string; control: string }
  const res = await fetch(`${control}/v1/grants`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ subject: 'bench', resource: 'api', scopes: ['GET /api/**'], ttl: '1h' }),
  })
  const grant = (await res.json()) as { token: string }
  return { url: `${data}/api/items/1`, pid: child.pid as number, token: grant.token }
}

interface Target {
  readonly name: string
  readonly url: string
  readonly pid: number | undefined
  readonly headers: Record<string, string>
}

interface Sample {
  rps: number
  p50Ms: number
  p99Ms: number
  cpuUsPerReq: number
  rssMb: number
  errors: number
  non2xx: number
}

/** utime + stime of a process, in µs (Linux /proc; clock ticks are 100 Hz here). */
function cpuUs(pid: number | undefined): number {
  if (pid === undefined) return 0
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.split(' ') ?? []
  return (Number(fields[11]) + Number(fields[12])) * 10_000
}

function rssMb(pid: number | undefined): number {
  if (pid === undefined) return 0
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : 0
}

async function measure(target: Target): Promise<Sample> {
  const lg = start([...TSX, join(ROOT, 'bench', 'lib', 'loadgen.ts'), JSON.stringify({ url: target.url, connections: CONNECTIONS, durationMs: SECONDS * 1000, warmupMs: 1000, headers: target.headers })])
  let out = ''
  lg.stdout?.on('data', (c: Buffer) => (out += c.toString()))
  // CPU is sampled over the whole run (warm-up included), then divided by all requests made.
  const cpu0 = cpuUs(target.pid)
  await new Promise((r) => lg.once('exit', r))
  const cpu1 = cpuUs(target.pid)
  const r = JSON.parse(out) as { requests: number; rps: number; p50Ms: number; p99Ms: number; errors: number; non2xx: number }
  const total = r.rps * (SECONDS + 1)
  return { rps: r.rps, p50Ms: r.p50Ms, p99Ms: r.p99Ms, cpuUsPerReq: target.pid ? (cpu1 - cpu0) / total : 0, rssMb: rssMb(target.pid), errors: r.errors, non2xx: r.non2xx }
}

function mean(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length
}

async function main(): Promise<void> {
  console.log(`jitgate benchmark: ${ROUNDS} round(s) × ${SECONDS}s per target, ${CONNECTIONS} connections, 127.0.0.1 only`)
  const upstreamProc = start([...TSX, join(ROOT, 'bench', 'lib', 'bare-upstream.ts')])
  const upstream = `http://127.0.0.1:${(await firstLine(upstreamProc, 'stdout', () => true)).trim()}`
  const bareProc = start([...TSX, join(ROOT, 'bench', 'lib', 'bare-forwarder.ts'), upstream])
  const bare = `http://127.0.0.1:${(await firstLine(bareProc, 'stdout', () => true)).trim()}`
  const redisUrl = await startRedis()
  const mem = await startJitgate('jitgate-memory', upstream, {})
  const red = await startJitgate('jitgate-redis', upstream, { REDIS_URL: redisUrl })

  const targets: Target[] = [
    { name: 'upstream direct', url: `${upstream}/api/items/1`, pid: upstreamProc.pid, headers: {} },
    { name: 'bare forwarder', url: `${bare}/api/items/1`, pid: bareProc.pid, headers: {} },
    { name: 'jitgate (memory)', url: mem.url, pid: mem.pid, headers: { authorization: `Bearer ${mem.token}` } },
    { name: 'jitgate (redis)', url: red.url, pid: red.pid, headers: { authorization: `Bearer ${red.token}` } },
  ]
  const samples = new Map<string, Sample[]>(targets.map((t) => [t.name, []]))
  for (let round = 1; round <= ROUNDS; round++) {
    for (const target of targets) {
      const s = await measure(target)
      if (s.errors > 0 || s.non2xx > 0) throw new Error(`${target.name}: ${s.errors} errors, ${s.non2xx} non-2xx responses`)
      samples.get(target.name)?.push(s)
      process.stderr.write(`  round ${round} ${target.name.padEnd(17)} ${s.rps.toFixed(0)} req/s\n`)
    }
  }
  const summary = new Map(
    targets.map((t) => {
      const ss = samples.get(t.name) as Sample[]
      return [t.name, { rps: mean(ss.map((s) => s.rps)), p50: mean(ss.map((s) => s.p50Ms)), p99: mean(ss.map((s) => s.p99Ms)), cpu: mean(ss.map((s) => s.cpuUsPerReq)), rss: Math.max(...ss.map((s) => s.rssMb)) }]
    }),
  )
  const base = summary.get('bare forwarder') as { rps: number; p99: number; cpu: number }
  console.log('')
  console.log('target             req/s   ×bare   p50 ms  p99 ms  ×bare   CPU µs/req  ×bare   RSS MB')
  for (const [name, s] of summary) {
    console.log(
      `${name.padEnd(17)} ${s.rps.toFixed(0).padStart(6)}  ${(s.rps / base.rps).toFixed(2).padStart(5)}  ${s.p50.toFixed(2).padStart(7)} ${s.p99.toFixed(2).padStart(7)}  ${(s.p99 / base.p99).toFixed(2).padStart(5)}  ${s.cpu.toFixed(0).padStart(10)}  ${(s.cpu / base.cpu).toFixed(2).padStart(5)}  ${s.rss.toFixed(0).padStart(6)}`,
    )
  }
  const redis = summary.get('jitgate (redis)') as { rps: number; p99: number }
  const tput = redis.rps / base.rps
  const p99 = redis.p99 / base.p99
  console.log('')
  console.log(`target: jitgate (redis) throughput ≥ 0.85 × bare: ${tput.toFixed(2)} ${tput >= 0.85 ? 'MET' : 'NOT MET'}`)
  console.log(`target: jitgate (redis) p99        ≤ 1.25 × bare: ${p99.toFixed(2)} ${p99 <= 1.25 ? 'MET' : 'NOT MET'}`)
  console.log('(2 cores shared by load generator, proxy, upstream and Redis: ratios within one run are what counts)')
}

main()
  .catch((err: unknown) => {
    console.error(`bench failed: ${(err as Error).message}`)
    process.exitCode = 1
  })
  .finally(() => {
    for (const c of children) c.kill('SIGTERM')
    rmSync(tmp, { recursive: true, force: true })
  })

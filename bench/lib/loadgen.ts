/**
 * A closed-loop HTTP load generator, run as its own process so its CPU is not charged to the
 * proxy under test: `connections` keep-alive connections, each sending the next request as soon
 * as the previous answered, for `durationMs` after a warm-up. Prints one JSON result line.
 *
 *   node --import tsx bench/lib/loadgen.ts '{"url":"http://127.0.0.1:8080/x","connections":32,"durationMs":5000,"warmupMs":1000,"headers":{}}'
 */
import { Pool } from 'undici'

export interface LoadOptions {
  readonly url: string
  readonly connections: number
  readonly durationMs: number
  readonly warmupMs: number
  readonly headers: Record<string, string>
}

export interface LoadResult {
  readonly requests: number
  readonly errors: number
  readonly non2xx: number
  readonly rps: number
  readonly p50Ms: number
  readonly p99Ms: number
}

async function run(opts: LoadOptions): Promise<LoadResult> {
  const url = new URL(opts.url)
  const pool = new Pool(url.origin, { connections: opts.connections, pipelining: 1, keepAliveTimeout: 30_000 })
  const path = url.pathname + url.search
  const latencies: number[] = []
  let errors = 0
  let non2xx = 0
  let measuring = false
  let stop = false

  async function worker(): Promise<void> {
    while (!stop) {
      const started = performance.now()
      try {
        const res = await pool.request({ path, method: 'GET', headers: opts.headers })
        await res.body.dump()
        if (measuring) {
          latencies.push(performance.now() - started)
          if (res.statusCode < 200 || res.statusCode > 299) non2xx++
        }
      } catch {
        if (measuring) errors++
      }
    }
  }

  const workers = Array.from({ length: opts.connections }, () => worker())
  await new Promise((r) => setTimeout(r, opts.warmupMs))
  measuring = true
  const t0 = performance.now()
  await new Promise((r) => setTimeout(r, opts.durationMs))
  measuring = false
  const elapsed = performance.now() - t0
  stop = true
  await Promise.all(workers)
  await pool.close()
  latencies.sort((a, b) => a - b)
  const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? 0
  return {
    requests: latencies.length,
    errors,
    non2xx,
    rps: (latencies.length / elapsed) * 1000,
    p50Ms: pct(50),
    p99Ms: pct(99),
  }
}

const opts = JSON.parse(process.argv[2] ?? '{}') as LoadOptions
run(opts).then(
  (r) => process.stdout.write(`${JSON.stringify(r)}\n`),
  (err: unknown) => {
    process.stderr.write(`loadgen failed: ${(err as Error).message}\n`)
    process.exitCode = 1
  },
)

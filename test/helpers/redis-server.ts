/**
 * A private, throwaway redis-server for one test file, so tests can stop, kill and freeze it
 * without disturbing anyone else's Redis.
 *
 *   const redis = await startRedis(t)                      // TCP on an ephemeral 127.0.0.1 port
 *   const redis = await startRedis(t, { unixSocket: true }) // also a unix socket; url is unix://
 *
 * Cleanup: startRedis registers `t.teardown` (stop the server, delete its temp dir), and a
 * process 'exit' hook SIGKILLs a server still running if the test process dies before teardown.
 * Nothing is persisted (`--save "" --appendonly no`), so a restart comes back empty.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'

export interface RedisServer {
  /** What createRedisGrantStore takes: `redis://127.0.0.1:PORT`, or `unix:///…/redis.sock`. */
  readonly url: string
  /** The TCP port; the server listens on it even in unix socket mode. */
  readonly port: number
  /** Graceful shutdown (SIGTERM; resumes a paused server first). No-op when not running. */
  stop(): Promise<void>
  /** Starts again on the same port and socket; resolves once it answers PING. */
  start(): Promise<void>
  /** SIGSTOP: the server keeps its sockets open but answers nothing (a hung Redis). */
  pause(): void
  /** SIGCONT. */
  resume(): void
  /** SIGKILL: a crash, no shutdown sequence. */
  kill(): Promise<void>
}

const READY_TIMEOUT_MS = 5000
const STOP_GRACE_MS = 3000

/** A port the kernel just handed out. Another process could grab it before redis binds it, so
 * the caller retries on a bind failure. */
async function freePort(): Promise<number> {
  const server = net.createServer()
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as net.AddressInfo
  server.close()
  await once(server, 'close')
  return port
}

/** True once the server answers PING on `port` with +PONG. */
function answersPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1')
    let reply = ''
    socket.setTimeout(200, () => socket.destroy())
    socket.on('connect', () => socket.write('PING\r\n'))
    socket.on('data', (chunk) => {
      reply += chunk.toString()
      if (reply.includes('\r\n')) socket.end()
    })
    socket.on('error', () => {})
    socket.on('close', () => resolve(reply.startsWith('+PONG')))
  })
}

function exited(proc: ChildProcess): Promise<void> {
  return proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : once(proc, 'exit').then(() => {})
}

export async function startRedis(
  t: { teardown(fn: () => unknown): void },
  opts: { unixSocket?: boolean } = {},
): Promise<RedisServer> {
  const dir = await mkdtemp(join(tmpdir(), 'jitgate-redis-'))
  const socketPath = join(dir, 'redis.sock')
  let port = 0
  let proc: ChildProcess | undefined
  let output = ''

  const killOnExit = (): void => {
    proc?.kill('SIGKILL')
  }
  process.on('exit', killOnExit)

  const args = (): string[] => [
    '--port', String(port),
    '--bind', '127.0.0.1',
    '--save', '',
    '--appendonly', 'no',
    '--dir', dir,
    ...(opts.unixSocket ? ['--unixsocket', socketPath, '--unixsocketperm', '700'] : []),
  ]

  /** Spawns and waits for PING; false when the process exits first (e.g. port taken). */
  const launch = async (): Promise<boolean> => {
    output = ''
    const child = spawn('redis-server', args(), { stdio: ['ignore', 'pipe', 'pipe'] })
    proc = child
    // Keep the tail of the log for error messages.
    const keep = (chunk: Buffer): void => {
      output = (output + chunk.toString()).slice(-4000)
    }
    child.stdout?.on('data', keep)
    child.stderr?.on('data', keep)
    const deadline = Date.now() + READY_TIMEOUT_MS
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) return false
      if (await answersPing(port)) return true
      await sleep(20)
    }
    child.kill('SIGKILL')
    await exited(child)
    throw new Error(`redis-server did not answer PING within ${READY_TIMEOUT_MS} ms:\n${output}`)
  }

  const running = (): ChildProcess | undefined =>
    proc !== undefined && proc.exitCode === null && proc.signalCode === null ? proc : undefined

  const signal = (sig: NodeJS.Signals): void => {
    const p = running()
    if (p === undefined) throw new Error('redis-server is not running')
    p.kill(sig)
  }

  const stop = async (): Promise<void> => {
    const p = running()
    if (p === undefined) return
    p.kill('SIGCONT')
    p.kill('SIGTERM')
    const timer = setTimeout(() => p.kill('SIGKILL'), STOP_GRACE_MS)
    await exited(p)
    clearTimeout(timer)
  }

  for (let attempt = 1; ; attempt++) {
    port = await freePort()
    if (await launch()) break
    if (attempt === 3) throw new Error(`redis-server failed to start:\n${output}`)
  }

  t.teardown(async () => {
    await stop()
    process.off('exit', killOnExit)
    await rm(dir, { recursive: true, force: true })
  })

  return {
    url: opts.unixSocket ? `unix://${socketPath}` : `redis://127.0.0.1:${port}`,
    port,
    stop,
    async start() {
      if (running()) throw new Error('redis-server is already running')
      if (!(await launch())) throw new Error(`redis-server failed to restart on port ${port}:\n${output}`)
    },
    pause: () => signal('SIGSTOP'),
    resume: () => signal('SIGCONT'),
    async kill() {
      const p = running()
      if (p === undefined) return
      p.kill('SIGKILL')
      await exited(p)
    },
  }
}

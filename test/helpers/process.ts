/**
 * Runs `jitgate` as a real child process (TypeScript sources through tsx), for tests that need
 * separate processes: replicas on one Redis, SIGTERM, the CLI's exit codes and messages.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const ROOT = fileURLToPath(new URL('../..', import.meta.url))
const ENTRY = fileURLToPath(new URL('./cli-entry.ts', import.meta.url))

export interface GatewayProcess {
  readonly proc: ChildProcess
  readonly dataUrl: string
  readonly controlUrl: string
  /** Everything written to stdout (the audit trail) so far. */
  stdout(): string
  stderr(): string
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number | null>
}

export function runCli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const proc = spawn(process.execPath, ['--import', 'tsx', ENTRY, ...args], { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
    proc.stderr.on('data', (c: Buffer) => (stderr += c.toString()))
    proc.on('exit', (code) => resolve({ code, stdout, stderr }))
  })
}

/** Starts `jitgate serve` and resolves once it logged its listening addresses. */
export function startGatewayProcess(
  t: { teardown(fn: () => unknown): void },
  env: NodeJS.ProcessEnv,
  args: string[] = [],
): Promise<GatewayProcess> {
  const proc = spawn(process.execPath, ['--import', 'tsx', ENTRY, 'serve', ...args], {
    cwd: ROOT,
    env: { ...process.env, JITGATE_DATA_LISTEN: '127.0.0.1:0', JITGATE_CONTROL_LISTEN: '127.0.0.1:0', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  proc.stdout.on('data', (c: Buffer) => (stdout += c.toString()))
  const exited = new Promise<number | null>((resolve) => proc.on('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL')
      await exited
    }
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`gateway did not start:\n${stderr}`)), 20_000)
    proc.stderr.on('data', (c: Buffer) => {
      stderr += c.toString()
      for (const line of stderr.split('\n').slice(0, -1)) {
        if (!line.includes('"jitgate listening"')) continue
        const { data, control } = JSON.parse(line) as { data: string; control: string }
        clearTimeout(timer)
        resolve({
          proc,
          dataUrl: data,
          controlUrl: control,
          stdout: () => stdout,
          stderr: () => stderr,
          stop: () => {
            proc.kill('SIGTERM')
            return exited
          },
        })
        return
      }
    })
    proc.on('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`gateway exited with ${code}:\n${stderr}`))
    })
  })
}

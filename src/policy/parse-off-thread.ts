/**
 * YAML parsing of a policy reload, off the event loop. Parsing is most of a policy load (about
 * 80% of it for 10,000 resources: `bench/policy-scale.ts`); done on the gateway's main thread, it
 * held every request for as long. A worker thread parses the texts and hands back plain values;
 * compiling them stays on the main thread (a compiled policy holds functions, which do not cross
 * threads), with positions found only when a problem is reported (`deferredSource`).
 *
 * One worker per process, started on the first reload and kept while reloads come (an editor's
 * saves, a fleet following notices), ended after {@link IDLE_MS} without one. Idle, it never keeps
 * a stopping process alive. Should it fail to start or die, the texts are parsed here instead: a
 * reload is never lost to the mechanism that keeps it from blocking.
 */
import { Worker } from 'node:worker_threads'
import { extname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseYaml, toParsed, type ParsedYaml } from '../config/yaml-source.js'

/** The worker's module next to this one: `.js` once built, `.ts` when run from source (tsx). */
const WORKER = new URL(`./parse-worker${extname(fileURLToPath(import.meta.url))}`, import.meta.url)
const IDLE_MS = 60_000

type Texts = readonly { file: string; text: string }[]

export function parseHere(texts: Texts): ParsedYaml[] {
  return texts.map(({ file, text }) => toParsed(parseYaml(file, text)))
}

interface Parser {
  readonly worker: Worker
  readonly pending: Map<number, { texts: Texts; resolve: (parsed: ParsedYaml[]) => void }>
  idle: NodeJS.Timeout | undefined
}

let parser: Parser | undefined
let nextId = 0
let answered = 0

/** Parses the worker has answered in this process. Exported for tests only. */
export function parsedOffThread(): number {
  return answered
}

function newWorker(): Worker {
  if (WORKER.pathname.endsWith('.js')) return new Worker(WORKER)
  // From source (tests, `node --import tsx`): Node 20 loads a worker's entry without the parent's
  // module hooks, so the worker registers tsx itself, then loads its module.
  const tsx = import.meta.resolve('tsx/esm/api')
  return new Worker(`import(${JSON.stringify(tsx)}).then((m) => m.register()).then(() => import(${JSON.stringify(WORKER.href)}))`, { eval: true })
}

function startParser(): Parser | undefined {
  let worker: Worker
  try {
    worker = newWorker()
  } catch {
    return undefined
  }
  const p: Parser = { worker, pending: new Map(), idle: undefined }
  worker.on('message', ({ id, parsed }: { id: number; parsed: ParsedYaml[] }) => {
    const waiting = p.pending.get(id)
    p.pending.delete(id)
    answered++
    waiting?.resolve(parsed)
    if (p.pending.size === 0) {
      // Idle: held for the next reload, but never keeping the process alive.
      p.worker.unref()
      p.idle = setTimeout(() => stop(p), IDLE_MS)
      p.idle.unref()
    }
  })
  // A worker that fails (or is ended) leaves its parses to this thread.
  const fail = (): void => {
    if (parser === p) parser = undefined
    clearTimeout(p.idle)
    for (const { texts, resolve } of p.pending.values()) resolve(parseHere(texts))
    p.pending.clear()
  }
  worker.once('error', fail)
  worker.once('exit', fail)
  return p
}

function stop(p: Parser): void {
  if (parser === p) parser = undefined
  void p.worker.terminate()
}

export function parseOffThread(texts: Texts): Promise<ParsedYaml[]> {
  parser ??= startParser()
  const p = parser
  if (p === undefined) return Promise.resolve(parseHere(texts))
  clearTimeout(p.idle)
  // Busy: a parse in progress holds the process like any I/O would.
  p.worker.ref()
  return new Promise((resolve) => {
    const id = nextId++
    p.pending.set(id, { texts, resolve })
    p.worker.postMessage({ id, texts })
  })
}

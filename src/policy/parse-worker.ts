/**
 * Worker-thread entry: parses policy texts. Each message `{ id, texts: { file, text }[] }` is
 * answered `{ id, parsed }`, one {@link ParsedYaml} per text, in order. See parse-off-thread.ts.
 */
import { parentPort } from 'node:worker_threads'
import { parseYaml, toParsed, type ParsedYaml } from '../config/yaml-source.js'

parentPort?.on('message', ({ id, texts }: { id: number; texts: readonly { file: string; text: string }[] }) => {
  const parsed: ParsedYaml[] = texts.map(({ file, text }) => toParsed(parseYaml(file, text)))
  parentPort?.postMessage({ id, parsed })
})

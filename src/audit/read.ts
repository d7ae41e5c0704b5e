/** Reading audit files back: line by line, streamed, with each line's number. */
import { createReadStream } from 'node:fs'

export interface FileLine {
  /** 1-based. */
  readonly line: number
  readonly text: string
  /** True for a last line without its newline (a cut file). */
  readonly incomplete: boolean
}

/** The lines of a file, without their newlines, read as a stream. */
export async function* readLines(file: string): AsyncGenerator<FileLine> {
  let n = 0
  let rest = ''
  for await (const chunk of createReadStream(file, { encoding: 'utf8' })) {
    const parts = (rest + (chunk as string)).split('\n')
    rest = parts.pop() as string
    for (const text of parts) yield { line: ++n, text, incomplete: false }
  }
  if (rest !== '') yield { line: n + 1, text: rest, incomplete: true }
}

/**
 * YAML loading shared by config and policy files, with the traps closed:
 * YAML 1.2 core schema (`no`/`on`/`off` stay strings, no sexagesimal or `0777` octal surprises),
 * duplicate keys rejected, alias expansion bounded (alias bombs fail fast), size and depth bounded.
 * Every problem is reported with file, line, column and the path inside the document.
 */
import { readFileSync, statSync } from 'node:fs'
import { LineCounter, parseDocument, isMap, isSeq, isPair, isScalar, type Document, type Node } from 'yaml'
import { Value } from '@sinclair/typebox/value'
import type { TSchema, Static } from '@sinclair/typebox'

/** One problem found in a file. `path` is a JSON-pointer-like dotted path (`resources[0].upstream`). */
export interface SourceIssue {
  readonly file: string
  readonly line: number
  readonly column: number
  readonly path: string
  readonly message: string
}

export const YAML_LIMITS = Object.freeze({
  maxBytes: 1024 * 1024,
  maxAliasCount: 100,
  maxDepth: 32,
})

export interface YamlSource {
  readonly file: string
  readonly value: unknown
  /** Position of the node at `path` (or of its nearest existing ancestor). */
  locate(path: readonly (string | number)[]): { line: number; column: number }
}

export class SourceError extends Error {
  override readonly name = 'SourceError'
  constructor(readonly issues: readonly SourceIssue[]) {
    super(formatIssues(issues))
  }
}

/** Renders issues one per line: `file:line:col path: message`. */
export function formatIssues(issues: readonly SourceIssue[]): string {
  return issues
    .map((i) => `${i.file}${i.line > 0 ? `:${i.line}:${i.column}` : ''}${i.path ? ` ${i.path}` : ''}: ${i.message}`)
    .join('\n')
}

export function formatPath(path: readonly (string | number)[]): string {
  let out = ''
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`
  return out
}

/** Parses YAML text; returns the source or the list of syntax-level issues. */
export function parseYaml(file: string, text: string): { source?: YamlSource; issues: SourceIssue[] } {
  const issues: SourceIssue[] = []
  const lineCounter = new LineCounter()
  if (Buffer.byteLength(text) > YAML_LIMITS.maxBytes) {
    return { issues: [{ file, line: 1, column: 1, path: '', message: `file is larger than ${YAML_LIMITS.maxBytes} bytes` }] }
  }
  const doc = parseDocument(text, {
    lineCounter,
    schema: 'core',
    version: '1.2',
    uniqueKeys: true,
    prettyErrors: false,
    strict: true,
  })
  for (const err of [...doc.errors, ...doc.warnings]) {
    const pos = lineCounter.linePos(err.pos[0])
    issues.push({ file, line: pos.line, column: pos.col, path: '', message: firstLine(err.message) })
  }
  if (issues.length > 0) return { issues }
  const depth = maxDepth(doc.contents as Node | null, 0)
  if (depth > YAML_LIMITS.maxDepth) {
    return { issues: [{ file, line: 1, column: 1, path: '', message: `nesting deeper than ${YAML_LIMITS.maxDepth} levels` }] }
  }
  const badKey = collectionKey(doc.contents as Node | null)
  if (badKey !== undefined) {
    const pos = lineCounter.linePos(badKey)
    return { issues: [{ file, line: pos.line, column: pos.col, path: '', message: 'a mapping key must be a plain value, not a list or mapping' }] }
  }
  let value: unknown
  try {
    value = doc.toJS({ maxAliasCount: YAML_LIMITS.maxAliasCount })
  } catch (err) {
    return { issues: [{ file, line: 1, column: 1, path: '', message: firstLine((err as Error).message) }] }
  }
  return { source: { file, value, locate: (p) => locate(doc, lineCounter, p) }, issues }
}

/** What crosses a thread from a parse: the value when the text parsed, else its issues. No positions. */
export type ParsedYaml = { readonly ok: true; readonly value: unknown } | { readonly ok: false; readonly issues: SourceIssue[] }

export function toParsed(result: { source?: YamlSource; issues: SourceIssue[] }): ParsedYaml {
  return result.source ? { ok: true, value: result.source.value } : { ok: false, issues: result.issues }
}

/**
 * A source whose value was parsed elsewhere (a worker thread). Positions come from parsing the
 * text once more, here, the first time one is asked for: only to report a problem or explain an
 * item, never on the way to a valid policy.
 */
export function deferredSource(file: string, text: string, value: unknown): YamlSource {
  let located: YamlSource | undefined
  return {
    file,
    value,
    locate(path) {
      located ??= parseYaml(file, text).source
      return located?.locate(path) ?? { line: 0, column: 0 }
    },
  }
}

/** Reads and parses a YAML file; a missing or unreadable file is an issue, not an exception. */
export function readYaml(file: string): { source?: YamlSource; issues: SourceIssue[] } {
  try {
    const st = statSync(file)
    if (st.size > YAML_LIMITS.maxBytes) {
      return { issues: [{ file, line: 1, column: 1, path: '', message: `file is larger than ${YAML_LIMITS.maxBytes} bytes` }] }
    }
    return parseYaml(file, readFileSync(file, 'utf8'))
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    return { issues: [{ file, line: 0, column: 0, path: '', message: e.code === 'ENOENT' ? 'file not found' : e.message }] }
  }
}

/**
 * Checks `value` against a TypeBox schema and returns every problem, positioned in the source.
 * `base` prefixes the path when the value is a sub-tree of the document.
 */
export function checkSchema<S extends TSchema>(
  schema: S,
  value: unknown,
  source: YamlSource,
  base: readonly (string | number)[] = [],
): { ok: true; value: Static<S> } | { ok: false; issues: SourceIssue[] } {
  if (Value.Check(schema, value)) return { ok: true, value: value as Static<S> }
  const issues: SourceIssue[] = []
  const seen = new Set<string>()
  // A missing key yields several validator errors at its path ("required", then the type it
  // should have had); say once that it is missing, positioned at the object that lacks it.
  const missing = new Set<string>()
  for (const e of Value.Errors(schema, value)) {
    const rel = e.path === '' ? [] : e.path.split('/').slice(1).map(unescapePointer)
    const path = [...base, ...rel]
    const at = formatPath(path)
    if (missing.has(at)) continue
    const absent = e.value === undefined
    if (absent) missing.add(at)
    const message = absent ? `missing required key ${JSON.stringify(String(rel.at(-1) ?? ''))}` : describe(e)
    const key = `${at}\u0000${message}`
    if (seen.has(key)) continue
    seen.add(key)
    issues.push(absent ? { ...issueAt(source, path.slice(0, -1), message), path: at } : issueAt(source, path, message))
  }
  return { ok: false, issues: sortIssues(issues) }
}

/** Orders issues as a reader meets them: by file, line, column. */
export function sortIssues(issues: readonly SourceIssue[]): SourceIssue[] {
  return [...issues].sort((a, b) => (a.file === b.file ? a.line - b.line || a.column - b.column : a.file < b.file ? -1 : 1))
}

export function issueAt(source: YamlSource, path: readonly (string | number)[], message: string): SourceIssue {
  const pos = source.locate(path)
  return { file: source.file, line: pos.line, column: pos.column, path: formatPath(path), message }
}

function describe(e: { type: number; message: string; schema: TSchema; value: unknown }): string {
  if (e.message === 'Unexpected property') return 'unknown key'
  const anyOf = (e.schema as { anyOf?: { const?: unknown }[] }).anyOf
  if (anyOf && anyOf.every((s) => s.const !== undefined)) {
    return `expected one of ${anyOf.map((s) => JSON.stringify(s.const)).join(', ')}`
  }
  const hint = (e.schema as { errorMessage?: string }).errorMessage
  if (hint !== undefined) return hint
  return e.message.charAt(0).toLowerCase() + e.message.slice(1)
}

function unescapePointer(s: string): string | number {
  const v = s.replace(/~1/g, '/').replace(/~0/g, '~')
  return /^(0|[1-9][0-9]*)$/.test(v) ? Number(v) : v
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s
}

/**
 * Offset of the first mapping key that is a list or mapping (`? [a, b]: 1`), if any: JavaScript
 * objects would silently turn it into the string "[ a, b ]". Only called within the depth bound.
 */
function collectionKey(node: unknown): number | undefined {
  if (isMap(node)) {
    for (const p of node.items) {
      if (isMap(p.key) || isSeq(p.key)) return rangeStart(p.key) ?? 0
      const inner = collectionKey(p.value)
      if (inner !== undefined) return inner
    }
  } else if (isSeq(node)) {
    for (const i of node.items) {
      const inner = collectionKey(i)
      if (inner !== undefined) return inner
    }
  }
  return undefined
}

function maxDepth(node: Node | null | undefined, d: number): number {
  if (d > YAML_LIMITS.maxDepth) return d
  if (isMap(node)) {
    let m = d + 1
    for (const p of node.items) m = Math.max(m, maxDepth(p.value as Node, d + 1))
    return m
  }
  if (isSeq(node)) {
    let m = d + 1
    for (const i of node.items) m = Math.max(m, maxDepth(i as Node, d + 1))
    return m
  }
  return d
}

/** Finds the node at `path`, or its deepest existing ancestor. For a map key, points at the key. */
function locate(doc: Document, lc: LineCounter, path: readonly (string | number)[]): { line: number; column: number } {
  let node: unknown = doc.contents
  let offset = rangeStart(node) ?? 0
  for (const seg of path) {
    if (isMap(node)) {
      const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && String(p.key.value) === String(seg))
      if (!pair) break
      offset = rangeStart(pair.key) ?? offset
      node = pair.value
      if (seg === path[path.length - 1] && rangeStart(node) === undefined) break
    } else if (isSeq(node) && typeof seg === 'number') {
      const item = node.items[seg]
      if (item === undefined) break
      node = item
      offset = rangeStart(node) ?? offset
    } else {
      break
    }
  }
  // Point at the key for scalar values too: "key: value" reads best positioned at the key.
  const pos = lc.linePos(offset)
  return { line: pos.line, column: pos.col }
}

function rangeStart(node: unknown): number | undefined {
  const r = (node as { range?: [number, number, number] } | null)?.range
  return r ? r[0] : undefined
}

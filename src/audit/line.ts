/**
 * Turning an event into one line that no field value can break or forge: every string is bounded,
 * and the JSON text escapes every character that some reader would take as a line break, a
 * terminal control or a display trick. Values from clients (paths, methods, headers, reasons)
 * therefore stay inside their JSON string, whatever they contain.
 */

/** Longest string kept in an event field; longer ones are cut and marked. */
export const MAX_FIELD_LENGTH = 2048
/** Appended to a cut string, so a reader knows the value was longer. */
export const TRUNCATION_MARK = '…[truncated]'
/** Longest list kept in an event field (scopes, errors); the rest is replaced by one marker item. */
export const MAX_LIST_LENGTH = 256

/** Cuts a string to `MAX_FIELD_LENGTH` characters plus the marker, never inside a surrogate pair. */
export function bounded(value: string): string {
  if (value.length <= MAX_FIELD_LENGTH) return value
  let end = MAX_FIELD_LENGTH
  const last = value.charCodeAt(end - 1)
  if (last >= 0xd800 && last <= 0xdbff) end--
  return value.slice(0, end) + TRUNCATION_MARK
}

/*
 * Tokens in event fields. Client-controlled values (a path, a reason, a refused request line) can
 * carry a JIT token pasted by mistake or on purpose; the trail never does. What is redacted is a
 * real compact JWS: three dot-separated base64url segments whose first decodes to a JSON header
 * with an `alg`, found as is or after percent-decoding (up to three layers: `e%79J`, `%252E`).
 * Nothing else is touched: `heyJude.mp3`, an actor named `joeyJ.smith` or a scope stay as they are.
 * The scan is linear in the value's length (runs of token characters are found by a regex that
 * never backtracks across a run), and values are bounded before they are scanned.
 */

/** What replaces a token found in an event field. */
export const REDACTED_TOKEN = '[redacted-token]'

/** Runs of base64url characters and dots long enough to hold a JWS (`eyJ…` header, payload, signature). */
const TOKEN_RUN = /[A-Za-z0-9_.-]{40,}/g
const MIN_SIGNATURE = 16
const MAX_HEADER_SEGMENT = 2048
const PERCENT_ESCAPE = /%([0-9A-Fa-f]{2})/g
const MAX_DECODINGS = 3

/**
 * The string with every compact JWS in it replaced by {@link REDACTED_TOKEN}. When the token shows
 * only once percent-decoded, the decoded spelling is kept, with the token replaced.
 */
export function withoutTokens(value: string): string {
  if (!value.includes('eyJ') && !value.includes('%')) return value
  let current = value
  for (let round = 0; ; round++) {
    const redacted = current.includes('eyJ') ? current.replace(TOKEN_RUN, redactRun) : current
    if (redacted !== current) return redacted
    if (round === MAX_DECODINGS || !current.includes('%')) return value
    const decoded = current.replace(PERCENT_ESCAPE, decodeEscape)
    if (decoded === current) return value
    current = decoded
  }
}

function decodeEscape(_: string, hex: string): string {
  return String.fromCharCode(parseInt(hex, 16))
}

/** A run of token characters with each `header.payload.signature` triple in it replaced. */
function redactRun(run: string): string {
  if (!run.includes('eyJ')) return run
  const segments = run.split('.')
  let changed = false
  for (let i = 0; i + 2 < segments.length; i++) {
    const header = segments[i] as string
    const at = header.indexOf('eyJ')
    if (at === -1 || (segments[i + 1] as string).length === 0 || (segments[i + 2] as string).length < MIN_SIGNATURE) continue
    // The token may be glued to what precedes it in the run (`/x/eyJ…` has no dot before it).
    if (!isJwsHeader(header.slice(at))) continue
    segments.splice(i, 3, header.slice(0, at) + REDACTED_TOKEN)
    changed = true
  }
  return changed ? segments.join('.') : run
}

function isJwsHeader(segment: string): boolean {
  if (segment.length > MAX_HEADER_SEGMENT) return false
  const text = Buffer.from(segment, 'base64url').toString('utf8')
  // Most runs that merely start like a token fail here, without the cost of a thrown parse error.
  if (!text.endsWith('}') || !text.includes('"alg"')) return false
  try {
    const header: unknown = JSON.parse(text)
    return header !== null && typeof header === 'object' && typeof (header as { alg?: unknown }).alg === 'string'
  } catch {
    return false
  }
}

/**
 * Copies event fields into `into`, bounding every string (also inside lists and maps), redacting
 * anything token-like and leaving out undefined values.
 */
export function copyBounded(fields: object, into: Record<string, unknown>): void {
  for (const key in fields) {
    const value = (fields as Record<string, unknown>)[key]
    if (value !== undefined) into[key] = boundValue(value)
  }
}

/**
 * True when copyBounded would copy the fields unchanged: every value a string within the bound
 * (and nothing token-like in it), a number, a boolean or null. Such fields (those of every request's event) are spread as they are,
 * which is cheaper than copying them key by key.
 */
export function isFlatAndBounded(fields: object): boolean {
  for (const key in fields) {
    const value = (fields as Record<string, unknown>)[key]
    if (typeof value === 'string') {
      if (value.length > MAX_FIELD_LENGTH || value.includes('eyJ') || value.includes('%')) return false
    } else if (value === undefined || (value !== null && typeof value === 'object')) return false
  }
  return true
}

function boundValue(value: unknown): unknown {
  if (typeof value === 'string') return withoutTokens(bounded(value))
  if (Array.isArray(value)) {
    const list = value.length > MAX_LIST_LENGTH ? [...value.slice(0, MAX_LIST_LENGTH), TRUNCATION_MARK] : value
    return list.map(boundValue)
  }
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    copyBounded(value, out)
    return out
  }
  return value
}

/*
 * JSON.stringify already escapes `"`, `\`, U+0000..U+001F (so CR and LF) and lone surrogates. It
 * leaves raw: DEL and the C1 controls (terminal escapes), U+2028/U+2029 (line breaks to JavaScript
 * before ES2019 and to many log viewers), bidirectional overrides and isolates (text shown in
 * another order than stored) and the BOM. Outside strings a JSON text is plain ASCII, so these can
 * only occur inside string values, where `\uXXXX` means the same character: the parsed value is
 * unchanged, only its spelling on the line is safe.
 */
const UNSAFE = /[\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff]/
const UNSAFE_ALL = new RegExp(UNSAFE.source, 'g')

function escapeChar(c: string): string {
  return `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`
}

/** The JSON text of a record, safe to write as one line (no newline added). */
export function toLine(record: object): string {
  const json = JSON.stringify(record)
  return UNSAFE.test(json) ? json.replace(UNSAFE_ALL, escapeChar) : json
}

/**
 * Characters a JSON string must spell differently than raw: what JSON.stringify escapes (`"`,
 * `\`, U+0000..U+001F, lone surrogates: any surrogate here, pairs included, to keep the test
 * simple) and what {@link toLine} escapes on top.
 */
const NEEDS_ESCAPE = /["\\\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ufeff\ud800-\udfff]/

/** A string as a JSON value on a line, spelled exactly as {@link toLine} spells it. */
export function jsonString(value: string): string {
  return NEEDS_ESCAPE.test(value) ? toLine([value]).slice(1, -1) : `"${value}"`
}

/** `,"name":` for each field name seen, spelled as JSON.stringify does: names come from code. */
const memberPrefixes = new Map<string, string>()
const MAX_MEMBER_PREFIXES = 1024

function memberPrefix(name: string): string {
  let prefix = memberPrefixes.get(name)
  if (prefix === undefined) {
    prefix = `,${jsonString(name)}:`
    if (memberPrefixes.size < MAX_MEMBER_PREFIXES) memberPrefixes.set(name, prefix)
  }
  return prefix
}

/**
 * The members of flat, bounded event fields as JSON text (`,"a":1,"b":"x"`), spelled exactly as
 * `toLine` would spell them inside a record, or undefined when a field needs more than that:
 * a value to bound, to scan for tokens, a list, a map, or a name in `reserved` (a member the
 * caller writes itself). This is {@link isFlatAndBounded} and {@link toLine} in one pass, without
 * a record object: it runs for every request's event.
 */
export function flatMembers(fields: object, reserved: ReadonlySet<string>): string | undefined {
  let text = ''
  for (const key in fields) {
    const value = (fields as Record<string, unknown>)[key]
    let json: string
    switch (typeof value) {
      case 'string':
        if (value.length > MAX_FIELD_LENGTH || value.includes('eyJ') || value.includes('%')) return undefined
        json = jsonString(value)
        break
      case 'number':
        json = Number.isFinite(value) ? String(value) : 'null'
        break
      case 'boolean':
        json = value ? 'true' : 'false'
        break
      case 'object':
        if (value !== null) return undefined
        json = 'null'
        break
      default:
        // undefined is left out by copyBounded; anything stranger takes the general path too.
        return undefined
    }
    if (reserved.has(key)) return undefined
    text += memberPrefix(key) + json
  }
  return text
}


/**
 * `new Date(ms).toISOString()`, for the `time` of every event: the text up to the second is kept
 * from the previous call, so an event in the same second costs a string append, not a Date.
 */
export function isoTime(ms: number): string {
  const second = Math.floor(ms / 1000)
  if (second !== lastSecond) {
    // Outside years 0000-9999 ISO strings change shape; those never share a cache entry.
    if (!(ms >= 0 && ms < 253402300800000)) return new Date(ms).toISOString()
    lastSecond = second
    secondPrefix = new Date(second * 1000).toISOString().slice(0, 20)
  }
  const milli = Math.floor(ms - second * 1000)
  return `${secondPrefix}${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`
}

let lastSecond = Number.NaN
let secondPrefix = ''

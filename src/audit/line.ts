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

/**
 * A compact JWS inside a string: `eyJ` (base64url of `{"`, its first letter possibly
 * percent-encoded) and the segments after it, their dots as is or percent-encoded once or more.
 * Client-controlled values (a path, a reason, a refused request line) can carry a token pasted by
 * mistake or on purpose; the trail never does. Signatures and hashes the gateway writes have no
 * dot, so they never match.
 */
const TOKEN_LIKE = /(?:e|%(?:25)*65)yJ[A-Za-z0-9_-]*(?:\.|%(?:25)*2[Ee])[A-Za-z0-9_.%-]*/g
/** What replaces a token found in an event field. */
export const REDACTED_TOKEN = '[redacted-token]'

/** The string with anything shaped like a JWT replaced by {@link REDACTED_TOKEN}. */
export function withoutTokens(value: string): string {
  return value.includes('yJ') ? value.replace(TOKEN_LIKE, REDACTED_TOKEN) : value
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
      if (value.length > MAX_FIELD_LENGTH || value.includes('yJ')) return false
    } else if (value === undefined || (value !== null && typeof value === 'object')) return false
  }
  return true
}

function boundValue(value: unknown): unknown {
  if (typeof value === 'string') return bounded(withoutTokens(value))
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

/**
 * Request-path normalisation: the one spelling of a path that the scope check sees and that the
 * upstream receives (DESIGN.md, "Scope patterns"). This is a security contract; change it only with
 * the tests in test/policy/path.test.ts.
 *
 * Input is the request-target path without the query (the caller splits at the first `?`).
 *
 * 1. Origin-form only (RFC 9112 §3.2.1): the path must start with `/`. Absolute-form
 *    (`http://host/x`), asterisk-form (`*`) and the empty string are rejected.
 * 2. Characters, one at a time (RFC 3986 §3.3, `pchar`):
 *    - unreserved (`A-Z a-z 0-9 - . _ ~`), sub-delims (`! $ & ' ( ) * + , ; =`), `:`, `@` and `/`
 *      are kept as they are. `;` is an ordinary character: path parameters are not stripped.
 *    - `"`, `<`, `>`, `[`, `]`, `^`, backtick, `{`, `|`, `}` may not appear in a URI path (RFC 3986
 *      appendix A) but clients send them; they are percent-encoded (uppercase hex), as the WHATWG URL
 *      parser does for most of them, so that a path has a single spelling.
 *    - rejected: `\` (some servers read it as `/`), `#` (an upstream would cut the path there,
 *      RFC 3986 §3.5), `?` (the caller must have split the query off), space, control characters
 *      (< 0x20, 0x7f), and any character above 0x7e that is not percent-encoded (Node hands raw bytes
 *      over as latin1 characters, so they cannot be interpreted safely).
 * 3. Percent-escapes (RFC 3986 §2.1, §2.3, §6.2.2.2): an escape of an unreserved character is decoded
 *    (`%7E` → `~`, `%2e` → `.`); every other escape is kept, with its hex digits uppercased.
 *    Decoding happens once: `%252e` (an escaped `%`, then `2e`) stays as it is. Rejected: a malformed
 *    escape (`%`, `%2`, `%G1`), an encoded `/` (`%2F`), `\` (`%5C`) or NUL (`%00`), and any run of
 *    consecutive escapes whose bytes are not valid UTF-8 (RFC 3629 §4: overlong forms such as
 *    `%C0%AF`, surrogates, code points above U+10FFFF, stray or missing continuation bytes, `%FF`).
 * 4. Empty segments are removed (`/a//b` → `/a/b`, `//` → `/`), except that a trailing slash is kept
 *    (`/a/b/` stays `/a/b/`). Removal happens before dot segments are resolved, so `/a//..` → `/`.
 * 5. Dot segments `.` and `..`, including those spelled with escapes (`%2e%2e`, `.%2E`), are resolved
 *    as RFC 3986 §5.2.4 does: `/a/./b` → `/a/b`, `/a/b/..` → `/a/`, `/a/b/../c` → `/a/c`. A `..` that
 *    would climb above the root is rejected, never clamped. A segment that is a dot segment followed by
 *    a path parameter (`..;x`, `.;x`, `..%3B`) is rejected: Tomcat-style servers strip the parameter
 *    and would then resolve a `..` that this function did not see.
 *
 * The result is idempotent: normalising a normalised path returns it unchanged.
 */

export type NormalizePathResult =
  | { readonly ok: true; readonly path: string }
  | { readonly ok: false; readonly reason: string }

const SLASH = 0x2f
const DOT = 0x2e
const PERCENT = 0x25

/** Characters kept literally that also qualify a path for the fast path: unreserved and `/`. */
const C_PLAIN = 1
/** Characters kept literally that send a path down the slow path: sub-delims, `:`, `@`. */
const C_KEEP = 2
/** Characters RFC 3986 forbids in a path but which are unambiguous: percent-encoded. */
const C_ENCODE = 3
/** `%`: start of a percent-escape. */
const C_PERCENT = 4
/** Everything else below 0x80 (0 is the table's default): rejected. */
const C_REJECT = 0

const CHAR_CLASS = new Uint8Array(128)
for (let c = 0x30; c <= 0x39; c++) CHAR_CLASS[c] = C_PLAIN
for (let c = 0x41; c <= 0x5a; c++) CHAR_CLASS[c] = C_PLAIN
for (let c = 0x61; c <= 0x7a; c++) CHAR_CLASS[c] = C_PLAIN
for (const ch of '-._~/') CHAR_CLASS[ch.charCodeAt(0)] = C_PLAIN
for (const ch of "!$&'()*+,;=:@") CHAR_CLASS[ch.charCodeAt(0)] = C_KEEP
for (const ch of '"<>[]^`{|}') CHAR_CLASS[ch.charCodeAt(0)] = C_ENCODE
CHAR_CLASS[PERCENT] = C_PERCENT

/** `%00` … `%FF`, uppercase: the normalised spelling of every escape that is kept. */
const PCT: readonly string[] = Array.from(
  { length: 256 },
  (_, b) => '%' + b.toString(16).toUpperCase().padStart(2, '0'),
)

/** Hex digit value by char code, -1 for a non-hex character. */
const HEX_VALUE = new Int8Array(128).fill(-1)
for (let c = 0; c < 10; c++) HEX_VALUE[0x30 + c] = c
for (let c = 0; c < 6; c++) {
  HEX_VALUE[0x41 + c] = 10 + c
  HEX_VALUE[0x61 + c] = 10 + c
}

const REASON = {
  notOriginForm: 'not an origin-form path (must start with "/")',
  badEscape: 'malformed percent-escape',
  encodedSlash: 'encoded "/" (%2F)',
  encodedBackslash: 'encoded "\\" (%5C)',
  encodedNul: 'encoded NUL (%00)',
  invalidUtf8: 'percent-escapes are not valid UTF-8',
  backslash: 'backslash',
  control: 'control character',
  nonAscii: 'character above 0x7E that is not percent-encoded',
  fragment: 'fragment delimiter "#"',
  query: 'query delimiter "?" (the query must be split off first)',
  space: 'space',
  aboveRoot: '".." climbs above the root',
  dotParams: 'dot segment with a path parameter',
} as const

function reject(reason: string): NormalizePathResult {
  return { ok: false, reason }
}

/**
 * Normalises a request path (without its query) as described at the top of this module, or says
 * why it cannot be normalised safely. The caller answers a rejection with `path_rejected` (400) and
 * forwards the normalised path (plus the original query) upstream.
 *
 * A path made only of unreserved characters and `/`, with no empty and no dot segment, is already
 * normalised: it is recognised in one scan and returned unchanged.
 *
 * @param rawPath - request-target path, query excluded, exactly as received (`req.url` up to `?`).
 * @returns `{ ok: true, path }` with the normalised path, or `{ ok: false, reason }`.
 */
export function normalizePath(rawPath: string): NormalizePathResult {
  // charCodeAt(0) of '' is NaN, so the empty path is rejected here too.
  if (rawPath.charCodeAt(0) !== SLASH) return reject(REASON.notOriginForm)
  if (isPlainNormalised(rawPath)) return { ok: true, path: rawPath }
  return normalizeSlow(rawPath)
}

/** True when `p` (starting with `/`) is plain characters only with no empty (but the last) or dot segment. */
function isPlainNormalised(p: string): boolean {
  const len = p.length
  let segStart = 1
  for (let i = 1; i <= len; i++) {
    const c = i < len ? p.charCodeAt(i) : SLASH
    if (c === SLASH) {
      const n = i - segStart
      // An empty segment is fine only at the very end (a trailing slash).
      if (n === 0 ? i < len : n <= 2 && isDots(p, segStart, n)) return false
      segStart = i + 1
    } else if (c >= 0x80 || CHAR_CLASS[c] !== C_PLAIN) {
      return false
    }
  }
  return true
}

/** True when the `n` (1 or 2) characters of `p` at `start` are all dots. */
function isDots(p: string, start: number, n: number): boolean {
  return p.charCodeAt(start) === DOT && (n === 1 || p.charCodeAt(start + 1) === DOT)
}

function normalizeSlow(p: string): NormalizePathResult {
  const len = p.length
  const segments: string[] = []
  // The current segment is `seg` (already transformed) followed by p[runStart, i) (literal).
  let seg = ''
  let runStart = 1
  let i = 1
  while (i < len) {
    const c = p.charCodeAt(i)
    const cls = c < 0x80 ? CHAR_CLASS[c] : C_REJECT
    if (c !== SLASH && (cls === C_PLAIN || cls === C_KEEP)) {
      i++
      continue
    }
    seg += p.slice(runStart, i)
    if (c === SLASH) {
      const failure = endSegment(segments, seg, false)
      if (failure !== undefined) return reject(failure)
      seg = ''
      i++
    } else if (cls === C_ENCODE) {
      seg += PCT[c]
      i++
    } else if (cls === C_PERCENT) {
      // One run of consecutive escapes is one UTF-8 byte sequence (RFC 3986 §2.5): validate it as a
      // whole, with the well-formed ranges of RFC 3629 §4, which exclude overlongs and surrogates.
      let need = 0
      let lo = 0x80
      let hi = 0xbf
      do {
        if (i + 2 >= len) return reject(REASON.badEscape)
        const h1 = p.charCodeAt(i + 1)
        const h2 = p.charCodeAt(i + 2)
        const v1 = h1 < 0x80 ? (HEX_VALUE[h1] ?? -1) : -1
        const v2 = h2 < 0x80 ? (HEX_VALUE[h2] ?? -1) : -1
        if (v1 < 0 || v2 < 0) return reject(REASON.badEscape)
        const b = (v1 << 4) | v2
        i += 3
        if (need > 0) {
          if (b < lo || b > hi) return reject(REASON.invalidUtf8)
          need--
          lo = 0x80
          hi = 0xbf
          seg += PCT[b]
        } else if (b < 0x80) {
          if (b === SLASH) return reject(REASON.encodedSlash)
          if (b === 0x5c) return reject(REASON.encodedBackslash)
          if (b === 0) return reject(REASON.encodedNul)
          // Unreserved characters are equivalent to their escapes (RFC 3986 §2.3): decode them.
          seg += CHAR_CLASS[b] === C_PLAIN ? String.fromCharCode(b) : PCT[b]
        } else {
          if (b >= 0xc2 && b <= 0xdf) need = 1
          else if (b >= 0xe0 && b <= 0xef) {
            need = 2
            if (b === 0xe0) lo = 0xa0 // no overlong 3-byte forms
            else if (b === 0xed) hi = 0x9f // no UTF-16 surrogates
          } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3
            if (b === 0xf0) lo = 0x90 // no overlong 4-byte forms
            else if (b === 0xf4) hi = 0x8f // nothing above U+10FFFF
          } else {
            // 0x80–0xBF: continuation without a lead; 0xC0, 0xC1: overlong; 0xF5–0xFF: never valid.
            return reject(REASON.invalidUtf8)
          }
          seg += PCT[b]
        }
      } while (i < len && p.charCodeAt(i) === PERCENT)
      if (need > 0) return reject(REASON.invalidUtf8)
    } else {
      return reject(rejectedCharReason(c))
    }
    runStart = i
  }
  seg += p.slice(runStart, len)
  const failure = endSegment(segments, seg, true)
  if (failure !== undefined) return reject(failure)

  return { ok: true, path: '/' + segments.join('/') }
}

/**
 * Applies one finished segment to the output stack (RFC 3986 §5.2.4). The last segment of the path
 * leaves a trailing slash behind when it is empty or a dot segment (`/a/b/..` → `/a/`): that is
 * recorded by pushing '', which also makes a path that resolves to nothing `/`.
 * Returns a rejection reason, or undefined.
 */
function endSegment(segments: string[], seg: string, last: boolean): string | undefined {
  if (seg === '' || seg === '.') {
    if (last) segments.push('')
    return undefined
  }
  if (seg === '..') {
    if (segments.pop() === undefined) return REASON.aboveRoot
    if (last) segments.push('')
    return undefined
  }
  if (seg.charCodeAt(0) === DOT && isDotWithParams(seg)) return REASON.dotParams
  segments.push(seg)
  return undefined
}

/** `.;…`, `..;…`, `.%3B…`, `..%3B…` (escapes are already uppercased). */
function isDotWithParams(seg: string): boolean {
  const at = seg.charCodeAt(1) === DOT ? 2 : 1
  return seg.startsWith(';', at) || seg.startsWith('%3B', at)
}

function rejectedCharReason(c: number): string {
  if (c === 0x5c) return REASON.backslash
  if (c === 0x23) return REASON.fragment
  if (c === 0x3f) return REASON.query
  if (c === 0x20) return REASON.space
  if (c < 0x20 || c === 0x7f) return REASON.control
  return REASON.nonAscii
}

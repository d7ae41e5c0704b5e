import t from 'tap'
import { normalizePath } from '../../src/policy/path.js'

const R = {
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
}

/** Already normalised: returned unchanged. */
const unchanged = [
  '/',
  '/a',
  '/a/b',
  '/a/b/',
  '/crm/customers/42',
  '/A-Z_a-z~0.9',
  '/.well-known/jwks.json',
  '/a/.../b', // only "." and ".." are dot segments (RFC 3986 §3.3)
  '/a/..b/c.',
  '/a/b../.c',
  '/..a',
  // `;` is an ordinary character: kept, parameters are not stripped.
  '/a;b=c/d;e',
  '/crm;jsessionid=1/x',
  "/!$&'()*+,;=:@",
  '/%20/%3F/%23/%25/%3B',
  '/%C3%A9', // é
  '/%E2%82%AC', // €
  '/%F0%9F%98%80', // U+1F600, four bytes
  '/%EF%BF%BF', // U+FFFF: a noncharacter, but well-formed UTF-8
  '/%F4%8F%BF%BF', // U+10FFFF, the last code point
  '/%ED%9F%BF', // U+D7FF, just below the surrogates
  '/%0A%0D%7F', // encoded controls other than NUL are kept encoded
  '/%252E%252E', // decoded once only
]

/** [input, normalised] */
const normalised: [string, string][] = [
  // empty segments removed, trailing slash kept
  ['//', '/'],
  ['///', '/'],
  ['/a//b', '/a/b'],
  ['//a', '/a'],
  ['/a//', '/a/'],
  ['/a///b//', '/a/b/'],
  // dot segments (RFC 3986 §5.2.4)
  ['/.', '/'],
  ['/./', '/'],
  ['/./a', '/a'],
  ['/a/./b', '/a/b'],
  ['/a/.', '/a/'],
  ['/a/./', '/a/'],
  ['/a/..', '/'],
  ['/a/../', '/'],
  ['/a/b/..', '/a/'],
  ['/a/b/../', '/a/'],
  ['/a/b/../c', '/a/c'],
  ['/a/b/../../c', '/c'],
  ['/a/b/c/./../../g', '/a/g'], // RFC 3986 §5.2.4's own example
  ['/mid/content=5/../6', '/mid/6'], // ditto
  ['/a//..', '/'], // empty segments go first, so ".." removes "a"
  ['/a/.//b', '/a/b'],
  // dot segments spelled with escapes
  ['/a/%2e', '/a/'],
  ['/a/%2E/b', '/a/b'],
  ['/a/%2e%2e', '/'],
  ['/a/%2E%2e/b', '/b'],
  ['/a/.%2e/b', '/b'],
  ['/a/%2e./b', '/b'],
  ['/a/%2e%2e/secret', '/secret'],
  ['/crm/customers/../../admin', '/admin'],
  ['/crm/customers/%2e%2e/admin', '/crm/admin'],
  // unreserved escapes decoded, others uppercased
  ['/%7Euser', '/~user'],
  ['/%7euser', '/~user'],
  ['/%41%62%2D%5f%30', '/Ab-_0'],
  ['/%c3%a9', '/%C3%A9'],
  ['/%3b%3f%23', '/%3B%3F%23'],
  ['/%252e', '/%252e'], // "2e" after %25 is literal text, not an escape
  ['/a%20b', '/a%20b'],
  ['/%41%C3%A9%42', '/A%C3%A9B'], // one run mixing ASCII and a two-byte sequence
  // characters RFC 3986 does not allow in a path: percent-encoded
  ['/a{b}', '/a%7Bb%7D'],
  ['/a|b^c`d', '/a%7Cb%5Ec%60d'],
  ['/"<>"', '/%22%3C%3E%22'],
  ['/[x]', '/%5Bx%5D'],
]

/** [input, reason] */
const rejected: [string, string][] = [
  // not origin-form
  ['', R.notOriginForm],
  ['a', R.notOriginForm],
  ['a/b', R.notOriginForm],
  ['*', R.notOriginForm],
  ['http://example.com/a', R.notOriginForm],
  ['%2Fa', R.notOriginForm],
  ['\\a', R.notOriginForm],
  ['./a', R.notOriginForm],
  // climbing above the root: rejected, never clamped
  ['/..', R.aboveRoot],
  ['/../', R.aboveRoot],
  ['/../a', R.aboveRoot],
  ['/a/../..', R.aboveRoot],
  ['/a/b/../../..', R.aboveRoot],
  ['/a/b/../../../etc/passwd', R.aboveRoot],
  ['/%2e%2e', R.aboveRoot],
  ['/%2e%2e/', R.aboveRoot],
  ['/%2E%2e/x', R.aboveRoot],
  ['/.%2e', R.aboveRoot],
  ['/%2e.', R.aboveRoot],
  ['//..', R.aboveRoot],
  ['/./..', R.aboveRoot],
  // dot segment plus path parameter (Tomcat strips the parameter and then resolves "..")
  ['/..;/admin', R.dotParams],
  ['/crm/..;/admin', R.dotParams],
  ['/crm/..;x=1/admin', R.dotParams],
  ['/crm/.;/admin', R.dotParams],
  ['/crm/%2e%2e;/admin', R.dotParams],
  ['/crm/..%3b/admin', R.dotParams],
  ['/crm/.%3B', R.dotParams],
  // encoded separators and NUL
  ['/a%2fb', R.encodedSlash],
  ['/a%2Fb', R.encodedSlash],
  ['/a/..%2f..%2fadmin', R.encodedSlash],
  ['/%2e%2e%2f', R.encodedSlash],
  ['/a%5cb', R.encodedBackslash],
  ['/a%5C..%5Cb', R.encodedBackslash],
  ['/a%00', R.encodedNul],
  ['/a%00.json', R.encodedNul],
  // literal characters
  ['/a\\b', R.backslash],
  ['/a\\..\\b', R.backslash],
  ['/a\u0000b', R.control],
  ['/a\nb', R.control],
  ['/a\rb', R.control],
  ['/a\tb', R.control],
  ['/a\u001fb', R.control],
  ['/a\u007fb', R.control],
  ['/a b', R.space],
  ['/a#b', R.fragment],
  ['/a#/../admin', R.fragment],
  ['/a?b', R.query],
  ['/a\u0080', R.nonAscii],
  ['/caf\u00e9', R.nonAscii], // latin1 é as Node hands over a raw byte
  ['/\u00c0\u00af', R.nonAscii],
  ['/\u2215', R.nonAscii], // DIVISION SLASH
  ['/\uff0f', R.nonAscii], // FULLWIDTH SOLIDUS
  // malformed escapes
  ['/%', R.badEscape],
  ['/a%', R.badEscape],
  ['/%2', R.badEscape],
  ['/a%2/b', R.badEscape],
  ['/%G1', R.badEscape],
  ['/%1G', R.badEscape],
  ['/%zz', R.badEscape],
  ['/%%41', R.badEscape],
  ['/%41%', R.badEscape],
  ['/%\u00e9\u00e9', R.badEscape],
  ['/%-1', R.badEscape],
  // invalid UTF-8 (RFC 3629)
  ['/%C0%AF', R.invalidUtf8], // overlong "/"
  ['/%c0%ae%c0%ae', R.invalidUtf8], // overlong ".."
  ['/%c0%ae%c0%ae/%c0%ae%c0%ae/etc', R.invalidUtf8],
  ['/%C1%BF', R.invalidUtf8], // overlong two-byte
  ['/%E0%80%AF', R.invalidUtf8], // overlong three-byte "/"
  ['/%E0%9F%BF', R.invalidUtf8], // overlong three-byte (below U+0800)
  ['/%F0%80%80%AF', R.invalidUtf8], // overlong four-byte "/"
  ['/%F0%8F%BF%BF', R.invalidUtf8], // overlong four-byte (below U+10000)
  ['/%F8%80%80%80%AF', R.invalidUtf8], // five-byte form
  ['/%ED%A0%80', R.invalidUtf8], // U+D800, a surrogate
  ['/%ED%BF%BF', R.invalidUtf8], // U+DFFF
  ['/%F4%90%80%80', R.invalidUtf8], // U+110000
  ['/%F5%80%80%80', R.invalidUtf8],
  ['/%ff', R.invalidUtf8],
  ['/%FE', R.invalidUtf8],
  ['/%80', R.invalidUtf8], // lone continuation byte
  ['/%BF', R.invalidUtf8],
  ['/%C3%A9%A9', R.invalidUtf8], // stray continuation after a complete sequence
  ['/%C3', R.invalidUtf8], // truncated
  ['/%E2%82', R.invalidUtf8],
  ['/%F0%9F%98', R.invalidUtf8],
  ['/%C3x', R.invalidUtf8], // sequence broken by a literal character
  ['/%C3/%A9', R.invalidUtf8], // ... or by a slash
  ['/%C3%41', R.invalidUtf8], // ... or by an ASCII escape
  ['/%C3%C3%A9', R.invalidUtf8], // lead byte where a continuation is due
]

t.test('already-normalised paths are returned unchanged', async (t) => {
  for (const p of unchanged) t.strictSame(normalizePath(p), { ok: true, path: p }, p)
})

t.test('normalisation', async (t) => {
  for (const [input, output] of normalised) t.strictSame(normalizePath(input), { ok: true, path: output }, input)
})

t.test('rejections', async (t) => {
  for (const [input, reason] of rejected) t.strictSame(normalizePath(input), { ok: false, reason }, JSON.stringify(input))
})

t.test('the result is idempotent', async (t) => {
  for (const p of [...unchanged, ...normalised.map(([i]) => i)]) {
    const once = normalizePath(p)
    if (!once.ok) throw new Error(`unexpected rejection of ${p}`)
    t.strictSame(normalizePath(once.path), once, p)
  }
})

t.test('very long paths', async (t) => {
  const deep = '/' + 'segment/'.repeat(2_000)
  t.strictSame(normalizePath(deep), { ok: true, path: deep }, 'many segments, fast path')

  const long = '/' + 'x'.repeat(100_000)
  t.strictSame(normalizePath(long), { ok: true, path: long }, 'one long segment')

  t.strictSame(normalizePath('/a/..'.repeat(10_000)), { ok: true, path: '/' }, 'many "a/.." pairs')
  t.strictSame(
    normalizePath('/a'.repeat(5_000) + '/..'.repeat(5_001)),
    { ok: false, reason: R.aboveRoot },
    'one ".." too many, at the end of a long path',
  )

  const escaped = '/' + '%41'.repeat(50_000)
  t.strictSame(normalizePath(escaped), { ok: true, path: '/' + 'A'.repeat(50_000) }, 'a long run of escapes')
  const utf8 = '/' + '%E2%82%AC'.repeat(20_000)
  t.strictSame(normalizePath(utf8), { ok: true, path: utf8 }, 'a long run of multi-byte sequences')
  t.strictSame(normalizePath(utf8 + '%E2'), { ok: false, reason: R.invalidUtf8 }, 'truncated at the very end')

  const slashes = '/' + '/'.repeat(100_000) + 'a'
  t.strictSame(normalizePath(slashes), { ok: true, path: '/a' }, 'a long run of slashes')
})

/**
 * An independent reading of the same rules, written for clarity rather than speed (UTF-8 validity
 * comes from the WHATWG decoder): null when the path must be rejected.
 */
function reference(p: string): string | null {
  if (!p.startsWith('/')) return null
  const hex = (b: number) => '%' + b.toString(16).toUpperCase().padStart(2, '0')
  const segments: string[] = []
  for (const raw of p.slice(1).split('/')) {
    if (/[^A-Za-z0-9\-._~!$&'()*+,;=:@%"<>[\]^`{|}]/.test(raw)) return null
    if (/%(?![0-9A-Fa-f]{2})/.test(raw)) return null
    let bad = false
    const decoded = raw
      .replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
        const bytes = Buffer.from(run.replace(/%/g, ''), 'hex')
        try {
          new TextDecoder('utf-8', { fatal: true }).decode(bytes)
        } catch {
          bad = true
        }
        let out = ''
        for (const b of bytes) {
          if (b === 0x2f || b === 0x5c || b === 0) bad = true
          const ch = String.fromCharCode(b)
          out += /^[A-Za-z0-9\-._~]$/.test(ch) ? ch : hex(b)
        }
        return out
      })
      .replace(/["<>[\]^`{|}]/g, (c) => hex(c.charCodeAt(0)))
    if (bad) return null
    segments.push(decoded)
  }
  if (segments.some((s) => /^\.\.?(?:;|%3B)/.test(s))) return null
  const out: string[] = []
  for (const s of segments.filter((s, i) => s !== '' || i === segments.length - 1)) {
    if (s === '..' && out.pop() === undefined) return null
    if (s !== '.' && s !== '..') out.push(s)
  }
  // A last segment that was '', '.' or '..' leaves a trailing slash (RFC 3986 §5.2.4).
  const last = segments[segments.length - 1]
  if ((last === '.' || last === '..') && out.length > 0) out.push('')
  return '/' + out.join('/')
}

t.test('random paths: outputs are normalised, idempotent and free of ambiguity', async (t) => {
  // Pieces an attacker would combine; a fixed seed keeps failures reproducible.
  const pieces = [
    '/', '/', '/', 'a', 'b', '.', '..', '%2e', '%2E', '%2f', '%5c', '%00', ';', '%3b', '%41', '%c3', '%a9',
    '%C0', '%AF', '%', 'x%', '{', '~', '\\', '#', '%25', '%ff', 'é', '%e2%82%ac', '*',
  ]
  let seed = 0x2545f491
  const rand = (n: number) => {
    seed ^= seed << 13
    seed ^= seed >>> 17
    seed ^= seed << 5
    return (seed >>> 0) % n
  }
  let accepted = 0
  for (let k = 0; k < 20_000; k++) {
    let p = '/'
    const count = 1 + rand(12)
    for (let j = 0; j < count; j++) p += pieces[rand(pieces.length)]
    const r = normalizePath(p)
    const expected = reference(p)
    if ((r.ok ? r.path : null) !== expected) {
      t.fail(`${JSON.stringify(p)}: got ${JSON.stringify(r)}, the reference says ${JSON.stringify(expected)}`)
    }
    if (!r.ok) continue
    accepted++
    const out = r.path
    const problems: string[] = []
    if (!out.startsWith('/')) problems.push('no leading slash')
    if (out.includes('//')) problems.push('empty segment')
    const segments = out.slice(1).split('/')
    if (segments.some((s) => s === '.' || s === '..')) problems.push('dot segment')
    if (/%(?:2[Ff]|5[Cc]|00)/.test(out)) problems.push('encoded separator or NUL')
    if (/%[0-9A-F]?[a-f]/.test(out)) problems.push('lowercase escape')
    if (/[^A-Za-z0-9\-._~!$&'()*+,;=:@/%]/.test(out)) problems.push('character outside pchar')
    if (/%(?:[46][1-9A-F]|[57][0-9A]|3[0-9]|2D|2E|5F|7E)/.test(out)) problems.push('escaped unreserved character')
    const again = normalizePath(out)
    if (!again.ok || again.path !== out) problems.push('not idempotent')
    if (problems.length > 0) t.fail(`${JSON.stringify(p)} → ${JSON.stringify(out)}: ${problems.join(', ')}`)
  }
  t.ok(accepted > 1_000, `enough random paths accepted to mean something (${accepted})`)
})

t.test('fast and slow paths agree', async (t) => {
  // Forcing the slow path with a leading "//" (an empty segment) must not change the rest.
  for (const p of unchanged) {
    const slow = normalizePath('/' + p)
    t.strictSame(slow, { ok: true, path: p }, `/${p}`)
  }
})

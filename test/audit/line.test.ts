/** One event, one line: escaping and bounding rules of `line.ts`, value by value. */
import t from 'tap'
import { bounded, copyBounded, flatMembers, isFlatAndBounded, isoTime, jsonString, toLine, withoutTokens, MAX_FIELD_LENGTH, MAX_LIST_LENGTH, REDACTED_TOKEN, TRUNCATION_MARK } from '../../src/audit/line.js'

t.test('every character a reader could take as a break or a control is escaped, the value unchanged', async (t) => {
  const nasty = [
    '\r\n',
    '\u2028',
    '\u2029',
    '\u0085',
    '\u001b[2J',
    '\u007f',
    '\u202e',
    '\u2066',
    '\ufeff',
    '"},{"event":"grant.issued"}',
    '\\',
    '\ud800',
    '\t\b\f\u0000',
  ]
  for (const value of nasty) {
    const line = toLine({ event: 'x', path: value })
    // The name uses toLine too: JSON.stringify would put a raw U+2028 into tap's own output.
    const name = toLine([value])
    t.match(line, /^[\x20-\x7e]*$/, `${name}: printable ASCII only`)
    t.same(JSON.parse(line), { event: 'x', path: value }, `${name}: parses back to the same value`)
  }
  t.equal(toLine({ a: 'plain é ü 日本' }), '{"a":"plain é ü 日本"}', 'ordinary text stays readable')
})

t.test('strings are cut at the bound with a marker, never inside a surrogate pair', async (t) => {
  t.equal(bounded('abc'), 'abc')
  const exact = 'x'.repeat(MAX_FIELD_LENGTH)
  t.equal(bounded(exact), exact)
  t.equal(bounded(`${exact}y`), exact + TRUNCATION_MARK)
  const pair = `${'x'.repeat(MAX_FIELD_LENGTH - 1)}😀tail`
  const cut = bounded(pair)
  t.equal(cut, `${'x'.repeat(MAX_FIELD_LENGTH - 1)}${TRUNCATION_MARK}`)
  t.notOk(/[\ud800-\udbff](?![\udc00-\udfff])/.test(cut), 'no lone high surrogate')
})

t.test('copyBounded bounds strings at any depth, keeps lists short and drops undefined', async (t) => {
  const long = 'p'.repeat(MAX_FIELD_LENGTH + 10)
  const out: Record<string, unknown> = {}
  copyBounded(
    { path: long, status: 200, none: undefined, scopes: Array.from({ length: MAX_LIST_LENGTH + 5 }, () => long), listen: { data: long } },
    out,
  )
  t.equal(out.path, bounded(long))
  t.equal(out.status, 200)
  t.notOk('none' in out)
  const scopes = out.scopes as string[]
  t.equal(scopes.length, MAX_LIST_LENGTH + 1)
  t.equal(scopes.at(-1), TRUNCATION_MARK)
  t.equal(scopes[0], bounded(long))
  t.same(out.listen, { data: bounded(long) })
})

t.test('isoTime spells every instant exactly as Date#toISOString, across seconds and out-of-range years', async (t) => {
  const base = Date.UTC(2026, 11, 3, 23, 59, 58, 990)
  const instants = [0, 1, 9, 10, 99, 100, 999, 1000, 1001, base, base + 9, base + 10, base + 1010, base + 2000, Date.UTC(9999, 11, 31, 23, 59, 59, 999)]
  for (let i = 0; i < 2000; i++) instants.push(base + i * 7)
  for (const ms of instants) t.equal(isoTime(ms), new Date(ms).toISOString(), `${ms}`)
  // Going back in time (a clock step) is as exact as going forward.
  t.equal(isoTime(base - 5000), new Date(base - 5000).toISOString())
  t.equal(isoTime(base + 0.7), new Date(base).toISOString(), 'fractions of a millisecond are cut, as Date does')
  for (const ms of [-1, -1000, Date.UTC(10000, 0, 1), Date.UTC(-1, 0, 1)]) t.equal(isoTime(ms), new Date(ms).toISOString(), `${ms}`)
})

t.test('isFlatAndBounded: only where copyBounded would change nothing', async (t) => {
  const cases: [object, boolean][] = [
    [{ a: 'x', n: 1.5, b: true, z: null }, true],
    [{}, true],
    [{ a: 'x'.repeat(MAX_FIELD_LENGTH) }, true],
    [{ a: 'x'.repeat(MAX_FIELD_LENGTH + 1) }, false],
    [{ a: undefined }, false],
    [{ a: ['x'] }, false],
    [{ a: { b: 'x' } }, false],
    [{ a: '/x/eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln' }, false],
  ]
  for (const [fields, flat] of cases) {
    t.equal(isFlatAndBounded(fields), flat, JSON.stringify(fields).slice(0, 60))
    if (flat) {
      const copied: Record<string, unknown> = {}
      copyBounded(fields, copied)
      t.strictSame(copied, { ...fields }, 'spreading gives what copying gives')
    }
  }
})

t.test('flatMembers spells a request event exactly as toLine spells its record, or declines', async (t) => {
  const reserved = new Set(['time', 'seq'])
  const odd = ['\r\n', '\u2028', '\u0085', '\u001b[2J', '\u007f', '\u202e', '\ufeff', '"},{"event":"x"}', '\\', '\ud800', '\udc00x', '😀', 'é ü 日本', '\t\b\f\u0000', '']
  const numbers = [0, -0, 1.5, -3, 1e21, 1e-7, 0.1 + 0.2, Number.MAX_SAFE_INTEGER, Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]
  const cases: object[] = [
    {},
    { request_id: 'r-1', subject: 'acme', method: 'GET', path: '/api/items/1', status: 200, duration_ms: 1.25, protocol: 'http' },
    ...odd.map((v) => ({ path: v, detail: `${v}!` })),
    ...numbers.map((n) => ({ duration_ms: n })),
    { ok: true, no: false, none: null },
    { 'we"ird\u2028name': 'x', 'é': 1 },
    { path: 'x'.repeat(MAX_FIELD_LENGTH) },
  ]
  for (const fields of cases) {
    const members = flatMembers(fields, reserved)
    const name = toLine([JSON.stringify(fields).slice(0, 50)])
    t.equal(`{"time":"T"${members ?? 'DECLINED'}}`, toLine({ time: 'T', ...fields }), name)
  }
  const declined: object[] = [
    { path: 'x'.repeat(MAX_FIELD_LENGTH + 1) },
    { path: '/a%2fb' },
    { path: '/x/eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJhIn0.c2ln' },
    { scopes: ['GET /a'] },
    { listen: { data: 'x' } },
    { gone: undefined },
    { seq: 3 },
    { time: 'forged' },
    { big: 10n },
  ]
  for (const fields of declined) t.equal(flatMembers(fields, reserved), undefined, `declines ${toLine([String(Object.keys(fields))])}`)
  for (const v of odd) t.equal(jsonString(v), toLine([v]).slice(1, -1), `jsonString ${toLine([v])}`)
})

t.test('anything shaped like a JWT is redacted from event fields, however it is spelled', async (t) => {
  const jwt = 'eyJhbGciOiJFZERTQSIsInR5cCI6ImppdCtqd3QifQ.eyJzdWIiOiJhY21lIiwianRpIjoiZ18xIn0.T2s3_c2lnbmF0dXJl-LXZhbHVl'
  // The exact inputs of a finding: a fragment and a `;` parameter put the token in the audited path.
  const cases: [string, string][] = [
    [`/crm/x#access_token=${jwt}`, `/crm/x#access_token=${REDACTED_TOKEN}`],
    [`/crm/x;access_token=${jwt};b=2`, `/crm/x;access_token=${REDACTED_TOKEN};b=2`],
    [`/crm/${jwt}/y`, `/crm/${REDACTED_TOKEN}/y`],
    [`/crm/${jwt.replaceAll('.', '%2E')}`, `/crm/${REDACTED_TOKEN}`],
    [`/crm/%65${jwt.slice(1).replaceAll('.', '%252e')}`, `/crm/${REDACTED_TOKEN}`],
    [`Bearer ${jwt}`, `Bearer ${REDACTED_TOKEN}`],
    [`reason: pasted ${jwt} by mistake`, `reason: pasted ${REDACTED_TOKEN} by mistake`],
    // The exact input of a finding: one escaped letter in each of the first two segments.
    [`/crm/${jwt.replaceAll('eyJ', 'e%79J')}/%2F`, `/crm/${REDACTED_TOKEN}//`],
    [`/crm/${jwt.replaceAll('eyJ', 'e%2579J')}`, `/crm/${REDACTED_TOKEN}`],
    [`h${jwt}`, `h${REDACTED_TOKEN}`],
    // Not tokens, left exactly as they are (the exact inputs of a finding: these were mangled).
    ['g_eyJabc123', 'g_eyJabc123'],
    ['sig eyJ3dGYiOnRydWV9abcDEF-_', 'sig eyJ3dGYiOnRydWV9abcDEF-_'],
    ['/plain/path', '/plain/path'],
    ['/crm/music/heyJude.mp3', '/crm/music/heyJude.mp3'],
    ['/crm/moneyJar.v2.json', '/crm/moneyJar.v2.json'],
    ['operator:joeyJ.smith', 'operator:joeyJ.smith'],
    ['ticket keyJ.7 approved', 'ticket keyJ.7 approved'],
    ['GET /crm/heyJude.mp3', 'GET /crm/heyJude.mp3'],
    ['/a%20b/eyJnb3RhIjoiaGVhZGVyIn0.eyJ4IjoxfQ.c2lnbmF0dXJlc2lnbmF0dXJl', '/a%20b/eyJnb3RhIjoiaGVhZGVyIn0.eyJ4IjoxfQ.c2lnbmF0dXJlc2lnbmF0dXJl'],
    ['/a%20b', '/a%20b'],
  ]
  for (const [input, expected] of cases) t.equal(withoutTokens(input), expected, expected)
  const copied: Record<string, unknown> = {}
  copyBounded({ path: `/x;t=${jwt}`, details: [`a ${jwt}`], nested: { reason: jwt } }, copied)
  t.notOk(JSON.stringify(copied).includes('c2lnbmF0dXJl'), 'redacted at any depth')
  t.notOk(toLine(copied).includes(jwt.split('.')[2] as string))
  // Long adversarial values (a 16 KB `eyJeyJ…` path made the old pattern quadratic) are bounded
  // first and scanned once: the result is just the bounded value.
  const long = 'eyJ'.repeat(5000)
  t.equal(withoutTokens(bounded(long)), bounded(long))
  const copiedLong: Record<string, unknown> = {}
  copyBounded({ path: `/${long}` }, copiedLong)
  t.equal(copiedLong.path, bounded(`/${long}`))
})

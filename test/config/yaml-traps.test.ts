/**
 * The YAML traps, one by one, as config and policy files meet them: YAML 1.2 core schema, duplicate
 * keys, aliases, tags, merge keys, collection keys, several documents, depth and size bounds.
 */
import t from 'tap'
import { parseYaml, YAML_LIMITS } from '../../src/config/yaml-source.js'

/** The parsed value, or the issues as `line:col message`. */
function parse(text: string): { value?: unknown; issues: string[] } {
  const r = parseYaml('f.yaml', text)
  return { ...(r.source ? { value: r.source.value } : {}), issues: r.issues.map((i) => `${i.line}:${i.column} ${i.message}`) }
}

t.test('YAML 1.2 core schema: no 1.1 booleans, sexagesimals, octals or timestamps', async (t) => {
  t.same(parse('a: no\nb: on\nc: off\nd: yes\ne: y\nf: NO\n').value, { a: 'no', b: 'on', c: 'off', d: 'yes', e: 'y', f: 'NO' })
  t.same(parse('a: true\nb: false\n').value, { a: true, b: false }, 'only true/false are booleans')
  t.same(parse('a: 1:30\nb: 190:20:30\n').value, { a: '1:30', b: '190:20:30' }, 'no base 60')
  t.same(parse('a: 0777\nb: 0o17\nc: 0x1f\n').value, { a: 777, b: 15, c: 31 }, 'a leading 0 is not octal')
  t.same(parse('a: 2027-06-30\nb: 2001-12-14t21:59:43.10-05:00\n').value, { a: '2027-06-30', b: '2001-12-14t21:59:43.10-05:00' }, 'no timestamps')
  t.same(parse('%YAML 1.1\n---\na: yes\n').value, { a: 'yes' }, 'a 1.1 directive does not bring 1.1 back')
})

t.test('duplicate keys are refused, at the second one', async (t) => {
  t.same(parse('a: 1\nb: 2\na: 3\n').issues, ['3:1 Map keys must be unique'])
  t.same(parse('m: { x: 1, x: 2 }\n').issues, ['1:12 Map keys must be unique'])
})

t.test('aliases: an alias bomb is refused quickly; unknown aliases are errors', async (t) => {
  const bomb = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
  for (let i = 1; i < 10; i++) bomb.push(`${'b'.repeat(i)}: &${'b'.repeat(i)} [${Array(10).fill(i === 1 ? '*a' : `*${'b'.repeat(i - 1)}`).join(',')}]`)
  const started = performance.now()
  const r = parse(bomb.join('\n'))
  t.match(r.issues, [/^1:1 Excessive alias count/])
  // 10^10 nodes if expanded; refusing takes milliseconds. The bound is loose for loaded machines.
  t.ok(performance.now() - started < 5000, 'refused without expanding')
  t.same(parse(`defaults: &d { max_ttl: 1h }\nr: [${Array(10).fill('*d').join(', ')}]\n`).issues, [], 'ordinary use of aliases is fine')
  t.same(parse('a: &x 1\nb: *y\n').issues, ['1:1 Unresolved alias (the anchor must be set before the alias): y'])
})

t.test('tags: only the core ones; custom and language tags are refused', async (t) => {
  t.same(parse('a: !foo bar\n').issues, ['1:4 Unresolved tag: !foo'])
  t.same(parse('a: !!js/function "x"\n').issues, ['1:4 Unresolved tag: tag:yaml.org,2002:js/function'])
  t.same(parse('a: !!python/object:os.system ls\n').issues, ['1:4 Unresolved tag: tag:yaml.org,2002:python/object:os.system'])
})

t.test('merge keys are plain keys in YAML 1.2 (so a schema refuses them as unknown)', async (t) => {
  t.same(parse('base: &b { x: 1 }\nm:\n  <<: *b\n  y: 2\n').value, { base: { x: 1 }, m: { '<<': { x: 1 }, y: 2 } })
})

t.test('a list or mapping as a key is refused (JavaScript would stringify it)', async (t) => {
  t.same(parse('ok: 1\n? [a, b]\n: 1\n').issues, ['2:3 a mapping key must be a plain value, not a list or mapping'])
  t.same(parse('x:\n  - { ? { a: 1 } : 2 }\n').issues, ['2:9 a mapping key must be a plain value, not a list or mapping'])
})

t.test('one document per file', async (t) => {
  t.same(parse("a: 'x'\n---\nb: 1\n").issues, ['2:1 Source contains multiple documents; please use YAML.parseAllDocuments()'])
})

t.test('nesting depth and file size are bounded', async (t) => {
  const deep = `a: ${'['.repeat(YAML_LIMITS.maxDepth + 5)}${']'.repeat(YAML_LIMITS.maxDepth + 5)}\n`
  t.same(parse(deep).issues, [`1:1 nesting deeper than ${YAML_LIMITS.maxDepth} levels`])
  const ok = `a: ${'['.repeat(YAML_LIMITS.maxDepth - 2)}${']'.repeat(YAML_LIMITS.maxDepth - 2)}\n`
  t.same(parse(ok).issues, [], 'within the bound')
  const big = `a: "${'x'.repeat(YAML_LIMITS.maxBytes)}"\n`
  t.same(parse(big).issues, [`1:1 file is larger than ${YAML_LIMITS.maxBytes} bytes`])
})

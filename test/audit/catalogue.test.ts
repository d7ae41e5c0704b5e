/**
 * The catalogue, its published schema and its documentation agree with each other and with the
 * code: the generated files are fresh, the schema compiles in an independent validator, and every
 * documented event type is emitted somewhere in the sources (or honestly marked pending).
 */
import t from 'tap'
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { EVENTS, type AuditEventName } from '../../src/audit/catalogue.js'
import { DOC_FILE, SCHEMA_FILE, renderDoc, renderSchema } from '../../scripts/audit-docs.js'
import { auditValidator } from '../helpers/audit-schema.js'

const SRC = fileURLToPath(new URL('../../src', import.meta.url))

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name)
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : []
  })
}

t.test('the schema file and the reference in docs/audit.md are generated from the catalogue', async (t) => {
  t.equal(readFileSync(SCHEMA_FILE, 'utf8'), renderSchema(), 'schema file fresh (npm run audit:docs)')
  const doc = readFileSync(DOC_FILE, 'utf8')
  t.equal(doc, renderDoc(doc), 'docs/audit.md reference fresh (npm run audit:docs)')
  for (const name of Object.keys(EVENTS)) t.ok(doc.includes(`### \`${name}\``), `${name} documented`)
})

t.test('the schema compiles in ajv and rejects what it should', async (t) => {
  const validate = auditValidator()
  const base = { time: '2026-01-01T00:00:00.000Z', gateway_id: 'gw', policy_version: 'v', chain: 'AAAAAAAAAAAAAAAAAAAAAA', seq: 1, prev_hash: '0'.repeat(64) }
  t.same(validate({ ...base, event: 'gateway.stopped' }), [])
  t.not(validate({ ...base, event: 'gateway.stopped', token: 'x' }).length, 0, 'undocumented field refused')
  t.not(validate({ ...base, event: 'no.such.event' }).length, 0, 'unknown event refused')
  t.not(validate({ ...base, event: 'gateway.stopped', time: '2026-01-01 00:00' }).length, 0, 'time format checked')
  t.not(validate({ ...base, event: 'admin.denied' }).length, 0, 'required fields checked')
})

t.test('every documented event type is emitted in the code, or marked pending', async (t) => {
  const text = sources(SRC)
    .filter((f) => !f.endsWith(join('audit', 'catalogue.ts')))
    .map((f) => readFileSync(f, 'utf8'))
    .join('\n')
  for (const [name, spec] of Object.entries(EVENTS) as [AuditEventName, (typeof EVENTS)[AuditEventName]][]) {
    const found = new RegExp(`\\b(emit\\w*|write)\\(\\s*'${name.replace('.', '\\.')}'`).test(text)
    if (spec.emitter.includes('pending')) {
      t.notOk(found, `${name} is marked "${spec.emitter}" but is now in the code: update its emitter in catalogue.ts`)
    } else {
      t.ok(found, `${name} (${spec.emitter}) is emitted somewhere`)
    }
  }
})

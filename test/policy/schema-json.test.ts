/**
 * `policies/schema.json`: generated from the TypeBox schema and committed; stale means failing.
 * An independent validator (ajv) reads it as an editor would and agrees with the loader.
 */
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { join } from 'node:path'
import { parse } from 'yaml'
import { POLICY_SCHEMA_FILE, renderPolicySchema } from '../../scripts/policy-schema.js'

const require = createRequire(import.meta.url)
const Ajv = require('ajv').default as typeof import('ajv').default
const POLICIES = new URL('../../policies/', import.meta.url).pathname

t.test('policies/schema.json is fresh (run `npm run schema` after changing src/policy/schema.ts)', async (t) => {
  t.equal(readFileSync(POLICY_SCHEMA_FILE, 'utf8'), renderPolicySchema())
})

t.test('editors validate the example files with it; every policy file points at it', async (t) => {
  const ajv = new Ajv({ strict: true, allErrors: true })
  // Editors (VS Code, yaml-language-server) show `errorMessage` instead of the generic message.
  ajv.addKeyword('errorMessage')
  const validate = ajv.compile(JSON.parse(readFileSync(POLICY_SCHEMA_FILE, 'utf8')) as object)
  const files = readdirSync(POLICIES).filter((f) => f.endsWith('.yaml'))
  t.ok(files.length >= 2)
  for (const f of files) {
    const text = readFileSync(join(POLICIES, f), 'utf8')
    t.ok(text.startsWith('# yaml-language-server: $schema=./schema.json\n'), `${f} names the schema`)
    t.ok(validate(parse(text)), `${f}: ${JSON.stringify(validate.errors)}`)
  }
  t.notOk(validate(parse('subprocessors:\n  - { id: acme, name: A, contract_ends: "2027-01-01", entitlments: [] }\n')), 'a typo is flagged')
  t.notOk(validate(parse('approval_policies:\n  - { id: a, stages: [], request_ttl: 1h }\n')), 'an empty stage list is flagged')
  t.notOk(validate(parse('local_approvers:\n  - { id: a, totp_secret: { env: A, file: b } }\n')), 'two secret sources are flagged')
})

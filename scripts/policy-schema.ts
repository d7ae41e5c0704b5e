/**
 * Writes `policies/schema.json`, the JSON Schema of a policy file, from the TypeBox schema that
 * validates policy at load (`src/policy/schema.ts`), so that editors check YAML as it is typed
 * (each example file starts with `# yaml-language-server: $schema=./schema.json`).
 *
 *   npm run schema               write it
 *   npm run schema -- --check    exit 1 if it is stale
 *
 * `test/policy/schema-json.test.ts` runs the same check. The file is JSON, not YAML, so the policy
 * loader (`policies/*.yaml`) never reads it.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { PolicyFileSchema } from '../src/policy/schema.js'

export const POLICY_SCHEMA_FILE = fileURLToPath(new URL('../policies/schema.json', import.meta.url))

/** The schema file's text: draft-07, which YAML and JSON editors support best. */
export function renderPolicySchema(): string {
  // JSON.stringify drops TypeBox's symbol-keyed metadata, leaving plain JSON Schema.
  const schema = { $schema: 'http://json-schema.org/draft-07/schema#', ...(JSON.parse(JSON.stringify(PolicyFileSchema)) as object) }
  return `${JSON.stringify(schema, null, 2)}\n`
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const text = renderPolicySchema()
  if (process.argv.includes('--check')) {
    let current = ''
    try {
      current = readFileSync(POLICY_SCHEMA_FILE, 'utf8')
    } catch {
      // A missing file is stale too.
    }
    if (current !== text) {
      process.stderr.write(`${POLICY_SCHEMA_FILE} is stale: run npm run schema\n`)
      process.exit(1)
    }
  } else {
    writeFileSync(POLICY_SCHEMA_FILE, text)
    process.stdout.write(`wrote ${POLICY_SCHEMA_FILE}\n`)
  }
}

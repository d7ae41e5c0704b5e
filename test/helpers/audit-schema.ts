/**
 * Validates audit lines against the published JSON Schema file (not the TypeBox source): ajv,
 * an independent validator, reads `docs/audit-events.v1.schema.json` as an SIEM would.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import type { ErrorObject } from 'ajv'
import { AUDIT_SCHEMA_VERSION } from '../../src/audit/catalogue.js'

const require = createRequire(import.meta.url)
// ajv's 2020-12 build is CommonJS with a default export.
const Ajv2020 = require('ajv/dist/2020').default as typeof import('ajv').default

export const SCHEMA_PATH = new URL(`../../docs/audit-events.v${AUDIT_SCHEMA_VERSION}.schema.json`, import.meta.url)

/** A validator for one parsed event; returns the problems (empty when valid). */
export function auditValidator(): (event: unknown) => string[] {
  // The pattern on `time` already checks RFC 3339; the format keyword is informative only here.
  const ajv = new Ajv2020({ strict: true, allErrors: true, discriminator: true, formats: { 'date-time': true } })
  const validate = ajv.compile(JSON.parse(readFileSync(SCHEMA_PATH, 'utf8')) as object)
  return (event) =>
    validate(event) ? [] : (validate.errors ?? []).map((e: ErrorObject) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`)
}

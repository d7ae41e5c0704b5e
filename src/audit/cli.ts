/**
 * The `jitgate audit …` commands, loaded on demand by `src/cli/main.ts` (which owns argument
 * parsing, help and exit codes and passes its error constructors in).
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { verifyAuditFiles, formatVerifyReport, type Jwks } from './verify.js'
import { buildEvidence, toCsv } from './export.js'
import { PEM_PRIVATE_KEY_RE, privateJwkMember } from '../util/jwk.js'

/** Where the commands write and which errors they raise (the CLI's own). */
export interface AuditCliContext {
  out(text: string): void
  /** A usage problem: exit 2 with the command's usage. */
  usage(message: string): Error
  /** A clear failure: exit 1 with the message. */
  fail(message: string): Error
}

type Values = Record<string, string | boolean | string[] | undefined>

/** `jitgate audit verify FILE... (--jwks FILE|URL | --skip-signatures) [--partial] [--json]` */
export async function auditVerify(v: Values, files: string[], ctx: AuditCliContext): Promise<number> {
  if (files.length === 0) throw ctx.usage('at least one FILE is required')
  if (v.jwks === undefined && !v['skip-signatures']) {
    throw ctx.usage('--jwks FILE|URL is required to check checkpoint signatures (or --skip-signatures to check the hash chains only)')
  }
  const jwks = v.jwks === undefined ? undefined : await loadJwks(v.jwks as string, ctx)
  let report
  try {
    report = await verifyAuditFiles(files, { ...(jwks ? { jwks } : {}), partial: v.partial === true })
  } catch (err) {
    throw ctx.fail(`cannot read audit file: ${(err as Error).message}`)
  }
  ctx.out(v.json ? `${JSON.stringify(report, null, 2)}\n` : formatVerifyReport(report))
  return report.ok ? 0 : 1
}

/**
 * `jitgate audit export --subprocessor ID --from DATE --to DATE --out PREFIX [--jwks FILE|URL] FILE...`
 * writes PREFIX.json (the report) and PREFIX.csv (its events); exit 1 when the files do not verify.
 */
export async function auditExport(v: Values, files: string[], ctx: AuditCliContext): Promise<number> {
  if (files.length === 0) throw ctx.usage('at least one FILE is required')
  for (const k of ['subprocessor', 'from', 'to', 'out']) if (v[k] === undefined) throw ctx.usage(`--${k} is required`)
  const from = parseDay(v.from as string, false, ctx)
  const to = parseDay(v.to as string, true, ctx)
  if (to <= from) throw ctx.usage('--to must come after --from')
  const jwks = v.jwks === undefined ? undefined : await loadJwks(v.jwks as string, ctx)
  let report
  try {
    report = await buildEvidence(files, { subprocessor: v.subprocessor as string, from, to, ...(jwks ? { jwks } : {}) })
  } catch (err) {
    throw ctx.fail(`cannot read audit file: ${(err as Error).message}`)
  }
  const out = v.out as string
  // Evidence names vendors, addresses and paths: readable by its owner only; never overwritten.
  writeFileSync(`${out}.json`, `${JSON.stringify(report, null, 2)}\n`, { mode: 0o600, flag: 'wx' })
  writeFileSync(`${out}.csv`, toCsv(report), { mode: 0o600, flag: 'wx' })
  const s = report.summary
  ctx.out(
    `wrote ${out}.json and ${out}.csv: ${s.events} event(s) of ${report.subprocessor} from ${report.from} to ${report.to}; ` +
      `${report.requests.length} request(s), ${report.grants.length} grant(s), ${s.calls.allowed} call(s) allowed, ${s.calls.denied} denied\n` +
      (report.integrity.verified
        ? `integrity: the files verify${report.integrity.signatures_checked ? ', checkpoint signatures included' : ' (hash chains only: give --jwks to check signatures)'}\n`
        : `integrity: the files do NOT verify (${report.integrity.problems.length} problem(s), listed in the report; jitgate audit verify says where)\n`),
  )
  return report.integrity.verified ? 0 : 1
}

/** `2026-12-31` (UTC midnight; as an end, the whole day is included) or an RFC 3339 time. */
function parseDay(text: string, end: boolean, ctx: AuditCliContext): Date {
  const day = /^\d{4}-\d{2}-\d{2}$/.test(text)
  const t = Date.parse(day ? `${text}T00:00:00.000Z` : text)
  if (Number.isNaN(t) || !(day || /^\d{4}-\d{2}-\d{2}T/.test(text))) throw ctx.usage(`expected a date (2026-12-31) or an RFC 3339 time, got ${JSON.stringify(text)}`)
  return new Date(day && end ? t + 86_400_000 : t)
}

/**
 * A JWKS (or one JWK) from a file or an http(s) URL such as the control plane's
 * `/.well-known/jwks.json`. Public keys only: a file holding private key material (a JWK with `d`,
 * a secret `k`, a PEM private key) is refused, since checking signatures never needs it and a
 * private key handed around for that is one copy too many. Nothing of the key is ever printed.
 */
async function loadJwks(source: string, ctx: AuditCliContext): Promise<Jwks> {
  let text: string
  try {
    if (/^https?:\/\//.test(source)) {
      const res = await fetch(source)
      if (!res.ok) throw new Error(`HTTP ${res.status}`)
      text = await res.text()
    } else {
      text = readFileSync(source, 'utf8')
    }
  } catch (err) {
    throw ctx.fail(`cannot load the JWKS from ${source}: ${(err as { cause?: Error }).cause?.message ?? (err as Error).message}`)
  }
  const refuse = (what: string): Error =>
    ctx.fail(
      `${source} holds private key material (${what}): refusing it. Verifying needs the public keys only: ` +
        'give the JWKS of the control plane (/.well-known/jwks.json) or the public JWK that `jitgate keys generate` printed, ' +
        'and keep the private key where it is.',
    )
  if (PEM_PRIVATE_KEY_RE.test(text)) throw refuse('a PEM private key')
  let jwks: Jwks | undefined
  try {
    const parsed = JSON.parse(text) as { keys?: unknown; kty?: unknown }
    if (Array.isArray(parsed.keys)) jwks = parsed as Jwks
    else if (typeof parsed.kty === 'string') jwks = { keys: [parsed as Jwks['keys'][number]] }
  } catch {
    // reported below
  }
  if (jwks === undefined) throw ctx.fail(`${source} is not a JWKS ({"keys": [...]}) or a JWK`)
  for (const [i, key] of jwks.keys.entries()) {
    const member = privateJwkMember(key)
    if (member !== undefined) throw refuse(`${jwks.keys.length > 1 ? `key ${i + 1} is ` : ''}a JWK with "${member}"`)
  }
  return jwks
}

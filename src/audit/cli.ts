/**
 * The `jitgate audit …` commands, loaded on demand by `src/cli/main.ts` (which owns argument
 * parsing, help and exit codes and passes its error constructors in).
 */
import { readFileSync } from 'node:fs'
import { verifyAuditFiles, formatVerifyReport, type Jwks } from './verify.js'

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

/** A JWKS (or one JWK) from a file or an http(s) URL such as the control plane's `/.well-known/jwks.json`. */
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
  try {
    const parsed = JSON.parse(text) as { keys?: unknown; kty?: unknown }
    if (Array.isArray(parsed.keys)) return parsed as Jwks
    if (typeof parsed.kty === 'string') return { keys: [parsed as Jwks['keys'][number]] }
  } catch {
    // reported below
  }
  throw ctx.fail(`${source} is not a JWKS ({"keys": [...]}) or a JWK`)
}

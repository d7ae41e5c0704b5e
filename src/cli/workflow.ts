/**
 * The workflow's CLI commands, one set per role:
 *
 * - sub-processor: `request create|status|token|cancel|relinquish`, `grant extend`. Each call signs a
 *   fresh assertion with the vendor's private key (`--key FILE`, or `$JITGATE_VENDOR_KEY_FILE`) as
 *   the sub-processor `--as ID` (or `$JITGATE_SUBPROCESSOR`);
 * - approver: `approvals list|approve|deny|review`, either with an OIDC ID token
 *   (`$JITGATE_ID_TOKEN`) or as a local approver (`--approver ID` or `$JITGATE_APPROVER`, the
 *   operator token `$JITGATE_ADMIN_TOKEN`, and `--totp CODE` from the approver's authenticator).
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { SignJWT, importJWK, type CryptoKey, type JWK } from 'jose'
import { ASSERTION_MAX_LIFETIME_S } from '../workflow/auth/assertion.js'
import { totpCode } from '../workflow/auth/totp.js'
import { decodeBase32 } from '../policy/compile-principals.js'
import { isBareNumber, noUnitMessage } from '../util/duration.js'

/** What main.ts provides to these commands. */
export interface WorkflowCliHelpers {
  /** Calls the control plane with these credential headers; throws a CLI error on a refusal. */
  api(io: CliIOLike, v: Record<string, unknown>, method: string, path: string, body: unknown, auth: Record<string, string>): Promise<unknown>
  usage(message: string): Error
  fail(message: string): Error
}

export interface CliIOLike {
  out(text: string): void
  err(text: string): void
  readonly env: NodeJS.ProcessEnv
}

export interface WorkflowCommand {
  readonly summary: string
  readonly usage: string
  readonly options: Record<string, { type: 'string' | 'boolean'; multiple?: boolean; short?: string }>
  run(v: Record<string, string | boolean | string[] | undefined>, positionals: string[], io: CliIOLike): Promise<number>
}

/** An assertion lives one minute: enough for one call, well under the 5-minute limit. */
const ASSERTION_LIFETIME_S = Math.min(60, ASSERTION_MAX_LIFETIME_S)

const common = { url: { type: 'string' }, json: { type: 'boolean' } } as const
const vendorOptions = { ...common, key: { type: 'string' }, as: { type: 'string' } } as const
const approverOptions = { ...common, approver: { type: 'string' }, totp: { type: 'string' } } as const

const VENDOR_HELP = `
  --key FILE   the sub-processor's private key, a JWK (default $JITGATE_VENDOR_KEY_FILE)
  --as ID      the sub-processor id (default $JITGATE_SUBPROCESSOR)
  --url URL    control plane (default $JITGATE_CONTROL_URL or http://127.0.0.1:8081)
  --json       print the whole answer as JSON`

const APPROVER_HELP = `
  With an identity provider: $JITGATE_ID_TOKEN holds your ID token.
  As a local approver: --approver ID (or $JITGATE_APPROVER), $JITGATE_ADMIN_TOKEN, and
  --totp CODE, the code your authenticator shows now (each code works once).
  --url URL    control plane (default $JITGATE_CONTROL_URL or http://127.0.0.1:8081)
  --json       print the whole answer as JSON`

interface RequestView {
  readonly id: string
  readonly status: string
  /** Who decided: an approver, `auto-approval`, `system` (expiry), or the requester (break-glass, cancel). */
  readonly decided_by?: string
  readonly kind: string
  readonly subject: string
  readonly resource: string
  readonly scopes: readonly string[]
  readonly duration_s: number
  readonly reason: string
  readonly expires_at: string
  readonly stages: readonly { group: string; approvals_required: number; approvals: readonly { approver: string }[] }[]
  readonly grant?: { id: string; status: string; expires_at?: string }
  readonly review?: { status: string; reviewed_by?: string; reviewed_at?: string; comment?: string }
  readonly token?: string
}

export function workflowCommands(h: WorkflowCliHelpers): Record<string, WorkflowCommand> {
  /** Signs a fresh single-use assertion for one call. */
  async function vendorAuth(v: Record<string, unknown>, io: CliIOLike): Promise<Record<string, string>> {
    const file = (v.key as string | undefined) ?? io.env.JITGATE_VENDOR_KEY_FILE
    const id = (v.as as string | undefined) ?? io.env.JITGATE_SUBPROCESSOR
    if (!file) throw h.usage('--key FILE (or $JITGATE_VENDOR_KEY_FILE) is required')
    if (!id) throw h.usage('--as ID (or $JITGATE_SUBPROCESSOR) is required')
    let jwk: JWK
    try {
      jwk = JSON.parse(readFileSync(file, 'utf8')) as JWK
    } catch (err) {
      throw h.fail(`cannot read the key file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'not a JSON JWK'}`)
    }
    const alg = jwk.alg ?? algorithmOf(jwk)
    if (alg === undefined || typeof jwk.d !== 'string') throw h.fail(`${file}: expected a private Ed25519, EC or RSA JWK`)
    const key = (await importJWK(jwk, alg)) as CryptoKey
    const now = Math.floor(Date.now() / 1000)
    const assertion = await new SignJWT({ jti: randomUUID() })
      .setProtectedHeader({ alg, ...(jwk.kid !== undefined ? { kid: jwk.kid } : {}) })
      .setIssuer(id)
      .setSubject(id)
      .setAudience(io.env.JITGATE_AUDIENCE ?? 'jitgate')
      .setIssuedAt(now)
      .setExpirationTime(now + ASSERTION_LIFETIME_S)
      .sign(key)
    return { authorization: `Bearer ${assertion}` }
  }

  /** An approver's credential headers; `act`: the call changes something, so MFA is needed. */
  function approverAuth(v: Record<string, unknown>, io: CliIOLike, act: boolean): Record<string, string> {
    if (io.env.JITGATE_ID_TOKEN) return { authorization: `Bearer ${io.env.JITGATE_ID_TOKEN}` }
    const approver = (v.approver as string | undefined) ?? io.env.JITGATE_APPROVER
    if (!approver) throw h.usage('set $JITGATE_ID_TOKEN, or name your local approver id with --approver (or $JITGATE_APPROVER)')
    const auth: Record<string, string> = { 'x-jitgate-approver': approver }
    if (io.env.JITGATE_ADMIN_TOKEN) auth.authorization = `Bearer ${io.env.JITGATE_ADMIN_TOKEN}`
    if (act) {
      if (!v.totp) throw h.usage('--totp CODE is required: the code your authenticator shows now')
      auth['x-jitgate-totp'] = v.totp as string
    }
    return auth
  }

  const id = (pos: string[], what = 'REQUEST_ID'): string => {
    const value = pos[0]
    if (!value) throw h.usage(`${what} is required`)
    return encodeURIComponent(value)
  }
  const show = (io: CliIOLike, v: Record<string, unknown>, r: RequestView): number => {
    if (v.json) io.out(`${JSON.stringify(r, null, 2)}\n`)
    else io.out(describe(r))
    return 0
  }

  return {
    'request create': {
      summary: 'Ask for access (sub-processor); prints the request id.',
      usage: `jitgate request create --resource ID --scope "METHODS PATH" [--scope ...] --duration D --reason TEXT [--ticket REF] [--break-glass]

  --duration D   with a unit: 30m, 2h, 1h30m (a bare number such as 60 is refused)
${VENDOR_HELP}`,
      options: { ...vendorOptions, resource: { type: 'string' }, scope: { type: 'string', multiple: true }, duration: { type: 'string' }, reason: { type: 'string' }, ticket: { type: 'string' }, 'break-glass': { type: 'boolean' } },
      async run(v, _pos, io) {
        for (const k of ['resource', 'scope', 'duration', 'reason']) if (v[k] === undefined) throw h.usage(`--${k} is required`)
        if (isBareNumber(v.duration)) throw h.usage(noUnitMessage('--duration', v.duration))
        const body = {
          resource: v.resource,
          scopes: v.scope,
          duration: v.duration,
          reason: v.reason,
          ...(v.ticket !== undefined ? { ticket: v.ticket } : {}),
          ...(v['break-glass'] === true ? { break_glass: true } : {}),
        }
        const r = (await h.api(io, v, 'POST', '/v1/requests', body, await vendorAuth(v, io))) as RequestView
        if (v.json) return show(io, v, r)
        io.err(`request ${r.id}: ${r.status}${r.status === 'approved' ? ` (jitgate request token ${r.id})` : ''}\n`)
        io.out(`${r.id}\n`)
        return 0
      },
    },
    'request status': {
      summary: 'Show one of your requests (sub-processor).',
      usage: `jitgate request status REQUEST_ID\n${VENDOR_HELP}`,
      options: vendorOptions,
      async run(v, pos, io) {
        // The token is printed by `request token` only, never as a side effect of a status check.
        const { token: _token, ...r } = (await h.api(io, v, 'GET', `/v1/requests/${id(pos)}`, undefined, await vendorAuth(v, io))) as RequestView
        return show(io, v, r)
      },
    },
    'request token': {
      summary: 'Print the JIT token of an approved request (sub-processor).',
      usage: `jitgate request token REQUEST_ID\n${VENDOR_HELP}`,
      options: vendorOptions,
      async run(v, pos, io) {
        const r = (await h.api(io, v, 'GET', `/v1/requests/${id(pos)}`, undefined, await vendorAuth(v, io))) as RequestView
        if (r.token === undefined) {
          throw h.fail(`no token: the request is ${r.status}${r.grant !== undefined ? ` and its grant ${r.grant.status}` : ''}`)
        }
        io.err(`grant ${r.grant?.id} expires ${r.grant?.expires_at}\n`)
        io.out(`${r.token}\n`)
        return 0
      },
    },
    'request cancel': {
      summary: 'Withdraw a pending request (sub-processor).',
      usage: `jitgate request cancel REQUEST_ID\n${VENDOR_HELP}`,
      options: vendorOptions,
      async run(v, pos, io) {
        return show(io, v, (await h.api(io, v, 'POST', `/v1/requests/${id(pos)}/cancel`, undefined, await vendorAuth(v, io))) as RequestView)
      },
    },
    'request relinquish': {
      summary: 'End the grant of an approved request now (sub-processor).',
      usage: `jitgate request relinquish REQUEST_ID\n${VENDOR_HELP}`,
      options: vendorOptions,
      async run(v, pos, io) {
        await h.api(io, v, 'POST', `/v1/requests/${id(pos)}/relinquish`, undefined, await vendorAuth(v, io))
        io.out(`relinquished the grant of ${pos[0]}\n`)
        return 0
      },
    },
    'grant extend': {
      summary: 'Ask to extend a grant (sub-processor): a new request under the same policy.',
      usage: `jitgate grant extend GRANT_OR_REQUEST_ID --duration D --reason TEXT [--ticket REF]

  GRANT_OR_REQUEST_ID   g_… (the grant) or r_… (the request that created it)
  --duration D          how much longer, with a unit: 30m, 2h (a bare number is refused)
${VENDOR_HELP}`,
      options: { ...vendorOptions, duration: { type: 'string' }, reason: { type: 'string' }, ticket: { type: 'string' } },
      async run(v, pos, io) {
        for (const k of ['duration', 'reason']) if (v[k] === undefined) throw h.usage(`--${k} is required`)
        if (isBareNumber(v.duration)) throw h.usage(noUnitMessage('--duration', v.duration))
        // A grant id is its request's id with another prefix (see workflow/request-store.ts).
        const target = pos[0]?.startsWith('g_') ? `r_${pos[0].slice(2)}` : pos[0]
        const body = { duration: v.duration, reason: v.reason, ...(v.ticket !== undefined ? { ticket: v.ticket } : {}) }
        const r = (await h.api(io, v, 'POST', `/v1/requests/${id(target ? [target] : [], 'GRANT_OR_REQUEST_ID')}/extend`, body, await vendorAuth(v, io))) as RequestView
        if (v.json) return show(io, v, r)
        io.err(`extension ${r.id}: ${r.status}\n`)
        io.out(`${r.id}\n`)
        return 0
      },
    },
    'approvals list': {
      summary: 'List requests waiting for a decision (approver).',
      usage: `jitgate approvals list [--all]

  --all        every request, not only pending ones
${APPROVER_HELP.replace(', and\n  --totp CODE, the code your authenticator shows now (each code works once).', ' (listing needs\n  no TOTP code: only decisions do).')}`,
      options: { ...approverOptions, all: { type: 'boolean' } },
      async run(v, _pos, io) {
        const res = (await h.api(io, v, 'GET', v.all ? '/v1/requests' : '/v1/requests?status=pending', undefined, approverAuth(v, io, false))) as { requests: RequestView[] }
        if (v.json) return io.out(`${JSON.stringify(res, null, 2)}\n`), 0
        if (res.requests.length === 0) io.out(v.all ? 'no requests\n' : 'no pending requests\n')
        for (const r of res.requests) io.out(describe(r))
        return 0
      },
    },
    'totp code': {
      summary: 'Print the current TOTP code of a base32 secret (an authenticator for scripts and development).',
      usage: `jitgate totp code --secret-env VAR

  --secret-env VAR   environment variable holding the base32 secret, e.g. EXAMPLE_ALICE_TOTP_SECRET
                     (never pass a secret as an argument: it would show in the process list)`,
      options: { 'secret-env': { type: 'string' } },
      async run(v, _pos, io) {
        const name = v['secret-env'] as string | undefined
        if (!name) throw h.usage('--secret-env VAR is required')
        const text = io.env[name]
        if (!text) throw h.usage(`$${name} is not set`)
        const secret = decodeBase32(text)
        if (!secret) throw h.usage(`$${name} is not a base32 secret`)
        io.out(`${totpCode(secret, Date.now())}\n`)
        return 0
      },
    },
    'approvals approve': {
      summary: 'Approve a request (approver, with MFA).',
      usage: `jitgate approvals approve REQUEST_ID [--comment TEXT]\n${APPROVER_HELP}`,
      options: { ...approverOptions, comment: { type: 'string' } },
      async run(v, pos, io) {
        const body = v.comment !== undefined ? { comment: v.comment } : {}
        return show(io, v, (await h.api(io, v, 'POST', `/v1/requests/${id(pos)}/approve`, body, approverAuth(v, io, true))) as RequestView)
      },
    },
    'approvals deny': {
      summary: 'Deny a request (approver, with MFA).',
      usage: `jitgate approvals deny REQUEST_ID [--comment TEXT]\n${APPROVER_HELP}`,
      options: { ...approverOptions, comment: { type: 'string' } },
      async run(v, pos, io) {
        const body = v.comment !== undefined ? { comment: v.comment } : {}
        return show(io, v, (await h.api(io, v, 'POST', `/v1/requests/${id(pos)}/deny`, body, approverAuth(v, io, true))) as RequestView)
      },
    },
    'approvals review': {
      summary: 'Close the review of a break-glass use (approver, with MFA).',
      usage: `jitgate approvals review REQUEST_ID [--comment TEXT]\n${APPROVER_HELP}`,
      options: { ...approverOptions, comment: { type: 'string' } },
      async run(v, pos, io) {
        const body = v.comment !== undefined ? { comment: v.comment } : {}
        return show(io, v, (await h.api(io, v, 'POST', `/v1/requests/${id(pos)}/review`, body, approverAuth(v, io, true))) as RequestView)
      },
    },
  }
}

/** The algorithm of a private JWK without `alg`. */
function algorithmOf(jwk: JWK): string | undefined {
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA'
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256'
  if (jwk.kty === 'EC' && jwk.crv === 'P-384') return 'ES384'
  if (jwk.kty === 'RSA') return 'RS256'
  return undefined
}

/** A request in a few lines, for people. */
function describe(r: RequestView): string {
  const stages = r.stages.map((s, i) => `stage ${i + 1} ${s.group}: ${s.approvals.length}/${s.approvals_required}${s.approvals.length ? ` (${s.approvals.map((a) => a.approver).join(', ')})` : ''}`)
  const lines = [
    `${r.id}  ${r.status}${r.kind !== 'access' ? ` (${r.kind})` : ''}  ${r.subject} → ${r.resource} for ${Math.round(r.duration_s / 60)} min`,
    `  scopes: ${r.scopes.join('; ')}`,
    `  reason: ${r.reason}`,
    // An auto-approved or break-glass request skipped its stages: say so rather than "0/1".
    r.kind === 'break_glass'
      ? '  approval: none (break-glass: review after the fact)'
      : r.decided_by === 'auto-approval'
        ? '  approval: auto-approved by its entitlement (no stage needed)'
        : `  ${stages.join('; ')}`,
  ]
  if (r.status === 'pending') lines.push(`  expires: ${r.expires_at}`)
  if ((r.status === 'denied' || r.status === 'cancelled') && r.decided_by !== undefined) lines.push(`  ${r.status} by: ${r.decided_by}`)
  if (r.review !== undefined) {
    lines.push(
      r.review.status === 'open'
        ? '  review: open (an approver closes it with `jitgate approvals review`)'
        : `  review: closed by ${r.review.reviewed_by ?? '?'} at ${r.review.reviewed_at ?? '?'}${r.review.comment ? `: ${r.review.comment}` : ''}`,
    )
  }
  if (r.grant !== undefined) lines.push(`  grant: ${r.grant.id} ${r.grant.status}${r.grant.expires_at !== undefined ? ` until ${r.grant.expires_at}` : ''}`)
  return `${lines.join('\n')}\n`
}

/**
 * Evidence export (`jitgate audit export`): one sub-processor's access requests, approvals,
 * grants and proxied calls over a period, from native JSON audit files, as a JSON report and a
 * CSV of the events, for an auditor. The report also says whether the files' chains verify, and
 * carries the SHA-256 of each file it was made from.
 */
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { readLines } from './read.js'
import { verifyAuditFiles, type Jwks, type VerifyReport } from './verify.js'

type Event = Readonly<Record<string, unknown>>

export interface ExportOptions {
  readonly subprocessor: string
  /** Inclusive. */
  readonly from: Date
  /** Exclusive. */
  readonly to: Date
  /** Checks checkpoint signatures too (else the chains only). */
  readonly jwks?: Jwks
}

export interface RequestRecord {
  access_request_id: string
  resource: string
  scopes?: readonly string[]
  reason?: string
  ticket?: string
  created_at?: string
  status: 'pending' | 'approved' | 'denied' | 'expired' | 'cancelled'
  approvals: { actor: string; stage?: number; at: string; comment?: string }[]
  decided_by?: string
  decided_at?: string
  escalated_at?: string
  grant_id?: string
}

export interface GrantRecord {
  grant_id: string
  resource: string
  scopes?: readonly string[]
  issued_at?: string
  issued_by?: string
  starts_at?: string
  expires_at?: string
  /** Claim-by window: the unclaimed grant's deadline, and its first use once claimed. */
  claim_by?: string
  claimed_at?: string
  reason?: string
  access_request_id?: string
  break_glass: boolean
  extensions: { at: string; by: string; expires_at: string; previous_expires_at: string }[]
  /** The grant ran out (its `grant.expired`): when it ended. */
  expired_at?: string
  revoked_at?: string
  revoked_by?: string
  revoke_reason?: string
  /** Proxied calls with this grant in the period. */
  calls: { allowed: number; denied: number }
}

export interface EvidenceReport {
  readonly subprocessor: string
  readonly from: string
  readonly to: string
  readonly generated_at: string
  readonly sources: readonly { file: string; sha256: string; lines: number }[]
  readonly integrity: {
    readonly verified: boolean
    readonly signatures_checked: boolean
    readonly problems: VerifyReport['problems']
  }
  readonly summary: {
    readonly events: number
    readonly requests: Record<string, number>
    readonly grants: Record<string, number>
    readonly break_glass: Record<string, number>
    readonly calls: { allowed: number; denied: number; by_resource: Record<string, { allowed: number; denied: number }>; denied_by_code: Record<string, number> }
    readonly first_event?: string
    readonly last_event?: string
  }
  readonly requests: readonly RequestRecord[]
  readonly grants: readonly GrantRecord[]
  /** Every event of the sub-processor in the period, oldest first. */
  readonly events: readonly Event[]
}

const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)
const bump = (o: Record<string, number>, k: string) => (o[k] = (o[k] ?? 0) + 1)

/** Builds the report. Requests and grants overlapping the period are described in full, from
 * whatever the files hold about them (a grant issued before `from` and used during it included). */
export async function buildEvidence(files: readonly string[], opts: ExportOptions): Promise<EvidenceReport> {
  const from = opts.from.getTime()
  const to = opts.to.getTime()
  const requests = new Map<string, RequestRecord>()
  const grants = new Map<string, GrantRecord>()
  const events: Event[] = []
  const sources: { file: string; sha256: string; lines: number }[] = []
  const grant = (id: string, resource: string): GrantRecord => {
    let g = grants.get(id)
    if (!g) grants.set(id, (g = { grant_id: id, resource, break_glass: false, extensions: [], calls: { allowed: 0, denied: 0 } }))
    return g
  }
  const request = (e: Event): RequestRecord => {
    const id = String(e.access_request_id)
    let r = requests.get(id)
    if (!r) requests.set(id, (r = { access_request_id: id, resource: String(e.resource), status: 'pending', approvals: [] }))
    return r
  }
  const summary = {
    events: 0,
    requests: {} as Record<string, number>,
    grants: {} as Record<string, number>,
    break_glass: {} as Record<string, number>,
    calls: { allowed: 0, denied: 0, by_resource: {} as Record<string, { allowed: number; denied: number }>, denied_by_code: {} as Record<string, number> },
  }

  for (const file of files) {
    let lines = 0
    for await (const { text } of readLines(file)) {
      lines++
      let e: Event
      try {
        e = JSON.parse(text) as Event
      } catch {
        continue // verify reports it
      }
      if (e.subject !== opts.subprocessor || typeof e.event !== 'string' || typeof e.time !== 'string') continue
      const at = Date.parse(e.time)
      const inPeriod = at >= from && at < to
      apply(e, inPeriod)
      if (inPeriod) events.push(e)
    }
    sources.push({ file, sha256: await sha256File(file), lines })
  }

  function apply(e: Event, inPeriod: boolean): void {
    const name = String(e.event)
    const time = String(e.time)
    const grantId = str(e.grant_id)
    const resource = String(e.resource ?? '')
    if (inPeriod) {
      if (name.startsWith('request.')) bump(summary.requests, name.slice('request.'.length))
      else if (name.startsWith('grant.')) bump(summary.grants, name.slice('grant.'.length))
      else if (name.startsWith('breakglass.')) bump(summary.break_glass, name.slice('breakglass.'.length))
    }
    switch (name) {
      case 'access.allowed':
      case 'access.denied': {
        if (!inPeriod) return
        const kind = name === 'access.allowed' ? 'allowed' : 'denied'
        summary.calls[kind]++
        const byResource = (summary.calls.by_resource[resource || '(no resource)'] ??= { allowed: 0, denied: 0 })
        byResource[kind]++
        if (kind === 'denied') bump(summary.calls.denied_by_code, String(e.code))
        if (grantId) grant(grantId, resource).calls[kind]++
        return
      }
      case 'grant.issued': {
        const g = grant(grantId ?? '', resource)
        Object.assign(g, {
          scopes: e.scopes,
          issued_at: time,
          issued_by: str(e.actor),
          starts_at: str(e.starts_at),
          expires_at: str(e.expires_at),
          ...(e.claim_by !== undefined ? { claim_by: str(e.claim_by) } : {}),
          ...(e.reason !== undefined ? { reason: str(e.reason) } : {}),
          ...(e.access_request_id !== undefined ? { access_request_id: str(e.access_request_id) } : {}),
        })
        return
      }
      case 'grant.extended':
        grant(grantId ?? '', resource).extensions.push({ at: time, by: String(e.actor), expires_at: String(e.expires_at), previous_expires_at: String(e.previous_expires_at) })
        grant(grantId ?? '', resource).expires_at = String(e.expires_at)
        return
      case 'grant.claimed':
        Object.assign(grant(grantId ?? '', resource), { claimed_at: str(e.claimed_at), expires_at: str(e.expires_at) })
        return
      case 'grant.revoked':
        Object.assign(grant(grantId ?? '', resource), { revoked_at: time, revoked_by: str(e.actor), revoke_reason: str(e.reason) })
        return
      case 'grant.expired':
        Object.assign(grant(grantId ?? '', resource), { expires_at: str(e.expires_at), expired_at: str(e.expires_at) })
        return
      case 'breakglass.used':
        grant(grantId ?? '', resource).break_glass = true
        return
      case 'request.created':
        Object.assign(request(e), { scopes: e.scopes, reason: str(e.reason), ticket: str(e.ticket), created_at: time })
        return
      case 'request.approval_recorded':
        request(e).approvals.push({ actor: String(e.actor), at: time, ...(typeof e.stage === 'number' ? { stage: e.stage } : {}), ...(e.comment !== undefined ? { comment: String(e.comment) } : {}) })
        return
      case 'request.escalated':
        request(e).escalated_at = time
        return
      case 'request.approved':
      case 'request.denied':
      case 'request.expired':
      case 'request.cancelled': {
        const r = request(e)
        r.status = name.slice('request.'.length) as RequestRecord['status']
        r.decided_at = time
        if (e.actor !== undefined) r.decided_by = String(e.actor)
        if (grantId) r.grant_id = grantId
        return
      }
    }
  }

  const overlaps = (start: string | undefined, end: string | undefined) =>
    (start === undefined || Date.parse(start) < to) && (end === undefined || Date.parse(end) >= from)
  const integrity = await verifyAuditFiles(files, { ...(opts.jwks ? { jwks: opts.jwks } : {}), partial: true })
  events.sort((a, b) => String(a.time).localeCompare(String(b.time)))
  return {
    subprocessor: opts.subprocessor,
    from: opts.from.toISOString(),
    to: opts.to.toISOString(),
    generated_at: new Date().toISOString(),
    sources,
    integrity: { verified: integrity.ok, signatures_checked: integrity.signaturesChecked, problems: integrity.problems },
    summary: { ...summary, events: events.length, ...(events.length ? { first_event: String(events[0]?.time), last_event: String(events.at(-1)?.time) } : {}) },
    requests: [...requests.values()].filter((r) => overlaps(r.created_at, r.decided_at)),
    grants: [...grants.values()].filter((g) => g.calls.allowed + g.calls.denied > 0 || overlaps(g.issued_at ?? g.starts_at, g.revoked_at ?? g.expires_at)),
    events,
  }
}

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256')
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer)
  return hash.digest('hex')
}

/** The CSV columns: one row per event. */
export const CSV_COLUMNS = [
  'time', 'event', 'subject', 'resource', 'grant_id', 'access_request_id', 'request_id', 'actor', 'method', 'path', 'status', 'code',
  'reason', 'comment', 'scopes', 'starts_at', 'expires_at', 'client_ip', 'gateway_id', 'chain', 'seq',
] as const

/**
 * One CSV cell (RFC 4180: quoted when it holds a comma, quote or line break, quotes doubled). A
 * value a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a leading
 * `'`: paths and reasons come from clients.
 */
export function csvCell(value: unknown): string {
  if (value === undefined || value === null) return ''
  let s = Array.isArray(value) ? value.join('; ') : String(value)
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s
}

/** The report's events as CSV (CRLF line ends, as RFC 4180 has them). */
export function toCsv(report: EvidenceReport): string {
  const rows = [CSV_COLUMNS.join(',')]
  for (const e of report.events) rows.push(CSV_COLUMNS.map((c) => csvCell(e[c])).join(','))
  return `${rows.join('\r\n')}\r\n`
}

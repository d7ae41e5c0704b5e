/**
 * `jitgate audit verify`: checks native JSON audit files against their hash chains and signed
 * checkpoints (`chain.ts`) and says where each problem is (file:line, seq). Files are read as
 * streams, oldest first, and may hold several chains (replicas, restarts) interleaved.
 */
import { readLines } from './read.js'
import { genesisHash, lineHash, verifyCheckpoint, type CheckpointClaims } from './chain.js'

export interface Jwks {
  readonly keys: readonly { readonly kid?: string; readonly x?: string; readonly kty?: string; readonly crv?: string }[]
}

export interface VerifyOptions {
  /** Public keys for checkpoint signatures; undefined = signatures not checked (said in the report). */
  readonly jwks?: Jwks
  /** Accept chains that start after seq 1 (older files not given) or lack their final checkpoint
   * (a running gateway's file, or one that crashed). Their unsigned tail is still reported. */
  readonly partial?: boolean
}

export interface VerifyProblem {
  readonly file: string
  /** 1-based line number; 0 when the problem is about a whole chain. */
  readonly line: number
  readonly seq?: number
  readonly chain?: string
  readonly message: string
}

export interface ChainSummary {
  readonly chain: string
  readonly gatewayId: string
  readonly firstSeq: number
  readonly lastSeq: number
  readonly events: number
  readonly checkpoints: number
  /** A final checkpoint ends the chain. */
  readonly sealed: boolean
  /** Events after the last valid checkpoint: chained, but not covered by a signature. */
  readonly unsigned: number
}

export interface VerifyReport {
  readonly ok: boolean
  readonly lines: number
  readonly signaturesChecked: boolean
  readonly problems: readonly VerifyProblem[]
  readonly chains: readonly ChainSummary[]
}

interface Where {
  readonly file: string
  readonly line: number
}

interface ChainState {
  readonly chain: string
  gatewayId: string
  firstSeq: number
  lastSeq: number
  lastHash: string
  lastAt: Where
  events: number
  checkpoints: number
  lastSignedSeq: number
  sealed: boolean
  /** Seqs skipped so far, with where the gap was noticed; one turning up later was reordered. */
  readonly missing: Map<number, Where>
}

/** Verifies audit files; never throws on bad content, only on unreadable files. */
export async function verifyAuditFiles(files: readonly string[], opts: VerifyOptions = {}): Promise<VerifyReport> {
  const chains = new Map<string, ChainState>()
  const problems: VerifyProblem[] = []
  let lines = 0
  const problem = (at: Where, message: string, seq?: number, chain?: string): void => {
    problems.push({ file: at.file, line: at.line, message, ...(seq !== undefined ? { seq } : {}), ...(chain !== undefined ? { chain } : {}) })
  }

  function onLine(text: string, at: Where): void {
    lines++
    let e: Record<string, unknown>
    try {
      e = JSON.parse(text) as Record<string, unknown>
    } catch {
      return problem(at, 'not a JSON event: the line was edited or cut')
    }
    const { chain, seq, prev_hash: prev } = e
    if (typeof chain !== 'string' || typeof seq !== 'number' || !Number.isInteger(seq) || typeof prev !== 'string') {
      return problem(at, 'not a chained audit event (no chain, seq or prev_hash)')
    }
    const hash = lineHash(text)
    let st = chains.get(chain)
    if (!st) {
      st = { chain, gatewayId: String(e.gateway_id ?? ''), firstSeq: seq, lastSeq: seq, lastHash: hash, lastAt: at, events: 1, checkpoints: 0, lastSignedSeq: 0, sealed: false, missing: new Map() }
      chains.set(chain, st)
      if (seq !== 1 && !opts.partial) problem(at, `the chain starts here: seq 1 to ${seq - 1} are missing (deleted, or in files not given)`, seq, chain)
      if (seq === 1 && prev !== genesisHash(chain)) problem(at, "the first event does not link to its chain's genesis: edited", seq, chain)
    } else {
      st.events++
      if (st.sealed) problem(at, `after the chain's final checkpoint (seq ${st.lastSeq}): inserted`, seq, chain)
      if (seq <= st.lastSeq) {
        const gap = st.missing.get(seq)
        if (gap) {
          st.missing.delete(seq)
          problem(at, `out of order (it belongs before ${gap.file}:${gap.line}): reordered`, seq, chain)
        } else {
          problem(at, `again after seq ${st.lastSeq}: duplicated or inserted`, seq, chain)
        }
        // The chain goes on from its furthest point; this line is not part of it.
        return
      }
      if (seq > st.lastSeq + 1) {
        for (let s = st.lastSeq + 1; s < seq; s++) st.missing.set(s, at)
      } else if (prev !== st.lastHash) {
        problem(
          st.lastAt,
          `does not match the hash recorded by the next event, seq ${seq} (${at.file}:${at.line}): one of them was edited, or one was inserted`,
          st.lastSeq,
          chain,
        )
      }
      st.lastSeq = seq
      st.lastHash = hash
      st.lastAt = at
    }
    if (e.event === 'audit.checkpoint') checkpoint(st, e, at, seq, prev)
  }

  function checkpoint(st: ChainState, e: Record<string, unknown>, at: Where, seq: number, prev: string): void {
    st.checkpoints++
    const final = e.final === true
    if (opts.jwks) {
      const key = opts.jwks.keys.find((k) => k.kid === e.kid)
      const claims: CheckpointClaims = { chain: st.chain, seq, prev_hash: prev, time: String(e.time), gateway_id: String(e.gateway_id), final }
      if (!key) problem(at, `checkpoint signed with key ${JSON.stringify(e.kid)}, which is not in the JWKS`, seq, st.chain)
      else if (typeof e.signature !== 'string' || !verifyCheckpoint(claims, e.signature, key)) {
        problem(at, 'checkpoint signature does not verify: the chain before it was altered, or the checkpoint was edited or forged', seq, st.chain)
      } else st.lastSignedSeq = seq
    }
    if (final) st.sealed = true
  }

  for (const file of files) {
    for await (const { line, text, incomplete } of readLines(file)) {
      if (incomplete) problem({ file, line }, 'the last line is incomplete (no newline): the file was cut')
      onLine(text, { file, line })
    }
  }

  for (const st of chains.values()) {
    for (const [seq, at] of st.missing) problem(at, `missing before this line: deleted`, seq, st.chain)
    if (!st.sealed && !opts.partial) {
      problem(
        st.lastAt,
        `the chain ends here without its final checkpoint: events after it were cut, or the gateway did not stop cleanly (--partial accepts this)`,
        st.lastSeq,
        st.chain,
      )
    }
  }
  problems.sort((a, b) => files.indexOf(a.file) - files.indexOf(b.file) || a.line - b.line)
  return {
    ok: problems.length === 0,
    lines,
    signaturesChecked: opts.jwks !== undefined,
    problems,
    chains: [...chains.values()].map((st) => ({
      chain: st.chain,
      gatewayId: st.gatewayId,
      firstSeq: st.firstSeq,
      lastSeq: st.lastSeq,
      events: st.events,
      checkpoints: st.checkpoints,
      sealed: st.sealed,
      unsigned: opts.jwks ? st.lastSeq - Math.max(st.lastSignedSeq, st.firstSeq - 1) : st.events,
    })),
  }
}

/** The report as the CLI prints it: one line per problem, then one per chain. */
export function formatVerifyReport(r: VerifyReport): string {
  const out: string[] = []
  for (const p of r.problems) out.push(`${p.file}:${p.line}: ${p.seq !== undefined ? `seq ${p.seq}: ` : ''}${p.message}`)
  for (const c of r.chains) {
    const signed = r.signaturesChecked ? `${c.checkpoints} checkpoint(s), ${c.unsigned} event(s) after the last valid signature` : `${c.checkpoints} checkpoint(s), signatures NOT checked`
    out.push(`chain ${c.chain} (gateway ${c.gatewayId}): seq ${c.firstSeq}..${c.lastSeq}, ${signed}${c.sealed ? ', sealed' : ', not sealed'}`)
  }
  out.push(r.ok ? `OK: ${r.lines} line(s) in ${r.chains.length} chain(s) verified` : `FAILED: ${r.problems.length} problem(s) in ${r.lines} line(s)`)
  return `${out.join('\n')}\n`
}

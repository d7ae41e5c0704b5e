/**
 * Compiles the principals part of the policy files (sub-processors, approver groups, approval
 * policies, local approvers, MFA rule; shapes in principals.ts) after the schema check, and runs
 * every semantic check on them: unknown references, duplicate ids across files, impossible values,
 * keys and secrets that cannot be used. Problems are collected, never thrown, so that one run
 * reports all of them with file, line, column and path.
 */
import { createPublicKey, type JsonWebKeyInput, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { JWK } from 'jose'
import { issueAt, type SourceIssue, type YamlSource } from '../config/yaml-source.js'
import { formatDuration, parseDuration } from '../util/duration.js'
import { privateJwkMember } from '../util/jwk.js'
import type {
  ApprovalPolicySpec,
  ApproverGroupSpec,
  EntitlementSpec,
  LocalApproverSpec,
  MfaSpec,
  PolicyFile,
  SubprocessorSpec,
} from './schema.js'
import type {
  ApprovalPolicy,
  ApproverGroup,
  Entitlement,
  KeySourceSpec,
  LocalApprover,
  MfaRule,
  Principals,
  Subprocessor,
  TimeWindow,
} from './principals.js'
import { compileScopes, scopeCovers, scopeReaches, type CompiledScope } from './scope.js'
import { parseWindow } from './window.js'

/** What the principals need to know of a declared resource (declared: even one with errors). */
export interface DeclaredResource {
  readonly maxTtlMs: number | undefined
  readonly pathPrefix: string | undefined
}

export interface CompilePrincipalsInput {
  readonly files: readonly { readonly value: PolicyFile; readonly source: YamlSource }[]
  /**
   * The parsed content of files that failed the schema check: not compiled, but the ids they
   * declare still count, so that a reference to them is not also reported as unknown.
   */
  readonly invalidFiles: readonly unknown[]
  readonly resources: ReadonlyMap<string, DeclaredResource>
  readonly env: NodeJS.ProcessEnv
  /** Offline tools (test, explain, diff) need no secret values: secrets are neither read nor checked. */
  readonly skipSecrets: boolean
  /** Every problem found is appended here. */
  readonly issues: SourceIssue[]
  /** Told about each non-secret file read (JWKS files), so that the policy version covers them. */
  onPublicInput(name: string, content: string): void
  /** Told about each secret read, so that a reload can tell a rotated secret from no change. */
  onSecretInput(content: Uint8Array): void
}

export interface CompiledPrincipals {
  readonly principals: Principals
  /** Subject → resource → the entitlements of that sub-processor for that resource. */
  readonly entitlementIndex: ReadonlyMap<string, ReadonlyMap<string, readonly Entitlement[]>>
  /**
   * `file:line` where each compiled sub-processor and entitlement is declared (for explanations),
   * worked out when asked: a source parsed off the main thread has its positions only on demand.
   */
  readonly origins: WeakMap<object, () => string>
}

/** RFC 8176 `mfa`: the one `amr` value that says "multiple factors" by itself. */
const DEFAULT_MFA: MfaRule = Object.freeze({ amrAny: Object.freeze(['mfa']), acrAny: Object.freeze([]) })

/** RFC 4226 §4 (R6): a shared secret of at least 128 bits; 160 recommended. */
const MIN_TOTP_SECRET_BYTES = 16
const MIN_RSA_BITS = 2048
/** `kty crv` (`kty` alone for RSA) of the keys accepted for verification. */
const SUPPORTED_KEYS = new Set(['OKP Ed25519', 'EC P-256', 'EC P-384', 'EC P-521', 'RSA'])

type Path = (string | number)[]

interface Item<T> {
  readonly spec: T
  readonly source: YamlSource
  readonly path: Path
}

/** Compiles and checks the principals of every file; problems go to `input.issues`. */
export function compilePrincipals(input: CompilePrincipalsInput): CompiledPrincipals {
  const origins = new WeakMap<object, () => string>()
  const at = (item: { source: YamlSource; path: Path }, rel: Path, message: string): void => {
    input.issues.push(issueAt(item.source, [...item.path, ...rel], message))
  }
  const lineOf = (item: { source: YamlSource; path: Path }): string =>
    `${item.source.file}:${item.source.locate(item.path).line}`

  /** The items of one kind across files, duplicates (by id) reported and dropped. */
  function collect<T extends { id: string }>(key: 'subprocessors' | 'approver_groups' | 'approval_policies' | 'local_approvers', noun: string): Item<T>[] {
    const firstSeen = new Map<string, Item<T>>()
    const out: Item<T>[] = []
    for (const { value, source } of input.files) {
      ;((value[key] ?? []) as T[]).forEach((spec, index) => {
        const item = { spec, source, path: [key, index] }
        const previous = firstSeen.get(spec.id)
        if (previous !== undefined) {
          at(item, ['id'], `duplicate ${noun} id "${spec.id}" (first defined at ${lineOf(previous)})`)
          return
        }
        firstSeen.set(spec.id, item)
        out.push(item)
      })
    }
    return out
  }

  const subprocessorItems = collect<SubprocessorSpec>('subprocessors', 'sub-processor')
  const groupItems = collect<ApproverGroupSpec>('approver_groups', 'approver group')
  const policyItems = collect<ApprovalPolicySpec>('approval_policies', 'approval policy')
  const approverItems = collect<LocalApproverSpec>('local_approvers', 'local approver')
  const groupSpecs = new Map<string, ApproverGroupSpec | undefined>(groupItems.map((i) => [i.spec.id, i.spec]))
  const policyIds = new Set(policyItems.map((i) => i.spec.id))
  for (const id of declaredIds(input.invalidFiles, 'approver_groups')) if (!groupSpecs.has(id)) groupSpecs.set(id, undefined)
  for (const id of declaredIds(input.invalidFiles, 'approval_policies')) policyIds.add(id)

  const approvalPolicies = new Map<string, ApprovalPolicy>()
  const approverGroups = new Map<string, ApproverGroup>()
  const localApprovers = new Map<string, LocalApprover>()
  const subprocessors = new Map<string, Subprocessor>()
  const entitlementIndex = new Map<string, Map<string, Entitlement[]>>()

  for (const item of subprocessorItems) {
    const sp = compileSubprocessor(item)
    if (sp) {
      subprocessors.set(sp.id, sp)
      origins.set(sp, () => lineOf(item))
      const byResource = new Map<string, Entitlement[]>()
      for (const e of sp.entitlements) byResource.set(e.resource, [...(byResource.get(e.resource) ?? []), e])
      entitlementIndex.set(sp.id, byResource)
    }
  }
  for (const item of groupItems) {
    const g = compileGroup(item)
    if (g) approverGroups.set(g.id, g)
  }
  for (const item of policyItems) {
    const p = compileApprovalPolicy(item)
    if (p) approvalPolicies.set(p.id, p)
  }
  for (const item of approverItems) {
    const a = compileLocalApprover(item)
    if (a) localApprovers.set(a.id, a)
  }
  const mfa = compileMfa()

  const principals: Principals = Object.freeze({ subprocessors, approverGroups, approvalPolicies, localApprovers, mfa })
  return { principals, entitlementIndex, origins }

  function compileSubprocessor(item: Item<SubprocessorSpec>): Subprocessor | undefined {
    const { spec } = item
    let ok = true
    const fail = (rel: Path, message: string) => {
      ok = false
      at(item, rel, message)
    }
    const contractEndsAt = endOfDayUtc(spec.contract_ends)
    if (contractEndsAt === undefined) fail(['contract_ends'], `"${spec.contract_ends}" is not a calendar date`)

    const keys: KeySourceSpec[] = []
    ;(spec.keys ?? []).forEach((k, i) => {
      const rel: Path = ['keys', i]
      if (k.jwk !== undefined) {
        const problem = checkPublicJwk(k.jwk)
        if (problem) fail([...rel, 'jwk'], problem)
        else keys.push(Object.freeze({ kind: 'jwk', jwk: Object.freeze({ ...(k.jwk as JWK) }) }))
      } else if (k.jwks_file !== undefined) {
        const jwksPath = resolve(item.source.file, '..', k.jwks_file)
        // The key set is part of the policy's version: a rotated or removed vendor key must make a
        // reload (SIGHUP) take effect, not count as "unchanged".
        // Named as written in the policy (not by absolute path), so replicas installed in different
        // folders compute the same version.
        const jwksRef = `${item.source.file.split('/').pop()}:${k.jwks_file}`
        const loaded = readJwksFile(jwksPath, (_file, content) => input.onPublicInput(jwksRef, content))
        if ('error' in loaded) fail([...rel, 'jwks_file'], loaded.error)
        else keys.push(Object.freeze({ kind: 'jwks_file', keys: Object.freeze(loaded.keys) }))
      } else if (k.jwks_url !== undefined) {
        keys.push(Object.freeze({ kind: 'jwks_url', url: k.jwks_url }))
      }
    })

    const entitlements: Entitlement[] = []
    ;(spec.entitlements ?? []).forEach((e, i) => {
      const compiled = compileEntitlement(item, e, ['entitlements', i])
      if (compiled) entitlements.push(compiled)
      else ok = false
    })
    if (!ok || contractEndsAt === undefined) return undefined
    return Object.freeze({
      id: spec.id,
      name: spec.name,
      contractEndsAt,
      keys: Object.freeze(keys),
      entitlements: Object.freeze(entitlements),
    })
  }

  function compileEntitlement(item: Item<SubprocessorSpec>, spec: EntitlementSpec, rel: Path): Entitlement | undefined {
    let ok = true
    const fail = (sub: Path, message: string) => {
      ok = false
      at(item, [...rel, ...sub], message)
    }
    const atLeastOneSecond = (text: string, sub: Path): number | undefined => {
      const ms = parseDuration(text) as number
      if (ms >= 1000) return ms
      fail(sub, 'must be at least 1s')
      return undefined
    }
    const resource = input.resources.get(spec.resource)
    if (!resource) fail(['resource'], `unknown resource "${spec.resource}"`)
    if (!policyIds.has(spec.approval)) fail(['approval'], `unknown approval policy "${spec.approval}"`)

    const scopeSet = compileScopes(spec.scopes)
    const checkScopes = (list: readonly string[], sub: Path): CompiledScope[] => {
      const set = compileScopes(list)
      for (const bad of set.invalid) fail([...sub, list.indexOf(bad.source)], bad.error)
      if (resource?.pathPrefix !== undefined) {
        for (const s of set.scopes) {
          if (!scopeReaches(s, resource.pathPrefix)) {
            fail([...sub, list.indexOf(s.source)], `"${s.source}" can never match: resource "${spec.resource}" serves ${resource.pathPrefix} only`)
          }
        }
      }
      return [...set.scopes]
    }
    checkScopes(spec.scopes, ['scopes'])

    const maxDurationMs = atLeastOneSecond(spec.max_duration, ['max_duration'])
    if (resource?.maxTtlMs !== undefined && maxDurationMs !== undefined && maxDurationMs > resource.maxTtlMs) {
      fail(['max_duration'], `max_duration ${spec.max_duration} is above the max_ttl ${formatDuration(resource.maxTtlMs)} of resource "${spec.resource}"`)
    }

    let window: TimeWindow | undefined
    if (spec.window !== undefined) {
      const parsed = parseWindow(spec.window)
      if (parsed.ok) window = parsed.window
      else fail(['window'], parsed.error)
    } else if (spec.enforce_window_at_use) {
      fail(['enforce_window_at_use'], 'enforce_window_at_use needs a window')
    }

    const claimWithinMs = spec.claim_within === undefined ? undefined : atLeastOneSecond(spec.claim_within, ['claim_within'])
    // Auto-approval grants access on demand: asking ahead and holding an unused grant gains nothing
    // then, and would only let unused grants pile up. (Break-glass is allowed beside it: an
    // emergency grant starts at once, whatever claim_within says.)
    if (spec.claim_within !== undefined && spec.auto_approve !== undefined) {
      fail(['claim_within'], 'claim_within cannot be combined with auto_approve: an auto-approved request is granted on demand; put the two in separate entitlements')
    }

    let autoApprove: Entitlement['autoApprove']
    if (spec.auto_approve !== undefined) {
      const auto = spec.auto_approve
      const autoMax = atLeastOneSecond(auto.max_duration, ['auto_approve', 'max_duration'])
      if (autoMax !== undefined && maxDurationMs !== undefined && autoMax > maxDurationMs) {
        fail(['auto_approve', 'max_duration'], `auto_approve.max_duration ${auto.max_duration} is above the entitlement's max_duration ${spec.max_duration}`)
      }
      checkScopes(auto.scopes, ['auto_approve', 'scopes']).forEach((s) => {
        if (!scopeSet.scopes.some((outer) => scopeCovers(outer, s))) {
          fail(['auto_approve', 'scopes', auto.scopes.indexOf(s.source)], `"${s.source}" is not within the entitlement's scopes`)
        }
      })
      if (autoMax !== undefined) autoApprove = Object.freeze({ maxDurationMs: autoMax, scopes: Object.freeze([...auto.scopes]) })
    }

    let breakGlass: Entitlement['breakGlass']
    if (spec.break_glass !== undefined) {
      const bgMax = atLeastOneSecond(spec.break_glass.max_duration, ['break_glass', 'max_duration'])
      if (bgMax !== undefined && maxDurationMs !== undefined && bgMax > maxDurationMs) {
        fail(['break_glass', 'max_duration'], `break_glass.max_duration ${spec.break_glass.max_duration} is above the entitlement's max_duration ${spec.max_duration}`)
      }
      if (bgMax !== undefined) breakGlass = Object.freeze({ maxDurationMs: bgMax })
    }

    if (!ok || maxDurationMs === undefined) return undefined
    const entitlement: Entitlement = Object.freeze({
      resource: spec.resource,
      scopes: Object.freeze([...spec.scopes]),
      scopeSet,
      maxDurationMs,
      approval: spec.approval,
      window,
      enforceWindowAtUse: spec.enforce_window_at_use ?? false,
      requireTicket: spec.require_ticket ?? false,
      claimWithinMs,
      autoApprove,
      breakGlass,
    })
    origins.set(entitlement, () => lineOf({ source: item.source, path: [...item.path, ...rel] }))
    return entitlement
  }

  function compileGroup(item: Item<ApproverGroupSpec>): ApproverGroup | undefined {
    const listed = item.spec.members ?? []
    const members = new Set(listed)
    if (members.size !== listed.length) {
      const twice = [...new Set(listed.filter((m, i) => listed.indexOf(m) !== i))]
      // `approvals: 2` over [alice, alice] would look satisfiable and never be.
      at(item, ['members'], `approver group "${item.spec.id}" lists ${twice.map((m) => `"${m}"`).join(', ')} more than once`)
    }
    const oidcGroups = new Set(item.spec.oidc_groups ?? [])
    if (members.size === 0 && oidcGroups.size === 0) {
      at(item, ['id'], `approver group "${item.spec.id}" has neither members nor oidc_groups: nobody could approve`)
      return undefined
    }
    return Object.freeze({ id: item.spec.id, members, oidcGroups })
  }

  function compileApprovalPolicy(item: Item<ApprovalPolicySpec>): ApprovalPolicy | undefined {
    const { spec } = item
    let ok = true
    const fail = (rel: Path, message: string) => {
      ok = false
      at(item, rel, message)
    }
    spec.stages.forEach((stage, i) => {
      if (!groupSpecs.has(stage.group)) {
        fail(['stages', i, 'group'], `unknown approver group "${stage.group}"`)
        return
      }
      // With IdP groups the membership is open-ended; with a static list it is exactly known. A
      // group with neither is reported on its own (and one that failed the schema is unknown).
      const group = groupSpecs.get(stage.group)
      const members = new Set(group?.members ?? []).size
      if (group !== undefined && members > 0 && (group.oidc_groups ?? []).length === 0 && stage.approvals > members) {
        fail(['stages', i, 'approvals'], `${stage.approvals} approvals needed but group "${stage.group}" has only ${members} member(s)`)
      }
    })
    const requestTtlMs = parseDuration(spec.request_ttl) as number
    if (requestTtlMs < 1000) fail(['request_ttl'], 'must be at least 1s')
    const escalateAfterMs = spec.escalate_after === undefined ? undefined : (parseDuration(spec.escalate_after) as number)
    if (escalateAfterMs !== undefined) {
      if (escalateAfterMs < 1000) fail(['escalate_after'], 'must be at least 1s')
      else if (escalateAfterMs >= requestTtlMs) {
        fail(['escalate_after'], `escalate_after ${spec.escalate_after} is not before request_ttl ${spec.request_ttl}: the request would expire first`)
      }
      if (spec.escalation_group === undefined) fail(['escalate_after'], 'escalate_after needs an escalation_group')
    }
    if (spec.escalation_group !== undefined) {
      if (!groupSpecs.has(spec.escalation_group)) fail(['escalation_group'], `unknown approver group "${spec.escalation_group}"`)
      if (escalateAfterMs === undefined) fail(['escalation_group'], 'escalation_group needs escalate_after')
    }
    if (spec.escalation_admits && spec.escalation_group === undefined) fail(['escalation_admits'], 'escalation_admits needs an escalation_group')
    if (!ok) return undefined
    return Object.freeze({
      id: spec.id,
      stages: Object.freeze(spec.stages.map((s) => Object.freeze({ group: s.group, approvals: s.approvals }))),
      requestTtlMs,
      escalateAfterMs,
      escalationGroup: spec.escalation_group,
      escalationAdmits: spec.escalation_admits ?? false,
    })
  }

  function compileLocalApprover(item: Item<LocalApproverSpec>): LocalApprover | undefined {
    const ref = item.spec.totp_secret
    let secret: Uint8Array = new Uint8Array(0)
    if (!input.skipSecrets) {
      const read = readSecret(ref, input.env, item.source.file)
      if ('error' in read) {
        at(item, ['totp_secret', ref.env !== undefined ? 'env' : 'file'], read.error)
        return undefined
      }
      const decoded = decodeBase32(read.value)
      if (decoded === undefined) {
        at(item, ['totp_secret'], 'the TOTP secret is not base32 (RFC 4648: letters A-Z and digits 2-7)')
        return undefined
      }
      if (decoded.length < MIN_TOTP_SECRET_BYTES) {
        at(item, ['totp_secret'], `the TOTP secret has ${decoded.length * 8} bits; at least ${MIN_TOTP_SECRET_BYTES * 8} are required (RFC 4226 §4)`)
        return undefined
      }
      input.onSecretInput(decoded)
      secret = decoded
    }
    const approver = { id: item.spec.id }
    // Non-enumerable: serialising an approver (a log line, a JSON dump) never carries the secret.
    Object.defineProperty(approver, 'totpSecret', { value: secret, enumerable: false })
    return Object.freeze(approver) as LocalApprover
  }

  function compileMfa(): MfaRule {
    let found: Item<MfaSpec> | undefined
    for (const { value, source } of input.files) {
      if (value.mfa === undefined) continue
      const item = { spec: value.mfa, source, path: ['mfa'] }
      if (found) {
        at(item, [], `mfa is already defined at ${lineOf(found)}`)
        continue
      }
      found = item
    }
    if (!found) return DEFAULT_MFA
    const amrAny = found.spec.amr_any ?? []
    const acrAny = found.spec.acr_any ?? []
    if (amrAny.length === 0 && acrAny.length === 0) {
      at(found, [], 'mfa lists no amr_any and no acr_any value: no approver could ever prove MFA')
    }
    return Object.freeze({ amrAny: Object.freeze([...amrAny]), acrAny: Object.freeze([...acrAny]) })
  }
}

/** The string ids declared under `key` in files that failed the schema check (best effort). */
export function declaredIds(values: readonly unknown[], key: string): string[] {
  const ids: string[] = []
  for (const value of values) {
    const list = value !== null && typeof value === 'object' ? (value as Record<string, unknown>)[key] : undefined
    if (!Array.isArray(list)) continue
    for (const item of list) {
      const id = item !== null && typeof item === 'object' ? (item as Record<string, unknown>).id : undefined
      if (typeof id === 'string') ids.push(id)
    }
  }
  return ids
}

/** `YYYY-MM-DD` → the end of that day in UTC (epoch ms), or undefined for a date that does not exist. */
function endOfDayUtc(text: string): number | undefined {
  const [y, m, d] = text.split('-').map(Number) as [number, number, number]
  const start = Date.UTC(y, m - 1, d)
  const date = new Date(start)
  if (date.getUTCFullYear() !== y || date.getUTCMonth() !== m - 1 || date.getUTCDate() !== d) return undefined
  return start + 86_400_000
}

/**
 * Why a JWK cannot be a sub-processor's verification key, or undefined when it can: an Ed25519,
 * EC (P-256, P-384, P-521) or RSA (at least 2048 bits) public key, with `use` absent or `sig`.
 */
export function checkPublicJwk(jwk: Record<string, unknown>): string | undefined {
  const privateMember = privateJwkMember(jwk)
  if (privateMember !== undefined) return `not a public key (it has "${privateMember}"): register the public key only`
  if (jwk.use !== undefined && jwk.use !== 'sig') return `"use" is ${JSON.stringify(jwk.use)}; a verification key has use "sig" or none`
  const kind = `${String(jwk.kty)}${jwk.kty === 'RSA' ? '' : ` ${String(jwk.crv)}`}`
  if (!SUPPORTED_KEYS.has(kind)) return `${kind} keys are not supported: expected an Ed25519, EC (P-256, P-384, P-521) or RSA public key`
  let key: KeyObject
  try {
    key = createPublicKey({ key: jwk as JsonWebKeyInput['key'], format: 'jwk' })
  } catch {
    return `not a valid ${kind} public key (check ${jwk.kty === 'RSA' ? 'n and e' : jwk.kty === 'EC' ? 'x and y' : 'x'})`
  }
  const bits = key.asymmetricKeyDetails?.modulusLength
  if (bits !== undefined && bits < MIN_RSA_BITS) return `RSA key of ${bits} bits; at least ${MIN_RSA_BITS} are required`
  return undefined
}

function readJwksFile(file: string, onContent: (name: string, content: string) => void): { keys: Readonly<JWK>[] } | { error: string } {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
    onContent(file, text)
  } catch (err) {
    return { error: `cannot read JWKS file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }
  }
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch {
    return { error: `JWKS file ${file} is not valid JSON` }
  }
  const keys = (json as { keys?: unknown }).keys
  if (!Array.isArray(keys) || keys.length === 0) return { error: `JWKS file ${file} has no "keys" array` }
  for (const [i, k] of keys.entries()) {
    const problem = k !== null && typeof k === 'object' ? checkPublicJwk(k as Record<string, unknown>) : 'not a JSON object'
    if (problem) return { error: `JWKS file ${file}, keys[${i}]: ${problem}` }
  }
  return { keys: keys.map((k: JWK) => Object.freeze({ ...k })) }
}

/** Reads a secret named by `{env}` or `{file}` (relative to the policy file), trimmed. */
export function readSecret(
  ref: { readonly env?: string; readonly file?: string },
  env: NodeJS.ProcessEnv,
  policyFile: string,
): { value: string } | { error: string } {
  if (ref.env !== undefined) {
    const value = env[ref.env]
    return value === undefined || value === '' ? { error: `environment variable ${ref.env} is not set` } : { value: value.trim() }
  }
  try {
    return { value: readFileSync(resolve(policyFile, '..', ref.file as string), 'utf8').trim() }
  } catch (err) {
    return { error: `cannot read secret file: ${(err as NodeJS.ErrnoException).code ?? 'error'}` }
  }
}

/**
 * RFC 4648 base32, as authenticator apps show TOTP secrets: case-insensitive, spaces and `=`
 * padding ignored. Undefined when the text is not base32.
 */
export function decodeBase32(text: string): Uint8Array | undefined {
  const clean = text.replace(/[\s=]/g, '').toUpperCase()
  if (!/^[A-Z2-7]*$/.test(clean)) return undefined
  const out = new Uint8Array(Math.floor((clean.length * 5) / 8))
  let bits = 0
  let value = 0
  let n = 0
  for (const c of clean) {
    value = ((value << 5) | 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'.indexOf(c)) & 0xfff
    bits += 5
    if (bits >= 8) {
      bits -= 8
      out[n++] = (value >>> bits) & 0xff
    }
  }
  return out
}

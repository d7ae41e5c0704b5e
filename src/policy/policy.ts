/**
 * Loads `policies/*.yaml` into one immutable, compiled Policy: every problem in every file is
 * reported together (file, line, column, path); a policy with any error is never used.
 * Everything the data plane needs per request (route table, upstream origins, credential headers,
 * the entitlements of each sub-processor by resource) is computed here, once per version.
 */
import { createHash, createHmac, randomBytes } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { checkSchema, deferredSource, issueAt, parseYaml, SourceError, sortIssues, type ParsedYaml, type SourceIssue, type YamlSource } from '../config/yaml-source.js'
import { parseOffThread } from './parse-off-thread.js'
import {
  ApprovalPolicySchema,
  ApproverGroupSchema,
  EntitlementSchema,
  LocalApproverSchema,
  MfaSchema,
  PolicyFileSchema,
  ResourceSchema,
  SubprocessorSchema,
  type PolicyFile,
  type ResourceSpec,
} from './schema.js'
import { Value } from '@sinclair/typebox/value'
import { parseDuration } from '../util/duration.js'
import { compileRoutes } from './routes.js'
import { normalizePath } from './path.js'
import { compilePrincipals, declaredIds, type DeclaredResource } from './compile-principals.js'
import type { Entitlement, Principals } from './principals.js'
import { cgiHeaderName } from '../util/header-name.js'

/** A protected upstream, compiled for the hot path. */
export interface Resource {
  readonly id: string
  readonly description: string
  /** `scheme://host:port` of the upstream. */
  readonly origin: string
  /** Host header sent upstream. */
  readonly upstreamHost: string
  /** Path of the upstream URL without trailing slash (`''` for the root), prepended when forwarding. */
  readonly basePath: string
  readonly pathPrefix: string | undefined
  readonly host: string | undefined
  readonly stripPrefix: boolean
  readonly maxTtlMs: number
  readonly websocket: boolean
  /** Per-resource upstream timeout; undefined = the gateway default. */
  readonly timeoutMs: number | undefined
  /**
   * Upstream credential headers `[lowercased name, value]`. Non-enumerable, so serialising a
   * resource (a log line, a JSON dump) can never carry a secret.
   */
  readonly inject: ReadonlyArray<readonly [string, string]>
  /** Names of the injected headers (safe to show). */
  readonly injectedHeaders: readonly string[]
}

export interface Policy {
  /**
   * Content hash of the policy files and the JWKS files they name (never of a secret): stamped on
   * grants and audit events, shown at `/readyz`, compared between replicas.
   */
  readonly version: string
  /**
   * Equal for two loads of identical inputs, secrets included, and different when anything changed
   * (a rotated secret keeps the version but changes this). A keyed hash with a per-process key, so
   * it reveals nothing about the secrets; meaningful only within this process.
   */
  readonly fingerprint: string
  readonly dir: string
  readonly files: readonly string[]
  readonly resources: ReadonlyMap<string, Resource>
  readonly principals: Principals
  /** The resource served at this host and normalised path. */
  matchRoute(host: string | undefined, path: string): Resource | undefined
  /**
   * The entitlements of sub-processor `subject` for `resource` (empty when it has none), or
   * undefined when `subject` is not a declared sub-processor.
   */
  entitlementsOf(subject: string, resource: string): readonly Entitlement[] | undefined
  /** `file:line` where a compiled resource, sub-processor or entitlement is declared. */
  originOf(item: object): string | undefined
}

export interface LoadPolicyOptions {
  readonly env?: NodeJS.ProcessEnv
  /**
   * Compile without reading any secret (upstream credentials, TOTP secrets): for offline tools
   * (`policy test`, `explain`, `diff`) that never forward a request. Such a policy must never serve.
   */
  readonly skipSecrets?: boolean
}

/** Key of {@link Policy.fingerprint}: fresh per process, so fingerprints never leave it meaningfully. */
const FINGERPRINT_KEY = randomBytes(32)
const NO_ENTITLEMENTS: readonly Entitlement[] = Object.freeze([])

/** Loads every `*.yaml`/`*.yml` file of `dir`; throws SourceError with every problem found. */
export function loadPolicy(dir: string, opts: LoadPolicyOptions = {}): Policy {
  const { absDir, texts } = readPolicyFolder(dir)
  return nonEmpty(compilePolicy(texts, { ...opts, dir: absDir }), absDir)
}

/**
 * {@link loadPolicy} for a running gateway (a reload): the same result, with the YAML parsed on a
 * worker thread, so requests keep being decided, under the policy in force, while it is read.
 */
export async function loadPolicyOffThread(dir: string, opts: LoadPolicyOptions = {}): Promise<Policy> {
  const { absDir, texts } = readPolicyFolder(dir)
  const parsed = await parseOffThread(texts)
  return nonEmpty(compilePolicy(texts, { ...opts, dir: absDir, parsed }), absDir)
}

function readPolicyFolder(dir: string): { absDir: string; texts: { file: string; text: string }[] } {
  const absDir = resolve(dir)
  let names: string[]
  try {
    names = readdirSync(absDir)
      .filter((n) => /\.ya?ml$/.test(n))
      .sort()
  } catch (err) {
    throw new SourceError([{ file: absDir, line: 0, column: 0, path: '', message: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'policy folder not found' : (err as Error).message }])
  }
  const texts: { file: string; text: string }[] = []
  const unreadable: SourceIssue[] = []
  for (const n of names) {
    const file = join(absDir, n)
    try {
      texts.push({ file, text: readFileSync(file, 'utf8') })
    } catch (err) {
      // Removed between the listing and the read (an editor saving), or not readable.
      unreadable.push({ file, line: 0, column: 0, path: '', message: `cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` })
    }
  }
  if (unreadable.length > 0) throw new SourceError(unreadable)
  return { absDir, texts }
}

function nonEmpty(policy: Policy, absDir: string): Policy {
  if (policy.resources.size === 0) {
    // Almost surely the wrong folder or an emptied file: a gateway with no routes refuses everything.
    throw new SourceError([{ file: absDir, line: 0, column: 0, path: '', message: 'no resources are declared in any *.yaml file of this folder' }])
  }
  return policy
}

/**
 * Compiles policy from in-memory texts (used by loadPolicy, `policy check` and tests). `parsed`:
 * the texts' YAML already parsed (off the main thread), one entry per text, in order.
 */
export function compilePolicy(
  texts: readonly { file: string; text: string }[],
  opts: LoadPolicyOptions & { dir?: string; parsed?: readonly ParsedYaml[] } = {},
): Policy {
  const env = opts.env ?? process.env
  const skipSecrets = opts.skipSecrets ?? false
  const issues: SourceIssue[] = []
  const specs: { spec: ResourceSpec; source: YamlSource; index: number }[] = []
  const files: { value: PolicyFile; source: YamlSource }[] = []
  const invalidFiles: unknown[] = []
  const hash = createHash('sha256')
  const fingerprint = createHmac('sha256', FINGERPRINT_KEY)
  const secretInput = (secret: string | Uint8Array) => fingerprint.update(secret).update('\u0000')
  for (const [i, { file, text }] of texts.entries()) {
    hash.update(`${file.split('/').pop()}\u0000${text}\u0000`)
    const given = opts.parsed?.[i]
    const parsed = given === undefined ? parseYaml(file, text) : given.ok ? { source: deferredSource(file, text, given.value), issues: [] } : { issues: given.issues }
    if (!parsed.source) {
      issues.push(...parsed.issues)
      continue
    }
    const checked = checkSchema(PolicyFileSchema, parsed.source.value ?? {}, parsed.source)
    if (!checked.ok) {
      issues.push(...checked.issues)
      invalidFiles.push(parsed.source.value)
      // Items that are well-formed on their own still get their semantic checks (references,
      // duplicates, secrets, route conflicts), so one run reports every problem instead of
      // revealing them a layer at a time.
      const salvaged = salvageItems(parsed.source.value)
      files.push({ value: salvaged, source: parsed.source })
      ;(salvaged.resources ?? []).forEach((spec, index) => specs.push({ spec, source: parsed.source as YamlSource, index }))
      continue
    }
    files.push({ value: checked.value, source: parsed.source })
    ;(checked.value.resources ?? []).forEach((spec, index) => specs.push({ spec, source: parsed.source as YamlSource, index }))
  }

  const resources = new Map<string, Resource>()
  const declared = new Map<string, DeclaredResource>()
  const origins = new WeakMap<object, () => string>()
  const firstSeen = new Map<string, () => string>()
  for (const { spec, source, index } of specs) {
    const at = (path: (string | number)[], message: string) => issues.push(issueAt(source, ['resources', index, ...path], message))
    const where = () => `${source.file}:${source.locate(['resources', index, 'id']).line}`
    const previous = firstSeen.get(spec.id)
    if (previous !== undefined) {
      at(['id'], `duplicate resource id "${spec.id}" (first defined at ${previous()})`)
      // Its own problems are reported all the same: fixing the id must not reveal new ones.
      compileResource(spec, env, source.file, at, skipSecrets, secretInput)
      continue
    }
    firstSeen.set(spec.id, where)
    declared.set(spec.id, { maxTtlMs: parseDuration(spec.max_ttl), pathPrefix: spec.match.path_prefix?.replace(/(.)\/$/, '$1') })
    const resource = compileResource(spec, env, source.file, at, skipSecrets, secretInput)
    if (resource) {
      resources.set(spec.id, resource)
      origins.set(resource, where)
    }
  }

  for (const id of declaredIds(invalidFiles, 'resources')) if (!declared.has(id)) declared.set(id, { maxTtlMs: undefined, pathPrefix: undefined })
  const compiled = compilePrincipals({
    files,
    invalidFiles,
    resources: declared,
    env,
    skipSecrets,
    issues,
    onPublicInput: (name, content) => hash.update(`${name}\u0000${content}\u0000`),
    onSecretInput: secretInput,
  })

  // Routes of every resource that compiled, even when others failed: conflicts are reported in
  // the same run, each at its resource's `match`, in the policy's own words.
  const routed = [...resources.values()]
  const routes = routed.map((r) => ({
    id: r.id,
    ...(r.host !== undefined ? { host: r.host } : {}),
    ...(r.pathPrefix !== undefined ? { pathPrefix: r.pathPrefix } : {}),
  }))
  const routeTable = compileRoutes(routes)
  const specOf = new Map(specs.map((x) => [x.spec.id, x]))
  for (const message of routeTable.errors) {
    const m = /^routes\[(\d+)\] \(id "[^"]*"\): (.*)$/.exec(message)
    const own = m ? specOf.get(routed[Number(m[1])]?.id ?? '') : undefined
    if (!m || !own) {
      issues.push({ file: opts.dir ?? '<policy>', line: 0, column: 0, path: 'resources', message })
      continue
    }
    const text = (m[2] as string)
      .replace(/routes\[(\d+)\] \(id "([^"]*)"\)/g, (_all, i: string, id: string) => {
        const other = specOf.get(routed[Number(i)]?.id ?? id)
        return other ? `resource "${id}" (${other.source.file}:${other.source.locate(['resources', other.index, 'match']).line})` : `resource "${id}"`
      })
      .replace(/pathPrefix/g, 'path_prefix')
    issues.push(issueAt(own.source, ['resources', own.index, 'match'], text))
  }
  if (issues.length > 0) throw new SourceError(sortIssues(issues))
  const version = hash.digest('hex').slice(0, 16)
  const { principals, entitlementIndex } = compiled
  return Object.freeze({
    version,
    fingerprint: fingerprint.update(version).digest('hex'),
    dir: opts.dir ?? '',
    files: Object.freeze(texts.map((t) => t.file)),
    resources,
    principals,
    matchRoute(host: string | undefined, path: string) {
      const id = routeTable.table.match(host, path)
      return id === undefined ? undefined : resources.get(id)
    },
    entitlementsOf(subject: string, resource: string) {
      const byResource = entitlementIndex.get(subject)
      return byResource === undefined ? undefined : (byResource.get(resource) ?? NO_ENTITLEMENTS)
    },
    originOf: (item: object) => (origins.get(item) ?? compiled.origins.get(item))?.(),
  })
}

function compileResource(
  spec: ResourceSpec,
  env: NodeJS.ProcessEnv,
  file: string,
  at: (path: (string | number)[], message: string) => void,
  skipSecrets: boolean,
  secretInput: (secret: string) => void,
): Resource | undefined {
  let ok = true
  const fail = (path: (string | number)[], message: string) => {
    ok = false
    at(path, message)
  }
  let url: URL | undefined
  try {
    url = new URL(spec.upstream)
    if (url.search || url.hash || url.username || url.password) {
      fail(['upstream'], 'the upstream URL must not carry a query, fragment or user info (use credentials)')
    }
  } catch {
    fail(['upstream'], 'not a valid URL')
  }
  if (spec.match.path_prefix === undefined && spec.match.host === undefined) {
    fail(['match'], 'a resource needs match.path_prefix, match.host, or both')
  }
  let pathPrefix = spec.match.path_prefix
  if (pathPrefix !== undefined) {
    const n = normalizePath(pathPrefix)
    if (!n.ok || n.path !== pathPrefix) fail(['match', 'path_prefix'], 'path_prefix must be a normalised path (no //, . or .. segments, no encoded /)')
    if (pathPrefix.length > 1 && pathPrefix.endsWith('/')) pathPrefix = pathPrefix.slice(0, -1)
  }
  if (spec.strip_prefix && pathPrefix === undefined) fail(['strip_prefix'], 'strip_prefix needs match.path_prefix')
  const maxTtlMs = parseDuration(spec.max_ttl) as number
  if (maxTtlMs < 1000) fail(['max_ttl'], 'max_ttl must be at least 1s')
  if (spec.timeout !== undefined && (parseDuration(spec.timeout) ?? 0) < 1) fail(['timeout'], 'timeout must be longer than 0')

  const inject: [string, string][] = []
  const seenHeaders = new Set<string>()
  ;(spec.credentials ?? []).forEach((cred, i) => {
    const name = cred.header.toLowerCase()
    // Judged by the spelling upstream servers read (`X_Api_Key` is `X-Api-Key` to CGI and WSGI).
    const spelling = cgiHeaderName(name)
    if (seenHeaders.has(spelling)) fail(['credentials', i, 'header'], `header ${cred.header} is injected twice (names differing only in "-", "_" or "." are one header upstream)`)
    seenHeaders.add(spelling)
    if (RESERVED_HEADERS.has(spelling) || spelling.startsWith('x-forwarded-') || spelling.startsWith('x-jit-')) {
      fail(['credentials', i, 'header'], `header ${cred.header} is set by the gateway and cannot be injected`)
    }
    if ((cred.env === undefined) === (cred.file === undefined)) {
      fail(['credentials', i], 'a credential takes exactly one of env or file')
      return
    }
    let secret: string | undefined
    if (skipSecrets) {
      secret = ''
    } else if (cred.env !== undefined) {
      secret = env[cred.env]
      if (secret === undefined || secret === '') fail(['credentials', i, 'env'], `environment variable ${cred.env} is not set`)
    } else {
      try {
        secret = readFileSync(resolve(file, '..', cred.file as string), 'utf8').trim()
      } catch (err) {
        fail(['credentials', i, 'file'], `cannot read secret file: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
      }
    }
    const value = `${cred.prefix ?? ''}${secret ?? ''}`
    if (/[\r\n\0]/.test(value)) fail(['credentials', i], 'the secret contains a line break or NUL')
    secretInput(value)
    inject.push([name, value])
  })
  if (!ok || !url) return undefined
  const resource = {
    id: spec.id,
    description: spec.description ?? '',
    origin: url.origin,
    upstreamHost: url.host,
    basePath: url.pathname === '/' ? '' : url.pathname.replace(/\/$/, ''),
    pathPrefix,
    host: spec.match.host?.toLowerCase().replace(/\.$/, ''),
    stripPrefix: spec.strip_prefix ?? false,
    maxTtlMs,
    websocket: spec.websocket ?? false,
    timeoutMs: spec.timeout === undefined ? undefined : parseDuration(spec.timeout),
    injectedHeaders: Object.freeze(inject.map(([n]) => n)),
  }
  Object.defineProperty(resource, 'inject', { value: Object.freeze(inject.map((p) => Object.freeze(p))), enumerable: false })
  return Object.freeze(resource) as Resource
}

const ITEM_SCHEMAS = {
  resources: ResourceSchema,
  subprocessors: SubprocessorSchema,
  approver_groups: ApproverGroupSchema,
  approval_policies: ApprovalPolicySchema,
  local_approvers: LocalApproverSchema,
} as const

/**
 * The well-formed items of a file that failed its schema check, each at its own index (a sparse
 * array: `forEach` skips the holes, so positions in error messages stay right).
 */
function salvageItems(value: unknown): PolicyFile {
  const out: Record<string, unknown> = {}
  if (value === null || typeof value !== 'object') return out as PolicyFile
  for (const [key, schema] of Object.entries(ITEM_SCHEMAS)) {
    const items = (value as Record<string, unknown>)[key]
    if (!Array.isArray(items)) continue
    const kept: unknown[] = new Array(items.length)
    items.forEach((item, i) => {
      if (Value.Check(schema, item)) kept[i] = item
      else if (key === 'subprocessors') {
        const partial = salvageEntitlements(item)
        if (partial !== undefined) kept[i] = partial
      }
    })
    out[key] = kept
  }
  const mfa = (value as Record<string, unknown>).mfa
  if (mfa !== undefined && Value.Check(MfaSchema, mfa)) out.mfa = mfa
  return out as PolicyFile
}

/**
 * A sub-processor whose only schema problems are in some of its entitlements: kept with its valid
 * entitlements at their own indexes (sparse), so the others' references are still checked.
 */
function salvageEntitlements(item: unknown): unknown {
  const entitlements = (item as { entitlements?: unknown } | null)?.entitlements
  if (!Array.isArray(entitlements)) return undefined
  const valid = entitlements.map((e) => (Value.Check(EntitlementSchema, e) ? e : undefined))
  const dense = valid.filter((e) => e !== undefined)
  if (!Value.Check(SubprocessorSchema, { ...(item as object), entitlements: dense })) return undefined
  const sparse: unknown[] = new Array(entitlements.length)
  valid.forEach((e, i) => {
    if (e !== undefined) sparse[i] = e
  })
  return { ...(item as object), entitlements: sparse }
}

/** Headers the gateway owns; a credential may not override them. */
const RESERVED_HEADERS = new Set([
  'host',
  'connection',
  'upgrade',
  'content-length',
  'transfer-encoding',
  'te',
  'trailer',
  'keep-alive',
  'forwarded',
  'x-real-ip',
  'x-request-id',
])

/** The path sent upstream for a normalised, checked request path. */
export function upstreamPath(resource: Resource, path: string): string {
  let p = path
  if (resource.stripPrefix && resource.pathPrefix !== undefined && resource.pathPrefix !== '/') {
    p = p.slice(resource.pathPrefix.length)
    if (p === '' || p[0] !== '/') p = `/${p}`
  }
  return resource.basePath + p
}

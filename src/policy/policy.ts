/**
 * Loads `policies/*.yaml` into one immutable, compiled Policy: every problem in every file is
 * reported together (file, line, column, path); a policy with any error is never used.
 * Everything the data plane needs per request (route table, upstream origins, credential headers)
 * is computed here, once.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { checkSchema, issueAt, parseYaml, SourceError, type SourceIssue, type YamlSource } from '../config/yaml-source.js'
import { PolicyFileSchema, type ResourceSpec } from './schema.js'
import { parseDuration } from '../util/duration.js'
import { compileRoutes, type RouteTable } from './routes.js'
import { normalizePath } from './path.js'

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
  /** Content hash of all policy files: stamped on grants and audit events. */
  readonly version: string
  readonly dir: string
  readonly files: readonly string[]
  readonly resources: ReadonlyMap<string, Resource>
  /** The resource served at this host and normalised path. */
  matchRoute(host: string | undefined, path: string): Resource | undefined
}

export interface LoadPolicyOptions {
  readonly env?: NodeJS.ProcessEnv
}

/** Loads every `*.yaml`/`*.yml` file of `dir`; throws SourceError with every problem found. */
export function loadPolicy(dir: string, opts: LoadPolicyOptions = {}): Policy {
  const absDir = resolve(dir)
  let names: string[]
  try {
    names = readdirSync(absDir)
      .filter((n) => /\.ya?ml$/.test(n))
      .sort()
  } catch (err) {
    throw new SourceError([{ file: absDir, line: 0, column: 0, path: '', message: (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'policy folder not found' : (err as Error).message }])
  }
  const texts = names.map((n) => ({ file: join(absDir, n), text: readFileSync(join(absDir, n), 'utf8') }))
  return compilePolicy(texts, { ...opts, dir: absDir })
}

/** Compiles policy from in-memory texts (used by loadPolicy, `policy check` and tests). */
export function compilePolicy(
  texts: readonly { file: string; text: string }[],
  opts: LoadPolicyOptions & { dir?: string } = {},
): Policy {
  const env = opts.env ?? process.env
  const issues: SourceIssue[] = []
  const specs: { spec: ResourceSpec; source: YamlSource; index: number }[] = []
  const hash = createHash('sha256')
  for (const { file, text } of texts) {
    hash.update(`${file.split('/').pop()}\u0000${text}\u0000`)
    const parsed = parseYaml(file, text)
    if (!parsed.source) {
      issues.push(...parsed.issues)
      continue
    }
    const checked = checkSchema(PolicyFileSchema, parsed.source.value ?? {}, parsed.source)
    if (!checked.ok) {
      issues.push(...checked.issues)
      continue
    }
    ;(checked.value.resources ?? []).forEach((spec, index) => specs.push({ spec, source: parsed.source as YamlSource, index }))
  }

  const resources = new Map<string, Resource>()
  const firstSeen = new Map<string, string>()
  for (const { spec, source, index } of specs) {
    const at = (path: (string | number)[], message: string) => issues.push(issueAt(source, ['resources', index, ...path], message))
    const where = `${source.file}:${source.locate(['resources', index, 'id']).line}`
    const previous = firstSeen.get(spec.id)
    if (previous !== undefined) {
      at(['id'], `duplicate resource id "${spec.id}" (first defined at ${previous})`)
      continue
    }
    firstSeen.set(spec.id, where)
    const resource = compileResource(spec, env, source.file, at)
    if (resource) resources.set(spec.id, resource)
  }

  let table: RouteTable | undefined
  if (issues.length === 0) {
    const routes = [...resources.values()].map((r) => ({
      id: r.id,
      ...(r.host !== undefined ? { host: r.host } : {}),
      ...(r.pathPrefix !== undefined ? { pathPrefix: r.pathPrefix } : {}),
    }))
    const compiled = compileRoutes(routes)
    for (const message of compiled.errors) issues.push({ file: opts.dir ?? '<policy>', line: 0, column: 0, path: 'resources', message })
    table = compiled.table
  }
  if (issues.length > 0 || !table) throw new SourceError(issues)
  const routeTable = table
  return Object.freeze({
    version: hash.digest('hex').slice(0, 16),
    dir: opts.dir ?? '',
    files: Object.freeze(texts.map((t) => t.file)),
    resources,
    matchRoute(host: string | undefined, path: string) {
      const id = routeTable.match(host, path)
      return id === undefined ? undefined : resources.get(id)
    },
  })
}

function compileResource(
  spec: ResourceSpec,
  env: NodeJS.ProcessEnv,
  file: string,
  at: (path: (string | number)[], message: string) => void,
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

  const inject: [string, string][] = []
  const seenHeaders = new Set<string>()
  ;(spec.credentials ?? []).forEach((cred, i) => {
    const name = cred.header.toLowerCase()
    if (seenHeaders.has(name)) fail(['credentials', i, 'header'], `header ${cred.header} is injected twice`)
    seenHeaders.add(name)
    if (RESERVED_HEADERS.has(name) || name.startsWith('x-forwarded-') || name.startsWith('x-jit-')) {
      fail(['credentials', i, 'header'], `header ${cred.header} is set by the gateway and cannot be injected`)
    }
    if ((cred.env === undefined) === (cred.file === undefined)) {
      fail(['credentials', i], 'a credential takes exactly one of env or file')
      return
    }
    let secret: string | undefined
    if (cred.env !== undefined) {
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

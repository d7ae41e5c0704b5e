/**
 * Principals for end-to-end workflow tests: a vendor key pair that signs real assertions, local
 * approvers with real TOTP secrets (base32, through the environment as in production), a real OIDC
 * issuer for approvers, a policy that names them all, and a small client for `/v1/requests`.
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { request } from 'undici'
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK } from 'jose'
import { totpCode } from '../../src/workflow/auth/totp.js'
import { startIssuer, type TestIssuer } from './issuer.js'
import { ADMIN_TOKEN } from './gateway.js'

export interface Vendor {
  readonly id: string
  readonly publicJwk: JWK
  readonly privateJwk: JWK
  /** A fresh, single-use assertion (`aud` = `jitgate`, 60 s). */
  assertion(overrides?: Record<string, unknown>): Promise<string>
}

export async function makeVendor(id: string): Promise<Vendor> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { extractable: true })
  const publicJwk = await exportJWK(publicKey)
  const privateJwk = await exportJWK(privateKey)
  return {
    id,
    publicJwk,
    privateJwk,
    assertion(overrides = {}) {
      const now = Math.floor(Date.now() / 1000)
      return new SignJWT({ iss: id, sub: id, aud: 'jitgate', iat: now, exp: now + 60, jti: randomUUID(), ...overrides })
        .setProtectedHeader({ alg: 'EdDSA' })
        .sign(privateKey as CryptoKey)
    },
  }
}

/** RFC 4648 base32, as authenticator apps take TOTP secrets. */
export function base32(bytes: Uint8Array): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567'
  let bits = 0
  let value = 0
  let out = ''
  for (const b of bytes) {
    value = (value << 8) | b
    bits += 8
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31]
      bits -= 5
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31]
  return out
}

export interface LocalApproverKey {
  readonly id: string
  readonly secret: Uint8Array
  readonly envName: string
  /** The code alice's authenticator shows now (optionally at another instant). */
  code(at?: number): string
}

export function makeLocalApprover(id: string): LocalApproverKey {
  const secret = randomBytes(20)
  return { id, secret, envName: `TOTP_${id.toUpperCase()}`, code: (at = Date.now()) => totpCode(secret, at) }
}

export interface WorkflowWorld {
  readonly acme: Vendor
  readonly globex: Vendor
  readonly alice: LocalApproverKey
  readonly bob: LocalApproverKey
  readonly idp: TestIssuer
  /** Environment the gateway needs (TOTP secrets). */
  readonly env: Record<string, string>
  /** Config YAML naming the IdP. */
  readonly config: string
  /** An ID token for an approver (`sub`, extra claims such as `amr`, `groups`). */
  idToken(sub: string, claims?: Record<string, unknown>): Promise<string>
}

/**
 * acme and globex (keys inline), alice and bob (local, TOTP) in crm-owners, the IdP group
 * `sec-team` as the security group, an OIDC issuer on port 0.
 */
export async function makeWorld(t: { teardown(fn: () => unknown): void }, configExtra = ''): Promise<WorkflowWorld> {
  const [acme, globex, idp] = await Promise.all([makeVendor('acme'), makeVendor('globex'), startIssuer(t, { alg: 'RS256' })])
  const alice = makeLocalApprover('alice')
  const bob = makeLocalApprover('bob')
  return {
    acme,
    globex,
    alice,
    bob,
    idp,
    env: { [alice.envName]: base32(alice.secret), [bob.envName]: base32(bob.secret) },
    config: `approvers:\n  oidc:\n    issuer: ${idp.url}\n    jwks_url: ${idp.jwksUrl}\n    audience: jitgate-console\n${configExtra}`,
    idToken(sub, claims = {}) {
      const now = Math.floor(Date.now() / 1000)
      return idp.sign({ iss: idp.url, aud: 'jitgate-console', sub, iat: now, exp: now + 600, amr: ['pwd', 'mfa'], groups: ['sec-team'], ...claims })
    },
  }
}

/** The principals part of a test policy for `makeWorld` (append to the resources). */
export function principalsYaml(w: WorkflowWorld, opts: { entitlement?: string; approval?: string; contractEnds?: string } = {}): string {
  const jwk = (v: Vendor) => JSON.stringify(v.publicJwk)
  return `
subprocessors:
  - id: acme
    name: ACME Support Ltd
    contract_ends: "${opts.contractEnds ?? '2099-12-31'}"
    keys:
      - jwk: ${jwk(w.acme)}
    entitlements:
      - resource: crm-api
        scopes: ["GET /crm/customers/**", "GET,POST /crm/tickets/**"]
        max_duration: 4h
        approval: two-stage
${opts.entitlement ?? ''}
  - id: globex
    name: Globex
    contract_ends: "2099-12-31"
    keys:
      - jwk: ${jwk(w.globex)}
approver_groups:
  - id: crm-owners
    members: [alice, bob]
  - id: security
    members: [carol-local]
    oidc_groups: [sec-team]
approval_policies:
  - id: two-stage
    stages:
      - { group: crm-owners, approvals: 1 }
      - { group: security, approvals: 1 }
${opts.approval ?? '    request_ttl: 1h'}
local_approvers:
  - id: alice
    totp_secret: { env: ${w.alice.envName} }
  - id: bob
    totp_secret: { env: ${w.bob.envName} }
mfa:
  amr_any: [mfa, otp]
`
}

export interface ApiAnswer {
  readonly status: number
  readonly json: any
}

/** One call to the control plane. `as`: a bearer token, or a local approver (admin token + TOTP). */
export async function api(
  controlUrl: string,
  method: 'GET' | 'POST',
  path: string,
  as: { bearer?: string; approver?: LocalApproverKey; totp?: string | false; admin?: boolean },
  body?: unknown,
): Promise<ApiAnswer> {
  const headers: Record<string, string> = {}
  if (as.bearer !== undefined) headers.authorization = `Bearer ${as.bearer}`
  if (as.admin === true || as.approver !== undefined) headers.authorization = `Bearer ${ADMIN_TOKEN}`
  if (as.approver !== undefined) {
    headers['x-jitgate-approver'] = as.approver.id
    if (as.totp !== false) headers['x-jitgate-totp'] = as.totp ?? as.approver.code()
  }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const res = await request(`${controlUrl}${path}`, { method, headers, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) })
  const text = await res.body.text()
  return { status: res.statusCode, json: text === '' ? undefined : JSON.parse(text) }
}

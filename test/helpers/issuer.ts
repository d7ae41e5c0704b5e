/**
 * A real token issuer for tests: a key pair, its public JWKS served over HTTP on port 0 (as an
 * OIDC provider or a vendor publishes theirs), and signing of arbitrary claims with that key.
 */
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { SignJWT, exportJWK, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose'

export interface TestIssuer {
  /** `http://127.0.0.1:PORT`: the OIDC issuer identifier. */
  readonly url: string
  readonly jwksUrl: string
  readonly publicJwk: JWK
  /** How many times the JWKS was fetched. */
  readonly fetches: () => number
  /** Signs `claims` (no defaults added) with the issuer's key. */
  sign(claims: JWTPayload, header?: Record<string, unknown>): Promise<string>
}

export async function startIssuer(
  t: { teardown(fn: () => unknown): void },
  opts: { alg?: 'RS256' | 'ES256' | 'EdDSA'; kid?: string } = {},
): Promise<TestIssuer> {
  const alg = opts.alg ?? 'RS256'
  const { privateKey, publicKey } = await generateKeyPair(alg)
  const kid = opts.kid ?? `key-${alg.toLowerCase()}`
  const publicJwk: JWK = { ...(await exportJWK(publicKey)), kid, alg, use: 'sig' }
  let fetches = 0
  const server = createServer((req, res) => {
    if (req.url !== '/jwks.json') return void res.writeHead(404).end()
    fetches++
    const body = JSON.stringify({ keys: [publicJwk] })
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }).end(body)
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    jwksUrl: `${url}/jwks.json`,
    publicJwk,
    fetches: () => fetches,
    sign: (claims, header = {}) =>
      new SignJWT(claims).setProtectedHeader({ alg, kid, ...header }).sign(privateKey as CryptoKey),
  }
}

/** Sub-processor assertions: real keys (inline, file, JWKS URL over HTTP), every refusal, replay. */
import { randomUUID } from 'node:crypto'
import t, { type Test } from 'tap'
import { SignJWT, generateKeyPair, exportJWK, type JWK, type JWTPayload } from 'jose'
import { createAssertionVerifier } from '../../../src/workflow/auth/assertion.js'
import { createMemoryRequestStore } from '../../../src/workflow/memory-request-store.js'
import type { KeySourceSpec } from '../../../src/policy/principals.js'
import { startIssuer } from '../../helpers/issuer.js'
import { principals, subprocessor } from '../fixtures.js'

const AUD = 'jitgate'

/** A vendor key pair (JWKS served over HTTP) registered for acme through `keys`, and a verifier. */
async function setup(t: Test, keys: (jwksUrl: string, jwk: JWK) => KeySourceSpec[]) {
  const vendor = await startIssuer(t, { alg: 'EdDSA', kid: 'acme-1' })
  const store = createMemoryRequestStore({ timeoutMs: 1000, retentionMs: 60_000 })
  t.teardown(() => store.close())
  const p = principals({ subprocessors: [subprocessor({ keys: keys(vendor.jwksUrl, vendor.publicJwk) })] })
  const verifier = createAssertionVerifier({ principals: () => p, audience: AUD, clockToleranceS: 30, claimOnce: (k, ttl) => store.claimOnce(k, ttl) })
  const now = Math.floor(Date.now() / 1000)
  const claims = (over: Record<string, unknown> = {}): JWTPayload => ({ iss: 'acme', sub: 'acme', aud: AUD, iat: now, exp: now + 60, jti: randomUUID(), ...over })
  return { vendor, verifier, claims }
}

t.test('an inline JWK: a valid assertion passes once; its replay is refused', async (t) => {
  const { vendor, verifier, claims } = await setup(t, (_u, jwk) => [{ kind: 'jwk', jwk }])
  const token = await vendor.sign(claims())
  t.same(await verifier.verify(token), { ok: true, subject: 'acme' })
  t.match(await verifier.verify(token), { ok: false, code: 'assertion_replayed' })
})

t.test('a JWKS file and a JWKS URL (fetched over HTTP, cached)', async (t) => {
  const fromFile = await setup(t, (_u, jwk) => [{ kind: 'jwks_file', keys: [jwk] }])
  t.same(await fromFile.verifier.verify(await fromFile.vendor.sign(fromFile.claims())), { ok: true, subject: 'acme' })
  const fromUrl = await setup(t, (url) => [{ kind: 'jwks_url', url }])
  t.same(await fromUrl.verifier.verify(await fromUrl.vendor.sign(fromUrl.claims())), { ok: true, subject: 'acme' })
  t.same(await fromUrl.verifier.verify(await fromUrl.vendor.sign(fromUrl.claims())), { ok: true, subject: 'acme' })
  t.equal(fromUrl.vendor.fetches(), 1, 'the key set is fetched once and cached')
})

t.test('a key source without the key passes to the next one', async (t) => {
  const other = await generateKeyPair('EdDSA', { extractable: true })
  const otherJwk = { ...(await exportJWK(other.publicKey)), kid: 'acme-1' }
  const { vendor, verifier, claims } = await setup(t, (url) => [{ kind: 'jwk', jwk: { ...otherJwk, kid: 'old' } }, { kind: 'jwks_url', url }])
  t.same(await verifier.verify(await vendor.sign(claims())), { ok: true, subject: 'acme' })
})

t.test('every refusal', async (t) => {
  const { vendor, verifier, claims } = await setup(t, (_u, jwk) => [{ kind: 'jwk', jwk }])
  const now = Math.floor(Date.now() / 1000)
  const check = async (c: JWTPayload, detail: RegExp, header?: Record<string, unknown>) =>
    t.match(await verifier.verify(await vendor.sign(c, header)), { ok: false, code: 'credentials_invalid', detail }, detail.source)
  await check(claims({ aud: 'another-service' }), /aud must be "jitgate"/)
  await check(claims({ iss: 'globex', sub: 'globex' }), /not a registered sub-processor/)
  await check(claims({ iss: 'nobody' }), /not a registered sub-processor/)
  await check(claims({ sub: 'globex' }), /claim "sub" check failed/)
  await check(claims({ exp: now - 120 }), /expired/)
  await check(claims({ exp: now + 3600 }), /more than 300 seconds ahead/)
  await check(claims({ jti: undefined }), /claim "jti" check failed|jti/)
  await check(claims({ jti: 'x'.repeat(300) }), /jti must be/)
  await check(claims(), /no registered key matches/, { kid: 'unknown-kid' })
  const stranger = await generateKeyPair('EdDSA')
  const forged = await new SignJWT(claims()).setProtectedHeader({ alg: 'EdDSA', kid: 'acme-1' }).sign(stranger.privateKey)
  t.match(await verifier.verify(forged), { ok: false, code: 'credentials_invalid', detail: /signature verification failed/ })
  const hs = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('x'.repeat(32)))
  t.match(await verifier.verify(hs), { ok: false, code: 'credentials_invalid', detail: /algorithm not allowed/ })
  t.match(await verifier.verify('not.a.jwt'), { ok: false, code: 'credentials_invalid' })
  t.match(await verifier.verify('garbage'), { ok: false, code: 'credentials_invalid', detail: 'not a compact JWS' })
})

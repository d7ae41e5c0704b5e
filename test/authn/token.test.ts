import t from 'tap'
import { mkdtempSync, statSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT, importJWK } from 'jose'
import { loadKeyRing, DEV_KEY_FILE, generateSigningKey } from '../../src/authn/keys.js'
import { createTokenIssuer, createTokenVerifier, extractBearer } from '../../src/authn/token.js'
import type { Grant } from '../../src/grants/types.js'

const dataDir = () => mkdtempSync(join(tmpdir(), 'jitgate-keys-'))

function grant(over: Partial<Grant> = {}): Grant {
  const now = Date.now()
  return {
    id: 'g_test0000000001',
    subject: 'acme',
    resource: 'crm-api',
    scopes: ['GET /crm/**'],
    startsAt: now,
    createdAt: now,
    expiresAt: now + 60_000,
    issuedBy: 'test',
    ...over,
  }
}

t.test('a dev key is generated once, mode 0600, and reused', async (t) => {
  const dir = dataDir()
  const generated: string[] = []
  const a = await loadKeyRing({ signingKey: undefined, verificationKeyFiles: [], dataDir: dir }, (f) => generated.push(f))
  t.same(generated, [join(dir, DEV_KEY_FILE)])
  t.equal(statSync(join(dir, DEV_KEY_FILE)).mode & 0o777, 0o600)
  const b = await loadKeyRing({ signingKey: undefined, verificationKeyFiles: [], dataDir: dir }, (f) => generated.push(f))
  t.equal(generated.length, 1, 'not generated again')
  t.equal(a.signing.kid, b.signing.kid)
  t.same(Object.keys(a.jwks.keys[0] ?? {}).sort(), ['alg', 'crv', 'kid', 'kty', 'use', 'x'], 'JWKS holds no private part')
})

t.test('a bad key file is a clear error that does not echo the key', async (t) => {
  const dir = dataDir()
  const file = join(dir, 'k.json')
  writeFileSync(file, '{"kty":"OKP","crv":"Ed25519","x":"AAAA","d":"c2VjcmV0LXZhbHVl"}')
  await t.rejects(loadKeyRing({ signingKey: { file }, verificationKeyFiles: [], dataDir: dir }), {
    name: 'KeyError',
    message: /invalid signing key from .*k\.json/,
  })
  try {
    await loadKeyRing({ signingKey: { inline: 'not a key' }, verificationKeyFiles: [], dataDir: dir })
  } catch (err) {
    t.notMatch((err as Error).message, /not a key/)
  }
})

t.test('issue → verify round trip, and every failure code', async (t) => {
  const ring = await loadKeyRing({ signingKey: undefined, verificationKeyFiles: [], dataDir: dataDir() })
  const issuer = createTokenIssuer(ring, 'jitgate')
  const verifier = createTokenVerifier({ keys: ring, issuer: 'jitgate', clockToleranceS: 5, cacheSize: 100 })
  const token = await issuer.issue(grant())
  const ok = await verifier.verify(token, 'crm-api')
  t.ok(ok.ok)
  if (ok.ok) t.match(ok.claims, { sub: 'acme', jti: 'g_test0000000001', aud: 'crm-api' })
  t.match(await verifier.verify(token, 'other'), { ok: false, code: 'token_invalid' }, 'wrong audience')

  const expired = await issuer.issue(grant({ expiresAt: Date.now() - 60_000, startsAt: Date.now() - 120_000 }))
  t.match(await verifier.verify(expired, 'crm-api'), { ok: false, code: 'token_expired' })
  const future = await issuer.issue(grant({ startsAt: Date.now() + 60_000, expiresAt: Date.now() + 120_000 }))
  t.match(await verifier.verify(future, 'crm-api'), { ok: false, code: 'token_not_yet_valid' })

  const [h, p, s] = token.split('.') as [string, string, string]
  t.match(await verifier.verify(`${h}.${p}.${s.slice(0, -4)}AAAA`, 'crm-api'), { ok: false, code: 'token_invalid' }, 'bad signature')
  t.match(await verifier.verify(`${h}.${p}`, 'crm-api'), { ok: false, code: 'token_malformed' })
  t.match(await verifier.verify('a.b.c', 'crm-api'), { ok: false, code: 'token_malformed' })
  t.match(await verifier.verify(`${h}.${p}.${s}.x`, 'crm-api'), { ok: false, code: 'token_malformed' })
  // The exact input of a finding: another last letter with the same 2 significant bits verified too.
  const B64 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
  const respell = (seg: string) => {
    const v = B64.indexOf(seg.at(-1) as string)
    return seg.slice(0, -1) + (B64[v ^ 1] as string)
  }
  t.equal(s.length % 4, 2, 'an Ed25519 signature leaves 4 bits unused')
  t.match(await verifier.verify(`${h}.${p}.${respell(s)}`, 'crm-api'), { ok: false, code: 'token_malformed', detail: 'not canonical base64url' })
  if (h.length % 4 !== 0) t.match(await verifier.verify(`${respell(h)}.${p}.${s}`, 'crm-api'), { ok: false, code: 'token_malformed' })
  if (p.length % 4 !== 0) t.match(await verifier.verify(`${h}.${respell(p)}.${s}`, 'crm-api'), { ok: false, code: 'token_malformed' })
  t.ok((await verifier.verify(token, 'crm-api')).ok, 'the token as issued still verifies')

  // A token signed by someone else's key, a wrong typ, a wrong issuer, alg none, HS256.
  const other = await generateSigningKey()
  const otherKey = await importJWK(other.privateJwk, 'EdDSA')
  const base = () => new SignJWT({}).setSubject('acme').setAudience('crm-api').setJti('g_x').setIssuedAt().setExpirationTime('1m')
  const foreign = await base().setProtectedHeader({ alg: 'EdDSA', typ: 'jit+jwt', kid: ring.signing.kid }).setIssuer('jitgate').sign(otherKey)
  t.match(await verifier.verify(foreign, 'crm-api'), { ok: false, code: 'token_invalid' }, 'foreign key with our kid')
  const wrongTyp = await base().setProtectedHeader({ alg: 'EdDSA', typ: 'JWT', kid: ring.signing.kid }).setIssuer('jitgate').sign(ring.signing.key)
  t.match(await verifier.verify(wrongTyp, 'crm-api'), { ok: false, code: 'token_invalid' }, 'typ pinned')
  const wrongIss = await base().setProtectedHeader({ alg: 'EdDSA', typ: 'jit+jwt', kid: ring.signing.kid }).setIssuer('evil').sign(ring.signing.key)
  t.match(await verifier.verify(wrongIss, 'crm-api'), { ok: false, code: 'token_invalid' }, 'issuer pinned')
  const hs = await base().setProtectedHeader({ alg: 'HS256', typ: 'jit+jwt' }).setIssuer('jitgate').sign(new TextEncoder().encode('x'.repeat(32)))
  t.match(await verifier.verify(hs, 'crm-api'), { ok: false, code: 'token_invalid' }, 'HS256 refused')
  const none = `${Buffer.from('{"alg":"none","typ":"jit+jwt"}').toString('base64url')}.${p}.`
  t.match(await verifier.verify(none, 'crm-api'), { ok: false, code: 'token_malformed' }, 'alg none has no signature segment')
  const noJti = await new SignJWT({}).setSubject('acme').setAudience('crm-api').setIssuedAt().setExpirationTime('1m')
    .setProtectedHeader({ alg: 'EdDSA', typ: 'jit+jwt', kid: ring.signing.kid }).setIssuer('jitgate').sign(ring.signing.key)
  t.match(await verifier.verify(noJti, 'crm-api'), { ok: false, code: 'token_invalid' }, 'jti required')
})

t.test('the verified-token cache still honours exp and audience', async (t) => {
  const ring = await loadKeyRing({ signingKey: undefined, verificationKeyFiles: [], dataDir: dataDir() })
  let now = Date.now()
  const issuer = createTokenIssuer(ring, 'jitgate')
  const verifier = createTokenVerifier({ keys: ring, issuer: 'jitgate', clockToleranceS: 0, cacheSize: 2, now: () => now })
  const token = await issuer.issue(grant({ expiresAt: now + 10_000 }))
  t.ok((await verifier.verify(token, 'crm-api')).ok)
  t.match(await verifier.verify(token, 'billing'), { code: 'token_invalid' }, 'cached token, other audience')
  now += 11_000
  t.match(await verifier.verify(token, 'crm-api'), { code: 'token_expired' }, 'cached token past exp')
})

t.test('verifyCached answers only for a token verified before, exactly as verify does', async (t) => {
  const ring = await loadKeyRing({ signingKey: undefined, verificationKeyFiles: [], dataDir: dataDir() })
  let now = Date.now()
  const issuer = createTokenIssuer(ring, 'jitgate')
  const verifier = createTokenVerifier({ keys: ring, issuer: 'jitgate', clockToleranceS: 0, cacheSize: 2, now: () => now })
  const token = await issuer.issue(grant({ expiresAt: now + 10_000 }))
  t.equal(verifier.verifyCached(token, 'crm-api'), undefined, 'never verified: no answer, verify must run')
  const first = await verifier.verify(token, 'crm-api')
  t.ok(first.ok)
  t.same(verifier.verifyCached(token, 'crm-api'), first, 'the same verdict, without waiting')
  t.match(verifier.verifyCached(token, 'billing'), { ok: false, code: 'token_invalid', who: { sub: 'acme' } }, 'other audience')
  // (Another spelling for sure: an Ed25519 signature ends in "AA" once in 256 tokens.)
  t.equal(verifier.verifyCached(`${token.slice(0, -2)}${token.endsWith('AA') ? 'QA' : 'AA'}`, 'crm-api'), undefined, 'another spelling is another token')
  now += 11_000
  t.match(verifier.verifyCached(token, 'crm-api'), { code: 'token_expired' }, 'past exp')
  t.equal(verifier.verifyCached(token, 'crm-api'), undefined, 'an expired token leaves the cache')
  const off = createTokenVerifier({ keys: ring, issuer: 'jitgate', clockToleranceS: 0, cacheSize: 0, now: () => Date.now() })
  const fresh = await issuer.issue(grant({ expiresAt: Date.now() + 10_000 }))
  t.ok((await off.verify(fresh, 'crm-api')).ok)
  t.equal(off.verifyCached(fresh, 'crm-api'), undefined, 'no cache, no cached answer')
})

t.test('rotation: a token signed by a previous key verifies while its public key is listed', async (t) => {
  const dir = dataDir()
  const old = await generateSigningKey()
  const oldFile = join(dir, 'old.jwk.json')
  const oldPub = join(dir, 'old.pub.json')
  writeFileSync(oldFile, JSON.stringify(old.privateJwk))
  writeFileSync(oldPub, JSON.stringify(old.publicJwk))
  const oldRing = await loadKeyRing({ signingKey: { file: oldFile }, verificationKeyFiles: [], dataDir: dir })
  const token = await createTokenIssuer(oldRing, 'jitgate').issue(grant())
  const next = await generateSigningKey()
  const ring = await loadKeyRing({ signingKey: { inline: JSON.stringify(next.privateJwk) }, verificationKeyFiles: [oldPub], dataDir: dir })
  t.equal(ring.jwks.keys.length, 2)
  const v = createTokenVerifier({ keys: ring, issuer: 'jitgate', clockToleranceS: 0, cacheSize: 0 })
  t.ok((await v.verify(token, 'crm-api')).ok)
  const ringWithout = await loadKeyRing({ signingKey: { inline: JSON.stringify(next.privateJwk) }, verificationKeyFiles: [], dataDir: dir })
  const v2 = createTokenVerifier({ keys: ringWithout, issuer: 'jitgate', clockToleranceS: 0, cacheSize: 0 })
  t.match(await v2.verify(token, 'crm-api'), { code: 'token_invalid' })
  t.ok(readFileSync(oldPub, 'utf8').includes(old.publicJwk.kid as string))
})

t.test('extractBearer reads only the Authorization header, exactly once', async (t) => {
  t.same(extractBearer(['Authorization', 'Bearer abc.def.ghi']), { ok: true, token: 'abc.def.ghi' })
  t.same(extractBearer(['authorization', 'bearer abc.def.ghi']), { ok: true, token: 'abc.def.ghi' })
  t.same(extractBearer([]), { ok: false, code: 'token_missing' })
  t.same(extractBearer(['Authorization', '']), { ok: false, code: 'token_missing' })
  t.same(extractBearer(['Authorization', 'Basic dXNlcjpwYXNz']), { ok: false, code: 'token_malformed' })
  t.same(extractBearer(['Authorization', 'Bearer a b']), { ok: false, code: 'token_malformed' })
  t.same(extractBearer(['Authorization', 'Bearer a.b.c', 'authorization', 'Bearer d.e.f']), { ok: false, code: 'token_malformed' })
  t.same(extractBearer(['Cookie', 'access_token=a.b.c']), { ok: false, code: 'token_missing' })
})

t.test("a grant waiting for its first use gets a token whose exp is the latest it could end; a claimed one, its expiry", async (t) => {
  const keys = await loadKeyRing({ signingKey: undefined, verificationKeyFiles: [], dataDir: dataDir() })
  const issuer = createTokenIssuer(keys, 'jitgate')
  const now = Math.floor(Date.now() / 1000) * 1000
  const claim = { by: now + 3_600_000, durationMs: 7_200_000, notAfter: now + 3 * 3_600_000 }
  const exp = (token: string) => JSON.parse(Buffer.from(token.split('.')[1] as string, 'base64url').toString()).exp as number
  t.equal(exp(await issuer.issue(grant({ expiresAt: claim.by, claim }))), claim.notAfter / 1000, 'unclaimed: notAfter')
  const claimed = grant({ expiresAt: now + 7_200_000, claim: { ...claim, claimedAt: now } })
  t.equal(exp(await issuer.issue(claimed)), (now + 7_200_000) / 1000, 'claimed: the claimed expiry')
})

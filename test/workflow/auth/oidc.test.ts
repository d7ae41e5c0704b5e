/** OIDC approvers against a real issuer (JWKS over HTTP on port 0): checks, groups, MFA by policy. */
import t, { type Test } from 'tap'
import { SignJWT, type JWTPayload } from 'jose'
import { createOidcVerifier, type OidcIdentity } from '../../../src/workflow/auth/oidc.js'
import { isMember, isRequester, oidcApprover, satisfiesMfa } from '../../../src/workflow/auth/approvers.js'
import { startIssuer } from '../../helpers/issuer.js'
import { principals } from '../fixtures.js'

const CLIENT = 'jitgate-console'

async function setup(t: Test, maxAgeMs = 12 * 3_600_000) {
  const idp = await startIssuer(t, { alg: 'RS256' })
  const verifier = createOidcVerifier({ issuer: idp.url, jwksUrl: idp.jwksUrl, audience: CLIENT, groupsClaim: 'groups', clockToleranceS: 30, maxAgeMs })
  const now = Math.floor(Date.now() / 1000)
  const claims = (over: Record<string, unknown> = {}): JWTPayload => ({
    iss: idp.url,
    aud: CLIENT,
    sub: '00u1carol',
    iat: now,
    exp: now + 600,
    email: 'carol@example.com',
    email_verified: true,
    groups: ['sec-team', 'everyone'],
    amr: ['pwd', 'mfa'],
    ...over,
  })
  return { idp, verifier, claims }
}

t.test('a valid ID token yields the identity: sub, verified email, groups, amr, acr', async (t) => {
  const { idp, verifier, claims } = await setup(t)
  t.same(await verifier.verify(await idp.sign(claims({ acr: 'urn:x:loa:2' }))), {
    ok: true,
    identity: { sub: '00u1carol', email: 'carol@example.com', groups: ['sec-team', 'everyone'], amr: ['pwd', 'mfa'], acr: 'urn:x:loa:2' },
  })
  const unverified = await verifier.verify(await idp.sign(claims({ email_verified: false, groups: 'sec-team', amr: undefined })))
  t.match(unverified, { ok: true, identity: { email: undefined, groups: ['sec-team'], amr: [] } }, 'an unverified email is not used; one group as a string')
  t.match(await verifier.verify(await idp.sign(claims({ aud: [CLIENT, 'other'], azp: CLIENT }))), { ok: true })
})

t.test('refusals: issuer, audience, expiry, azp, algorithm, signature', async (t) => {
  const { idp, verifier, claims } = await setup(t)
  const now = Math.floor(Date.now() / 1000)
  const refused = async (c: JWTPayload, detail: RegExp) => t.match(await verifier.verify(await idp.sign(c)), { ok: false, detail }, detail.source)
  await refused(claims({ iss: 'https://evil.example' }), /claim "iss" check failed/)
  await refused(claims({ aud: 'another-client' }), /claim "aud" check failed/)
  await refused(claims({ exp: now - 120 }), /expired/)
  await refused(claims({ sub: undefined }), /claim "sub" check failed/)
  await refused(claims({ aud: [CLIENT, 'other'] }), /azp must be/)
  const hs = await new SignJWT(claims()).setProtectedHeader({ alg: 'HS256' }).sign(new TextEncoder().encode('client-secret-0123456789abcdef!!'))
  t.match(await verifier.verify(hs), { ok: false, detail: /algorithm not allowed/ })
  const other = await startIssuer(t, { alg: 'RS256' })
  t.match(await verifier.verify(await other.sign(claims())), { ok: false, detail: /signature verification failed/ }, 'same kid, another key')
})

t.test('max_age: a sign-in older than max_age is refused as stale, by auth_time or else iat', async (t) => {
  const { idp, verifier, claims } = await setup(t, 3_600_000)
  const now = Math.floor(Date.now() / 1000)
  t.match(await verifier.verify(await idp.sign(claims({ auth_time: now - 3000 }))), { ok: true }, 'signed in 50 minutes ago')
  t.match(await verifier.verify(await idp.sign(claims({ auth_time: now - 3600 - 20 }))), { ok: true }, 'within the clock tolerance')
  const stale = await verifier.verify(await idp.sign(claims({ auth_time: now - 2 * 3600 })))
  t.match(stale, { ok: false, stale: true, detail: /^the sign-in \(auth_time\) is 2h(?:[0-9]+s)? old, more than max_age 1h: sign in again$/ })
  t.match(
    await verifier.verify(await idp.sign(claims({ iat: now - 2 * 3600, exp: now + 600 }))),
    { ok: false, stale: true, detail: /sign-in \(iat\)/ },
    'without auth_time, iat is the sign-in',
  )
  t.match(await verifier.verify(await idp.sign(claims({ iat: now - 2 * 3600, auth_time: now - 60 }))), { ok: true }, 'auth_time wins over an old iat')
  t.match(await verifier.verify(await idp.sign(claims({ auth_time: 'yesterday' }))), { ok: false, detail: 'auth_time must be a number (seconds)' })
  t.notOk('stale' in (await verifier.verify(await idp.sign(claims({ aud: 'x' })))), 'other refusals are not stale')
})

t.test('policy reads the identity: membership by sub, verified email or IdP group; MFA by amr/acr', async (t) => {
  const p = principals()
  const id = (over: Partial<OidcIdentity>): OidcIdentity => ({ sub: 's1', email: undefined, groups: [], amr: ['mfa'], acr: undefined, ...over })
  const security = p.approverGroups.get('security')
  t.ok(isMember(oidcApprover(id({ sub: 'carol' }), p.mfa), security), 'by sub')
  t.ok(isMember(oidcApprover(id({ email: 'dave' }), p.mfa), security), 'by verified email')
  t.ok(isMember(oidcApprover(id({ groups: ['sec-team'] }), p.mfa), security), 'by IdP group')
  t.notOk(isMember(oidcApprover(id({ groups: ['crm-owners'] }), p.mfa), security), 'a group name alone is not an IdP group')
  t.notOk(isMember(oidcApprover(id({}), p.mfa), undefined))
  t.ok(isRequester(oidcApprover(id({ email: 'acme' }), p.mfa), 'acme'))

  t.ok(satisfiesMfa({ amr: ['pwd', 'otp'], acr: undefined }, { amrAny: ['mfa', 'otp'], acrAny: [] }))
  t.notOk(satisfiesMfa({ amr: ['pwd'], acr: undefined }, { amrAny: ['mfa', 'otp'], acrAny: [] }))
  t.ok(satisfiesMfa({ amr: [], acr: 'urn:loa:3' }, { amrAny: [], acrAny: ['urn:loa:3'] }))
  t.notOk(satisfiesMfa({ amr: ['mfa'], acr: 'x' }, { amrAny: [], acrAny: [] }), 'an empty rule is never satisfied')
  t.equal(oidcApprover(id({ amr: ['pwd'] }), p.mfa).mfa, false)
})

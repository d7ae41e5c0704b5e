/**
 * The decision's claim step, against a real memory grant store whose calls are counted (the
 * store is not what is under test; how often the decider reaches for it is): a grant with a
 * claim-by window costs one extra store call on its first use only, and a claimed grant costs the
 * same single lookup per request as any other.
 */
import t from 'tap'
import { compilePolicy } from '../../src/policy/policy.js'
import { generateSigningKey, loadKeyRing } from '../../src/authn/keys.js'
import { createTokenIssuer, createTokenVerifier } from '../../src/authn/token.js'
import { createMemoryGrantStore } from '../../src/grants/memory-store.js'
import type { Grant, GrantStore } from '../../src/grants/types.js'
import { createDecider } from '../../src/decision/decide.js'

const POLICY = `
resources:
  - id: crm-api
    upstream: http://127.0.0.1:9
    match: { path_prefix: /crm }
    max_ttl: 8h
`

t.test('the first use claims; every later request is one lookup and no claim', async (t) => {
  const policy = compilePolicy([{ file: 'p.yaml', text: POLICY }])
  const { privateJwk } = await generateSigningKey()
  const keys = await loadKeyRing({ signingKey: { inline: JSON.stringify(privateJwk) }, verificationKeyFiles: [], dataDir: '/nonexistent' })
  const real = createMemoryGrantStore({ timeoutMs: 1000, minTombstoneMs: 60_000 })
  t.teardown(() => real.close())
  const calls = { get: 0, claim: 0 }
  const store: GrantStore = {
    ...real,
    get: (id) => (calls.get++, real.get(id)),
    claim: (g, at) => (calls.claim++, real.claim(g, at)),
  }
  const decider = createDecider({ policy: () => policy, verifier: () => createTokenVerifier({ keys, issuer: 'jitgate', clockToleranceS: 30, cacheSize: 100 }), store })
  const now = Date.now()
  const by = Math.floor((now + 3_600_000) / 1000) * 1000
  const grant: Grant = {
    id: 'g_claimtest00000000001',
    subject: 'acme',
    resource: 'crm-api',
    scopes: ['GET /crm/**'],
    startsAt: now,
    createdAt: now,
    expiresAt: by,
    issuedBy: 'carol',
    claim: { by, durationMs: 600_000, notAfter: by + 600_000 },
  }
  await real.create(grant)
  const token = await createTokenIssuer(keys, 'jitgate').issue(grant)
  const decide = (path: string) =>
    decider.decide({ method: 'GET', url: path, host: undefined, rawHeaders: ['authorization', `Bearer ${token}`], upgrade: false })

  const other = { ...grant, id: 'g_claimtest00000000002' }
  await real.create(other)
  const otherToken = await createTokenIssuer(keys, 'jitgate').issue(other)
  const refused = await decider.decide({ method: 'DELETE', url: '/crm/x', host: undefined, rawHeaders: ['authorization', `Bearer ${otherToken}`], upgrade: false })
  t.match(refused, { allow: false, code: 'scope_denied' })
  t.same(calls, { get: 1, claim: 0 }, 'a request refused by another check claims nothing')
  t.match(await real.get(other.id), { status: 'active', grant: { expiresAt: by, claim: { claimedAt: undefined } } })
  calls.get = 0

  const first = await decide('/crm')
  t.match(first, { allow: true }, 'GET /crm is within GET /crm/**')
  t.same(calls, { get: 1, claim: 1 }, 'the first use: one lookup, one claim')
  t.equal(first.allow && first.claimed, true)
  const claimedExpiry = first.allow ? first.grant.expiresAt : 0
  t.ok(claimedExpiry <= Date.now() + 600_000 && claimedExpiry > now, 'the decision carries the claimed grant')

  for (let i = 0; i < 5; i++) {
    const d = await decide(`/crm/customers/${i}`)
    t.match(d, { allow: true, grant: { expiresAt: claimedExpiry } })
    t.notOk(d.allow && d.claimed)
  }
  t.same(calls, { get: 6, claim: 1 }, 'claimed: one lookup per request, never another claim')
})

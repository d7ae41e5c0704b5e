/**
 * Tamper evidence end to end: a real audit log writes a real file with signed checkpoints; then
 * the file is edited, cut, reordered, has lines deleted or inserted, and `audit verify` must find
 * each change and say where. The CLI is run as a real process, with the JWKS from a file and from
 * a running gateway's `/.well-known/jwks.json`.
 */
import t from 'tap'
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { generateSigningKey } from '../../src/authn/keys.js'
import { createAuditLog } from '../../src/audit/audit-log.js'
import { createCheckpointSigner, lineHash } from '../../src/audit/chain.js'
import { verifyAuditFiles, type VerifyReport } from '../../src/audit/verify.js'
import { importJWK, type CryptoKey } from 'jose'
import { runCli } from '../helpers/process.js'
import { main } from '../../src/cli/main.js'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { startTestGateway } from '../helpers/gateway.js'

async function writeTrail(events = 23, every = 5) {
  const dir = mkdtempSync(join(tmpdir(), 'jitgate-verify-'))
  const { privateJwk, publicJwk } = await generateSigningKey()
  const key = await importJWK(privateJwk, 'EdDSA')
  const file = join(dir, 'audit.log')
  const log = createAuditLog({
    output: { file },
    gatewayId: 'gw-test',
    policyVersion: () => 'v1',
    checkpoints: { signer: createCheckpointSigner({ kid: privateJwk.kid as string, key: key as CryptoKey }), everyEvents: every },
  })
  for (let i = 0; i < events; i++) {
    log.emit('access.allowed', {
      request_id: `r${i}`,
      subject: 'acme',
      grant_id: 'g_x',
      resource: 'crm-api',
      method: 'GET',
      path: `/crm/${i}`,
      status: 200,
      client_ip: '127.0.0.1',
      duration_ms: 1,
      protocol: 'http',
    })
  }
  await log.close()
  const jwksFile = join(dir, 'jwks.json')
  writeFileSync(jwksFile, JSON.stringify({ keys: [publicJwk] }))
  return { dir, file, jwks: { keys: [publicJwk] }, jwksFile, lines: readFileSync(file, 'utf8').split('\n').slice(0, -1) }
}

function save(dir: string, name: string, lines: string[], trailingNewline = true): string {
  const f = join(dir, name)
  writeFileSync(f, lines.join('\n') + (trailingNewline ? '\n' : ''))
  return f
}

const messages = (r: VerifyReport) => r.problems.map((p) => `${p.line}:${p.seq ?? '-'}: ${p.message}`)

t.test('an intact trail verifies: chain links, checkpoints every N events and a final one', async (t) => {
  const { file, jwks, lines } = await writeTrail()
  const events = lines.map((l) => JSON.parse(l) as Record<string, unknown>)
  t.equal(events.length, 23 + 4 + 1, '23 events, a checkpoint after every 5, and the final one')
  t.same(events.map((e) => e.seq), events.map((_, i) => i + 1), 'seq counts from 1')
  for (let i = 1; i < lines.length; i++) t.equal(events[i]?.prev_hash, lineHash(lines[i - 1] as string), `line ${i + 1} links to line ${i}`)
  t.match(events.at(-1), { event: 'audit.checkpoint', final: true })
  const r = await verifyAuditFiles([file], { jwks })
  t.same(messages(r), [])
  t.ok(r.ok)
  t.match(r.chains, [{ firstSeq: 1, lastSeq: 28, checkpoints: 5, sealed: true, unsigned: 0, gatewayId: 'gw-test' }])
})

t.test('each kind of tampering is found, and where', async (t) => {
  const { dir, jwks, lines } = await writeTrail()
  const L = (i: number) => lines[i - 1] as string
  const verify = async (name: string, edited: string[], opts: { trailingNewline?: boolean; partial?: boolean } = {}) => {
    const r = await verifyAuditFiles([save(dir, name, edited, opts.trailingNewline ?? true)], { jwks, partial: opts.partial ?? false })
    t.notOk(r.ok, `${name}: fails`)
    return messages(r)
  }

  const edited = [...lines]
  edited[8] = L(9).replace('"path":"/crm/7"', '"path":"/crm/8"')
  t.match(await verify('edited', edited), [/^9:9: does not match the hash recorded by the next event, seq 10 \(.*edited:10\)/])

  // An editor who also recomputes every later link is caught by the next signed checkpoint.
  const relinked = [...lines]
  relinked[8] = L(9).replace('"status":200', '"status":204')
  for (let i = 9; i < relinked.length; i++) {
    const e = JSON.parse(relinked[i] as string) as Record<string, unknown>
    e.prev_hash = lineHash(relinked[i - 1] as string)
    relinked[i] = JSON.stringify(e)
  }
  t.match(await verify('relinked', relinked), [/^12:12: checkpoint signature does not verify/, /^18:18: checkpoint signature/, /^24:24: /, /^28:28: /])

  const deleted = lines.filter((_, i) => i !== 13)
  t.match(await verify('deleted', deleted), [/^14:14: missing before this line: deleted/])

  const reordered = [...lines]
  reordered[14] = L(16)
  reordered[15] = L(15)
  t.match(await verify('reordered', reordered), [/^16:15: out of order \(it belongs before .*reordered:15\): reordered/])

  const inserted = [...lines.slice(0, 20), L(7), ...lines.slice(20)]
  t.match(await verify('inserted', inserted), [/^21:7: again after seq 20: duplicated or inserted/])

  const forged = [...lines.slice(0, 20), JSON.stringify({ ...JSON.parse(L(21)), event: 'grant.issued' }), ...lines.slice(21)]
  t.match(await verify('forged', forged), [/^21:21: does not match the hash recorded by the next event, seq 22/])

  t.match(await verify('cut-lines', lines.slice(0, 25)), [/^25:25: the chain ends here without its final checkpoint/])
  t.match(await verify('cut-mid-line', [...lines.slice(0, 27), L(28).slice(0, 40)], { trailingNewline: false }), [
    /^27:27: the chain ends here without its final checkpoint/,
    /^28:-: the last line is incomplete/,
    /^28:-: not a JSON event/,
  ])
  const noFinal = await verifyAuditFiles([save(dir, 'open', lines.slice(0, 25))], { jwks, partial: true })
  t.ok(noFinal.ok, '--partial accepts a trail without its final checkpoint…')
  t.match(noFinal.chains, [{ sealed: false, unsigned: 1 }], '…and says how much of it no signature covers')

  const other = await generateSigningKey()
  const wrongKey = await verifyAuditFiles([join(dir, 'edited')], { jwks: { keys: [{ ...other.publicJwk, kid: jwks.keys[0]?.kid as string }] } })
  t.ok(wrongKey.problems.filter((p) => /signature does not verify/.test(p.message)).length >= 5, 'another key: no checkpoint verifies')
})

t.test('rotated files verify together, oldest first; a later file alone needs --partial', async (t) => {
  const { dir, jwks, lines } = await writeTrail()
  const a = save(dir, 'audit.log.1', lines.slice(0, 13))
  const b = save(dir, 'audit.log', lines.slice(13))
  t.ok((await verifyAuditFiles([a, b], { jwks })).ok)
  t.match(messages(await verifyAuditFiles([b], { jwks })), [/^1:14: the chain starts here: seq 1 to 13 are missing/])
  t.ok((await verifyAuditFiles([b], { jwks, partial: true })).ok)
  t.notOk((await verifyAuditFiles([b, a], { jwks })).ok, 'given newest first: out of order')
})

t.test('jitgate audit verify: exit codes, file:line output, JWKS from a file and from a gateway URL', async (t) => {
  const { dir, file, jwksFile, lines } = await writeTrail()
  const ok = await runCli(['audit', 'verify', file, '--jwks', jwksFile])
  t.equal(ok.code, 0, ok.stderr)
  t.match(ok.stdout, /sealed\nOK: 28 line\(s\) in 1 chain\(s\) verified/)

  const bad = save(dir, 'bad', [...lines.slice(0, 3), ...lines.slice(4)])
  const failed = await runCli(['audit', 'verify', bad, '--jwks', jwksFile])
  t.equal(failed.code, 1)
  t.match(failed.stdout, `${bad}:4: seq 4: missing before this line: deleted`)
  t.match(failed.stdout, /FAILED: 1 problem/)

  const usage = await runCli(['audit', 'verify', file])
  t.equal(usage.code, 2)
  t.match(usage.stderr, /--jwks FILE\|URL is required/)

  // A real gateway's own trail, checked against its own published keys while it runs.
  const g = await startTestGateway(t, { policy: 'resources:\n  - { id: api, upstream: "http://127.0.0.1:9", match: { path_prefix: /api }, max_ttl: 1h }\n' })
  await g.gw.audit.flush()
  const trail = save(dir, 'gateway.log', g.auditText().split('\n').slice(0, -1))
  const live = await runCli(['audit', 'verify', trail, '--jwks', `${g.controlUrl}/.well-known/jwks.json`, '--partial'])
  t.equal(live.code, 0, live.stdout + live.stderr)
  t.match(live.stdout, /not sealed\nOK/)
})

t.test('jitgate audit verify --jwks refuses a file holding private key material, and never prints it', async (t) => {
  const { dir, file, jwksFile } = await writeTrail()
  const { privateJwk, publicJwk } = await generateSigningKey()
  const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const cases: [string, string, string][] = [
    // The file `jitgate keys generate --out` writes: the gateway's own signing key.
    ['signing-key.jwk.json', JSON.stringify(privateJwk), 'a JWK with "d"'],
    ['mixed.jwks.json', JSON.stringify({ keys: [publicJwk, privateJwk] }), 'key 2 is a JWK with "d"'],
    ['hmac.jwk.json', JSON.stringify({ kty: 'oct', k: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0' }), 'a JWK with "k"'],
    ['pkcs8.pem', createPrivateKey({ key: privateJwk as import('node:crypto').JsonWebKey, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }) as string, 'a PEM private key'],
    ['sec1.pem', ec.privateKey.export({ type: 'sec1', format: 'pem' }) as string, 'a PEM private key'],
  ]
  const cli = async (args: string[]) => {
    let stdout = ''
    let stderr = ''
    const code = await main(args, { out: (s) => void (stdout += s), err: (s) => void (stderr += s), env: {} })
    return { code, stdout, stderr }
  }
  for (const [name, content, what] of cases) {
    const keyFile = join(dir, name)
    writeFileSync(keyFile, content, { mode: 0o600 })
    const r = await cli(['audit', 'verify', file, '--jwks', keyFile])
    t.equal(r.code, 1, name)
    t.match(r.stderr, `jitgate: ${keyFile} holds private key material (${what}): refusing it. Verifying needs the public keys only`)
    t.equal(r.stdout, '', 'nothing verified with it')
    t.notOk(r.stderr.includes(String(privateJwk.d)) || r.stderr.includes('c2VjcmV0'), 'the key is not printed')
  }
  const exported = await cli(['audit', 'export', '--subprocessor', 'acme', '--from', '2026-01-01', '--to', '2026-12-31', '--out', join(dir, 'ev'), '--jwks', join(dir, 'signing-key.jwk.json'), file])
  t.equal(exported.code, 1, 'audit export refuses it too')
  t.match(exported.stderr, 'holds private key material')
  const real = await runCli(['audit', 'verify', file, '--jwks', join(dir, 'signing-key.jwk.json')])
  t.equal(real.code, 1, 'the real process exits 1')
  t.match(real.stderr, 'holds private key material (a JWK with "d")')
  t.equal((await cli(['audit', 'verify', file, '--jwks', jwksFile])).code, 0, 'the public JWKS still works')
})

/**
 * Tamper evidence. Each gateway instance writes one hash chain: every event carries `chain` (a
 * random id of this instance's trail), `seq` (1, 2, 3, …) and `prev_hash`, the SHA-256 (hex) of
 * the previous event's line exactly as written (UTF-8, without its newline). The first event links
 * to the chain's genesis, `SHA-256("jitgate-audit-genesis:" + chain)`.
 *
 * A hash chain alone only proves order and completeness to someone who trusts its end, since
 * anyone can recompute it. So at intervals and at shutdown the gateway writes an
 * `audit.checkpoint` event signed with its Ed25519 key: the signature covers the checkpoint's own
 * `chain`, `seq`, `prev_hash` (thus every line before it), `time`, `gateway_id` and `final`.
 * Changing, removing, inserting or reordering any covered line breaks either a link or a
 * signature; cutting the end of a trail loses the final checkpoint.
 */
import * as crypto from 'node:crypto'
import { createHash, createPublicKey, KeyObject, randomBytes, sign, verify, type webcrypto } from 'node:crypto'

/** Prefix of the signed checkpoint statement. It contains a newline, so no checkpoint statement
 * can ever be a JWS signing input (base64url only): the token key can safely sign both. */
const CHECKPOINT_DOMAIN = 'jitgate-audit-checkpoint/1\n'

/** A new chain id: 128 random bits, base64url. */
export function newChainId(): string {
  return randomBytes(16).toString('base64url')
}

/** The hash of one written line (without its newline), lowercase hex. */
export function lineHash(line: string): string {
  // One-shot hashing (Node ≥ 20.12) skips building a Hash object per event: this runs per request.
  return oneShot ? oneShot('sha256', line, 'hex') : createHash('sha256').update(line).digest('hex')
}

const oneShot = (crypto as { hash?: (alg: string, data: string, enc: 'hex') => string }).hash

/** What the first event of a chain links to. */
export function genesisHash(chain: string): string {
  return lineHash(`jitgate-audit-genesis:${chain}`)
}

/** The fields of a checkpoint that its signature covers. */
export interface CheckpointClaims {
  readonly chain: string
  readonly seq: number
  readonly prev_hash: string
  readonly time: string
  readonly gateway_id: string
  readonly final: boolean
}

/** The exact bytes a checkpoint signature is over. */
export function checkpointStatement(c: CheckpointClaims): Buffer {
  return Buffer.from(`${CHECKPOINT_DOMAIN}${c.chain}\n${c.seq}\n${c.prev_hash}\n${c.time}\n${c.gateway_id}\n${c.final}`)
}

/** Signs checkpoints, synchronously: a checkpoint must take its place in the chain at once. */
export interface CheckpointSigner {
  readonly kid: string
  sign(statement: Buffer): string
}

/** A signer over an Ed25519 private key (the gateway's token key: `KeyRing.signing`). */
export function createCheckpointSigner(key: { readonly kid: string; readonly key: webcrypto.CryptoKey | KeyObject }): CheckpointSigner {
  const keyObject = key.key instanceof KeyObject ? key.key : KeyObject.from(key.key)
  return { kid: key.kid, sign: (statement) => sign(null, statement, keyObject).toString('base64url') }
}

/** Checks a checkpoint signature against a public JWK (Ed25519). */
export function verifyCheckpoint(claims: CheckpointClaims, signature: string, publicJwk: { readonly x?: string }): boolean {
  try {
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: publicJwk.x as string }, format: 'jwk' })
    return verify(null, checkpointStatement(claims), key, Buffer.from(signature, 'base64url'))
  } catch {
    return false
  }
}

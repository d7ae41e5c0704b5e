/**
 * The gateway's token keys. One private Ed25519 key signs; its public key and any extra
 * verification keys (kept during a rotation) are published at `/.well-known/jwks.json`.
 * With no key configured the gateway generates a dev key once into its data folder (mode 0600).
 */
import { mkdirSync, readFileSync, writeFileSync, existsSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import {
  calculateJwkThumbprint,
  exportJWK,
  generateKeyPair,
  importJWK,
  importPKCS8,
  importSPKI,
  type JWK,
  type CryptoKey,
} from 'jose'

export const TOKEN_ALG = 'EdDSA'

export interface SigningKey {
  readonly kid: string
  readonly key: CryptoKey
  readonly publicJwk: Readonly<JWK>
}

export interface KeyRing {
  readonly signing: SigningKey
  /** Public keys accepted for verification, the signing key's first. */
  readonly jwks: { readonly keys: readonly Readonly<JWK>[] }
}

export interface KeySource {
  readonly signingKey: { readonly file: string } | { readonly inline: string } | undefined
  readonly verificationKeyFiles: readonly string[]
  readonly dataDir: string
}

export class KeyError extends Error {
  override readonly name = 'KeyError'
}

export const DEV_KEY_FILE = 'signing-key.jwk.json'

/**
 * Loads the key ring. `onGenerated` is told when a dev key was created (the caller logs it:
 * a production deployment should never rely on one).
 */
export async function loadKeyRing(src: KeySource, onGenerated?: (file: string) => void): Promise<KeyRing> {
  let signing: SigningKey
  if (src.signingKey && 'inline' in src.signingKey) {
    signing = await importPrivate(src.signingKey.inline, 'JITGATE_SIGNING_KEY')
  } else if (src.signingKey) {
    signing = await importPrivate(readKeyFile(src.signingKey.file), src.signingKey.file)
  } else {
    const file = join(src.dataDir, DEV_KEY_FILE)
    if (existsSync(file)) {
      signing = await importPrivate(readKeyFile(file), file)
    } else {
      const generated = await generateSigningKey()
      mkdirSync(src.dataDir, { recursive: true, mode: 0o700 })
      writeFileSync(file, `${JSON.stringify(generated.privateJwk)}\n`, { mode: 0o600, flag: 'wx' })
      chmodSync(file, 0o600)
      signing = await importPrivate(JSON.stringify(generated.privateJwk), file)
      onGenerated?.(file)
    }
  }
  const keys: JWK[] = [signing.publicJwk]
  for (const file of src.verificationKeyFiles) {
    const jwk = await importPublic(readKeyFile(file), file)
    if (!keys.some((k) => k.kid === jwk.kid)) keys.push(jwk)
  }
  return Object.freeze({ signing, jwks: Object.freeze({ keys: Object.freeze(keys) }) })
}

/** Creates a new Ed25519 key pair; `privateJwk` includes its `kid`. */
export async function generateSigningKey(): Promise<{ privateJwk: JWK; publicJwk: JWK }> {
  const { privateKey, publicKey } = await generateKeyPair(TOKEN_ALG, { crv: 'Ed25519', extractable: true })
  const publicJwk = await exportJWK(publicKey)
  const kid = await calculateJwkThumbprint(publicJwk)
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: TOKEN_ALG }
  return { privateJwk, publicJwk: { ...publicJwk, kid, alg: TOKEN_ALG, use: 'sig' } }
}

function readKeyFile(file: string): string {
  try {
    return readFileSync(file, 'utf8')
  } catch (err) {
    throw new KeyError(`cannot read key file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

async function importPrivate(text: string, origin: string): Promise<SigningKey> {
  try {
    let jwk: JWK
    let key: CryptoKey
    const trimmed = text.trim()
    if (trimmed.startsWith('{')) {
      jwk = JSON.parse(trimmed) as JWK
      if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.d !== 'string') {
        throw new Error('expected a private Ed25519 JWK (kty OKP, crv Ed25519, with d)')
      }
      key = (await importJWK(jwk, TOKEN_ALG)) as CryptoKey
    } else {
      if (!trimmed.startsWith('-----BEGIN PRIVATE KEY-----')) {
        throw new Error('expected an Ed25519 private JWK ({"kty":"OKP",...}) or a PKCS#8 PEM ("-----BEGIN PRIVATE KEY-----")')
      }
      key = await importPKCS8(trimmed, TOKEN_ALG, { extractable: true })
      jwk = await exportJWK(key)
    }
    const publicJwk: JWK = { kty: 'OKP', crv: 'Ed25519', x: jwk.x as string }
    const kid = jwk.kid ?? (await calculateJwkThumbprint(publicJwk))
    return Object.freeze({ kid, key, publicJwk: Object.freeze({ ...publicJwk, kid, alg: TOKEN_ALG, use: 'sig' }) })
  } catch (err) {
    // Never echo key material: only say where it came from and what was wrong with its shape.
    throw new KeyError(`invalid signing key from ${origin}: ${(err as Error).message.split('\n')[0]}`)
  }
}

async function importPublic(text: string, origin: string): Promise<JWK> {
  try {
    const trimmed = text.trim()
    let jwk: JWK
    if (trimmed.startsWith('{')) {
      const parsed = JSON.parse(trimmed) as JWK
      if (parsed.kty !== 'OKP' || parsed.crv !== 'Ed25519' || typeof parsed.x !== 'string') {
        throw new Error('expected an Ed25519 JWK (kty OKP, crv Ed25519)')
      }
      await importJWK({ kty: 'OKP', crv: 'Ed25519', x: parsed.x }, TOKEN_ALG)
      jwk = { kty: 'OKP', crv: 'Ed25519', x: parsed.x, ...(parsed.kid ? { kid: parsed.kid } : {}) }
    } else {
      jwk = await exportJWK(await importSPKI(trimmed, TOKEN_ALG, { extractable: true }))
    }
    const kid = jwk.kid ?? (await calculateJwkThumbprint({ kty: 'OKP', crv: 'Ed25519', x: jwk.x as string }))
    return Object.freeze({ kty: 'OKP', crv: 'Ed25519', x: jwk.x as string, kid, alg: TOKEN_ALG, use: 'sig' })
  } catch (err) {
    throw new KeyError(`invalid verification key from ${origin}: ${(err as Error).message.split('\n')[0]}`)
  }
}

/**
 * Recognising private key material, wherever only public keys belong (verification keys in
 * policy, the JWKS `jitgate audit verify` checks signatures with): a private key passed around
 * for verification is a key leaked for nothing.
 */

/** JWK members that hold private or secret key material (RFC 7518 §6.2.2, §6.3.2, §6.4.1). */
export const PRIVATE_JWK_MEMBERS = Object.freeze(['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const)

/** The first private member of a JWK (`"d"`, or `"k"` for a symmetric key), or undefined for a public key. */
export function privateJwkMember(jwk: unknown): string | undefined {
  if (jwk === null || typeof jwk !== 'object') return undefined
  return PRIVATE_JWK_MEMBERS.find((k) => k in jwk)
}

/** A PEM private key block: PKCS#8 (plain or encrypted), PKCS#1 RSA, SEC 1 EC, OpenSSH. */
export const PEM_PRIVATE_KEY_RE = /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----/

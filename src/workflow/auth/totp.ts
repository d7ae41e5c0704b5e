/**
 * TOTP (RFC 6238) for local approvers: HMAC-SHA1, 30-second steps, 6 digits, with HOTP's dynamic
 * truncation (RFC 4226 §5.3). The parameters are the ones every authenticator app uses by default.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'

/** RFC 6238 §4: X, the time step. */
export const TOTP_STEP_MS = 30_000
export const TOTP_DIGITS = 6
/**
 * Steps accepted either side of the current one (RFC 6238 §5.2 recommends at most one), for clock
 * skew and the seconds a person needs to type the code.
 */
export const TOTP_WINDOW = 1
/** How long a used code must be remembered: every step it could still be accepted in. */
export const TOTP_REUSE_MS = (2 * TOTP_WINDOW + 1) * TOTP_STEP_MS

/** The time-step counter T of an instant (RFC 6238 §4.2, T0 = 0). */
export function totpCounter(at: number): number {
  return Math.floor(at / TOTP_STEP_MS)
}

/** HOTP(secret, counter) as a zero-padded decimal string (RFC 4226 §5.3). */
export function hotp(secret: Uint8Array, counter: number): string {
  const msg = Buffer.alloc(8)
  msg.writeBigUInt64BE(BigInt(counter))
  const mac = createHmac('sha1', secret).update(msg).digest()
  const offset = (mac[mac.length - 1] as number) & 0x0f
  const binary = mac.readUInt32BE(offset) & 0x7fffffff
  return String(binary % 10 ** TOTP_DIGITS).padStart(TOTP_DIGITS, '0')
}

/** The code an authenticator shows at `at` (epoch ms). */
export function totpCode(secret: Uint8Array, at: number): string {
  return hotp(secret, totpCounter(at))
}

/**
 * Checks a code against the steps around `at`. Returns the matching step's counter (the caller
 * burns it, so a code works once), or undefined. Every candidate is compared in constant time.
 */
export function matchTotp(secret: Uint8Array, code: string, at: number): number | undefined {
  if (!/^[0-9]{6}$/.test(code)) return undefined
  const given = Buffer.from(code)
  const now = totpCounter(at)
  let matched: number | undefined
  for (let c = now - TOTP_WINDOW; c <= now + TOTP_WINDOW; c++) {
    // No early exit: the time taken never says which step (if any) matched.
    if (timingSafeEqual(Buffer.from(hotp(secret, c)), given) && matched === undefined) matched = c
  }
  return matched
}

/** TOTP against the RFC 6238 Appendix B test vectors (SHA-1), and the ±1 step window. */
import t from 'tap'
import { hotp, matchTotp, totpCode, totpCounter } from '../../../src/workflow/auth/totp.js'

const SECRET = Buffer.from('12345678901234567890')

t.test('RFC 6238 Appendix B (SHA-1), last 6 of the 8 digits', async (t) => {
  const vectors: [seconds: number, code8: string][] = [
    [59, '94287082'],
    [1111111109, '07081804'],
    [1111111111, '14050471'],
    [1234567890, '89005924'],
    [2000000000, '69279037'],
    [20000000000, '65353130'],
  ]
  for (const [s, code] of vectors) t.equal(totpCode(SECRET, s * 1000), code.slice(2), `T = ${s}s`)
})

t.test('RFC 4226 Appendix D HOTP values', async (t) => {
  t.same([0, 1, 2, 9].map((c) => hotp(SECRET, c)), ['755224', '287082', '359152', '520489'])
})

t.test('a code matches in its own step and one step either side, returning that step', async (t) => {
  const at = 1_700_000_000_000
  const step = totpCounter(at)
  t.equal(matchTotp(SECRET, totpCode(SECRET, at), at), step)
  t.equal(matchTotp(SECRET, totpCode(SECRET, at - 30_000), at), step - 1, 'previous step: clock skew, slow typing')
  t.equal(matchTotp(SECRET, totpCode(SECRET, at + 30_000), at), step + 1)
  t.equal(matchTotp(SECRET, totpCode(SECRET, at - 60_000), at), undefined, 'two steps old')
  t.equal(matchTotp(SECRET, totpCode(SECRET, at + 60_000), at), undefined)
  for (const bad of ['', '12345', '1234567', 'abcdef', ' 123456']) t.equal(matchTotp(SECRET, bad, at), undefined, JSON.stringify(bad))
})

/** Requested scope ⊆ entitled scope: sound, never wider (table-driven). */
import t from 'tap'
import { checkCoverage } from '../../src/workflow/coverage.js'

const cases: [requested: string, entitled: string, covered: boolean][] = [
  ['GET /crm/customers/*', 'GET /crm/customers/*', true],
  ['GET /crm/customers/42', 'GET /crm/customers/*', true],
  ['HEAD /crm/customers/42', 'GET /crm/customers/*', true],
  ['GET /crm/customers/**', 'GET /crm/customers/*', false],
  ['GET /crm/customers/42/notes', 'GET /crm/customers/*', false],
  ['GET /crm/customers/', 'GET /crm/customers/*', false],
  ['GET /crm/customers/', 'GET /crm/customers/**', true],
  ['GET /crm/customers', 'GET /crm/customers/**', true],
  ['GET /crm/tickets/*', 'GET,POST /crm/tickets/**', true],
  ['POST /crm/tickets/42/**', 'GET,POST /crm/tickets/**', true],
  ['GET,POST,DELETE /crm/tickets/1', 'GET,POST /crm/tickets/**', false],
  ['DELETE /crm/tickets/1', 'GET,POST /crm/tickets/**', false],
  ['GET /crm/**', 'GET,POST /crm/tickets/**', false],
  ['* /crm/tickets/1', 'GET,POST /crm/tickets/**', false],
  ['* /crm/tickets/1', '* /crm/**', true],
  ['DELETE /crm/**', '* /crm/**', true],
  ['GET /crm/*/notes', 'GET /crm/**/notes', true],
  ['GET /crm/**/notes', 'GET /crm/*/notes', false],
  ['GET /crm/a/b/notes', 'GET /crm/**/notes', true],
  ['GET /crm/**', 'GET /**', true],
  ['GET /', 'GET /**', true],
  ['GET /billing/x', 'GET /crm/**', false],
]

t.test('coverage table', async (t) => {
  for (const [requested, entitled, covered] of cases) {
    t.equal(checkCoverage([requested], [entitled]).ok, covered, `${requested}  ⊆  ${entitled}: ${covered}`)
  }
})

t.test('every requested scope needs some covering entitled scope; problems are listed', async (t) => {
  const entitled = ['GET /crm/customers/**', 'GET,POST /crm/tickets/**']
  t.same(checkCoverage(['GET /crm/customers/1', 'POST /crm/tickets'], entitled), { ok: true })
  t.same(checkCoverage(['GET /crm/customers/1', 'DELETE /crm/tickets/1', 'GET /crm/*.json', 'nonsense'], entitled), {
    ok: false,
    invalid: [
      '"GET /crm/*.json": segment "*.json" of "/crm/*.json": wildcards must be whole segments ("*" or "**"); partial wildcards such as "*.json" are not supported',
      '"nonsense": expected "METHODS PATH", e.g. "GET /crm/customers/*"',
    ],
    uncovered: ['DELETE /crm/tickets/1'],
  })
  t.same(checkCoverage(['GET /x'], []), { ok: false, invalid: [], uncovered: ['GET /x'] })
})

/** The README's control-plane error table and API_ERRORS are the same list (no stale, none missing). */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { API_ERRORS } from '../../src/control/errors.js'

t.test('README control-plane error codes match API_ERRORS', async (t) => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8')
  const start = readme.indexOf('### Control-plane error codes')
  t.not(start, -1, 'the section exists')
  const section = readme.slice(start, readme.indexOf('\n## ', start))
  const rows = [...section.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])])
  t.same(
    rows.sort(),
    Object.entries(API_ERRORS)
      .map(([code, info]) => [code, info.status])
      .sort(),
  )
})

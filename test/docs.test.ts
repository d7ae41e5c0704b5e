/** The README's code table and the code's deny-code table are the same list (no stale, none missing). */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { DENY_CODES } from '../src/decision/codes.js'

t.test('README code table matches DENY_CODES', async (t) => {
  const readme = readFileSync(new URL('../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('## Data plane: decisions and codes'), readme.indexOf('## Control plane'))
  const rows = [...section.matchAll(/^\| `([a-z_]+)` \| (\d{3}) \|/gm)].map((m) => [m[1], Number(m[2])])
  t.same(
    rows.sort(),
    Object.entries(DENY_CODES)
      .map(([code, info]) => [code, info.status])
      .sort(),
  )
})

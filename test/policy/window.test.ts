/** Time windows: grammar, IANA zones, daylight saving time, windows crossing midnight. */
import t from 'tap'
import { parseWindow } from '../../src/policy/window.js'
import type { TimeWindow } from '../../src/policy/principals.js'

function win(text: string): TimeWindow {
  const r = parseWindow(text)
  if (!r.ok) throw new Error(r.error)
  return r.window
}
const at = (iso: string) => Date.parse(iso)

t.test('office hours in Berlin, across both DST switches', async (t) => {
  const w = win('Mon-Fri 08:00-18:00 Europe/Berlin')
  t.equal(w.source, 'Mon-Fri 08:00-18:00 Europe/Berlin')
  // Winter (CET, UTC+1): 08:00 local is 07:00Z.
  t.notOk(w.contains(at('2026-03-27T06:59:00Z')), 'Fri 07:59 CET')
  t.ok(w.contains(at('2026-03-27T07:00:00Z')), 'Fri 08:00 CET')
  t.ok(w.contains(at('2026-03-27T16:59:59Z')), 'Fri 17:59:59 CET')
  t.notOk(w.contains(at('2026-03-27T17:00:00Z')), 'Fri 18:00 CET: the end is exclusive')
  t.notOk(w.contains(at('2026-03-28T10:00:00Z')), 'Saturday')
  // Summer (CEST, UTC+2) from Sunday 29 March 2026: 08:00 local is 06:00Z.
  t.notOk(w.contains(at('2026-03-30T05:59:00Z')), 'Mon 07:59 CEST')
  t.ok(w.contains(at('2026-03-30T06:00:00Z')), 'Mon 08:00 CEST')
  t.notOk(w.contains(at('2026-03-30T16:00:00Z')), 'Mon 18:00 CEST')
  // Back to CET on Sunday 25 October 2026.
  t.ok(w.contains(at('2026-10-26T07:00:00Z')), 'Mon 08:00 CET again')
  t.notOk(w.contains(at('2026-10-26T06:30:00Z')), 'Mon 07:30 CET')
})

t.test('the skipped hour never exists; the repeated hour counts twice', async (t) => {
  const w = win('Sun 02:00-03:00 Europe/Berlin')
  // 29 March 2026: 01:59:59 CET is followed by 03:00 CEST (01:00Z).
  t.notOk(w.contains(at('2026-03-29T00:59:00Z')), '01:59 CET')
  t.notOk(w.contains(at('2026-03-29T01:00:00Z')), '03:00 CEST: 02:xx never happened')
  // 25 October 2026: 02:00-03:00 happens at 00:00Z (CEST) and again at 01:00Z (CET).
  t.notOk(w.contains(at('2026-10-24T23:59:00Z')), '01:59 CEST')
  t.ok(w.contains(at('2026-10-25T00:30:00Z')), 'first 02:30 (CEST)')
  t.ok(w.contains(at('2026-10-25T01:30:00Z')), 'second 02:30 (CET)')
  t.notOk(w.contains(at('2026-10-25T02:00:00Z')), '03:00 CET')
})

t.test('windows crossing midnight belong to the day they start', async (t) => {
  const w = win('Fri 22:00-06:00 UTC')
  t.ok(w.contains(at('2026-12-04T22:00:00Z')), 'Friday 22:00')
  t.ok(w.contains(at('2026-12-05T05:59:00Z')), 'Saturday 05:59')
  t.notOk(w.contains(at('2026-12-05T06:00:00Z')), 'Saturday 06:00')
  t.notOk(w.contains(at('2026-12-04T05:00:00Z')), 'Friday 05:00 belongs to Thursday night')
  t.notOk(w.contains(at('2026-12-05T22:30:00Z')), 'Saturday night is not listed')
})

t.test('day lists, ranges that wrap, whole days, zones', async (t) => {
  const weekend = win('Sat,Sun 00:00-24:00 UTC')
  t.ok(weekend.contains(at('2026-12-05T00:00:00Z')))
  t.ok(weekend.contains(at('2026-12-06T23:59:59Z')))
  t.notOk(weekend.contains(at('2026-12-07T00:00:00Z')), 'Monday')
  const wrap = win('fri-MON 09:00-10:00 America/New_York')
  t.ok(wrap.contains(at('2026-12-07T14:30:00Z')), 'Monday 09:30 EST')
  t.notOk(wrap.contains(at('2026-12-08T14:30:00Z')), 'Tuesday')
  const mixed = win('Mon-Wed,Fri 12:00-13:00 Asia/Kolkata')
  t.ok(mixed.contains(at('2026-12-04T06:45:00Z')), 'Friday 12:15 IST (UTC+5:30)')
  t.notOk(mixed.contains(at('2026-12-03T06:45:00Z')), 'Thursday')
})

t.test('errors name the problem', async (t) => {
  const cases: [string, RegExp][] = [
    ['Mon-Fri 08:00-18:00', /expected "DAYS HH:MM-HH:MM ZONE"/],
    ['Mon-Fri 08:00-18:00 Europe/Berlin extra', /expected "DAYS HH:MM-HH:MM ZONE"/],
    ['Weekdays 08:00-18:00 UTC', /days "Weekdays": expected days such as Mon/],
    ['Mon-Tue-Wed 08:00-18:00 UTC', /days "Mon-Tue-Wed"/],
    ['Mon,,Tue 08:00-18:00 UTC', /days "Mon,,Tue"/],
    ['Mon 8:00-18:00 UTC', /hours "8:00-18:00": expected HH:MM-HH:MM/],
    ['Mon 24:00-18:00 UTC', /start must be 00:00 to 23:59/],
    ['Mon 08:60-18:00 UTC', /start must be 00:00 to 23:59/],
    ['Mon 08:00-24:30 UTC', /end must be 00:00 to 24:00/],
    ['Mon 08:00-08:00 UTC', /start and end are equal; for the whole day write 00:00-24:00/],
    ['Mon 08:00-18:00 Mars/Olympus', /time zone "Mars\/Olympus" is not an IANA time zone name/],
    // The exact input of a finding: only the days were reported; the hours and the zone after a fix.
    ['Mon-Fry 08:00-25:00 Mars/Olympus', /^days "Mon-Fry": .*; hours "08:00-25:00": end must be 00:00 to 24:00; time zone "Mars\/Olympus" is not an IANA/],
  ]
  for (const [text, error] of cases) {
    const r = parseWindow(text)
    t.notOk(r.ok, text)
    if (!r.ok) t.match(r.error, error, text)
  }
})

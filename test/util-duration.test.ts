import t from 'tap'
import { parseDuration, formatDuration, isBareNumber } from '../src/util/duration.js'

t.test('durations: single and combined units, largest first', async (t) => {
  const cases: [string, number | undefined][] = [
    ['500ms', 500],
    ['30s', 30_000],
    ['15m', 900_000],
    ['2h', 7_200_000],
    ['7d', 604_800_000],
    ['1h30m', 5_400_000],
    ['1d2h3m4s5ms', 93_784_005],
    ['30m1h', undefined],
    ['1m1m', undefined],
    ['90', undefined],
    ['1:30', undefined],
    ['1.5h', undefined],
    ['-1s', undefined],
    ['', undefined],
    ['1 h', undefined],
  ]
  for (const [text, ms] of cases) t.equal(parseDuration(text), ms, text)
  t.equal(formatDuration(5_400_000), '1h30m')
  t.equal(formatDuration(3_600_000), '1h')
  t.equal(formatDuration(1500), '1s500ms')
  t.equal(formatDuration(0), '0s')
})

t.test('a bare number is a duration without a unit', async (t) => {
  for (const v of [60, 0, 1.5, '60', ' 60 ', '1.5', '.5', '-1', '+2']) t.ok(isBareNumber(v), JSON.stringify(v))
  for (const v of ['60s', '1h30m', '', 'sixty', '1:30', '6 0', undefined, null, true]) t.notOk(isBareNumber(v), JSON.stringify(v))
})

/**
 * Weekly time windows: `DAYS HH:MM-HH:MM ZONE`, e.g. `Mon-Fri 08:00-18:00 Europe/Berlin`.
 *
 * - DAYS: a comma-separated list of days (`Mon`, `Tue`, `Wed`, `Thu`, `Fri`, `Sat`, `Sun`, any case)
 *   and ranges (`Mon-Fri`; a range may wrap: `Fri-Mon` is Fri, Sat, Sun, Mon). `Sat,Sun`,
 *   `Mon-Wed,Fri`.
 * - HOURS: `HH:MM-HH:MM`, start inclusive, end exclusive. `24:00` is allowed as an end
 *   (`00:00-24:00` is the whole day). Start and end must differ.
 * - ZONE: an IANA time zone name (`Europe/Berlin`, `America/New_York`, `UTC`), required: a window
 *   without a zone would silently depend on the host's clock settings.
 *
 * Hours are local wall-clock time in ZONE, so windows follow daylight saving time: `08:00-18:00
 * Europe/Berlin` starts at 07:00 UTC in winter and 06:00 UTC in summer. On the spring-forward day
 * the skipped hour does not exist and cannot be inside a window; on the fall-back day the repeated
 * hour is inside a window both times it occurs.
 *
 * Windows crossing midnight (`22:00-06:00`, start after end) belong to the day they start on:
 * `Fri 22:00-06:00` is Friday 22:00 to Saturday 06:00, and does not include Friday 00:00-06:00
 * (that would be Thursday's night). This is how on-call shifts are usually written.
 */
import type { TimeWindow } from './principals.js'

export type ParseWindowResult =
  | { readonly ok: true; readonly window: TimeWindow }
  | { readonly ok: false; readonly error: string }

const DAY_NAMES = ['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun'] as const
const HOURS_RE = /^([0-9]{2}):([0-9]{2})-([0-9]{2}):([0-9]{2})$/
const MINUTE_MS = 60_000

/**
 * Parses and compiles a time window.
 * @param text - `DAYS HH:MM-HH:MM ZONE`, parts separated by spaces.
 * @returns the window, or an error message naming the problem.
 */
/** Start and end minutes of `HH:MM-HH:MM`, or what is wrong with it. */
function parseHours(hourText: string): { start: number; end: number } | string {
  const h = HOURS_RE.exec(hourText)
  if (!h) return `hours "${hourText}": expected HH:MM-HH:MM, e.g. 08:00-18:00`
  const start = Number(h[1]) * 60 + Number(h[2])
  const end = Number(h[3]) * 60 + Number(h[4])
  if (Number(h[1]) > 23 || Number(h[2]) > 59) return `hours "${hourText}": start must be 00:00 to 23:59`
  if (Number(h[4]) > 59 || end > 24 * 60) return `hours "${hourText}": end must be 00:00 to 24:00`
  if (start === end) return `hours "${hourText}": start and end are equal; for the whole day write 00:00-24:00`
  return { start, end }
}

export function parseWindow(text: string): ParseWindowResult {
  const parts = text.trim().split(/\s+/)
  if (parts.length !== 3) {
    return { ok: false, error: 'expected "DAYS HH:MM-HH:MM ZONE", e.g. "Mon-Fri 08:00-18:00 Europe/Berlin"' }
  }
  const [dayText, hourText, zone] = parts as [string, string, string]

  // Every part is judged, so one check reports every mistake in the text.
  const errors: string[] = []
  const days = parseDays(dayText)
  if (typeof days === 'string') errors.push(days)

  const hours = parseHours(hourText)
  if (typeof hours === 'string') errors.push(hours)

  let format: Intl.DateTimeFormat | undefined
  try {
    format = new Intl.DateTimeFormat('en-US', { timeZone: zone, weekday: 'short', hour: '2-digit', minute: '2-digit', hourCycle: 'h23' })
  } catch {
    errors.push(`time zone "${zone}" is not an IANA time zone name (e.g. Europe/Berlin, UTC)`)
  }
  if (typeof days === 'string' || typeof hours === 'string' || format === undefined) return { ok: false, error: errors.join('; ') }
  const { start, end } = hours

  const crossesMidnight = start > end
  const inside = (weekday: number, minutes: number): boolean =>
    crossesMidnight
      ? (days[weekday] === true && minutes >= start) || (days[(weekday + 6) % 7] === true && minutes < end)
      : days[weekday] === true && minutes >= start && minutes < end

  // Offsets change on whole minutes, so one answer holds for a whole minute: the hot path (a check
  // per data-plane request under `enforce_window_at_use`) formats a date at most once a minute.
  let cachedMinute = Number.NaN
  let cachedInside = false
  const window: TimeWindow = Object.freeze({
    source: text,
    contains(at: number): boolean {
      const minute = Math.floor(at / MINUTE_MS)
      if (minute !== cachedMinute) {
        const local = localTime(format, at)
        cachedInside = inside(local.weekday, local.minutes)
        cachedMinute = minute
      }
      return cachedInside
    },
  })
  return { ok: true, window }
}

/** `Mon-Fri,Sun` → a flag per weekday (0 = Monday), or an error message. */
function parseDays(text: string): boolean[] | string {
  const days: boolean[] = new Array<boolean>(7).fill(false)
  for (const item of text.split(',')) {
    const range = item.split('-')
    const ends = range.map((d) => DAY_NAMES.indexOf(d.toLowerCase() as (typeof DAY_NAMES)[number]))
    if (range.length > 2 || ends.some((i) => i < 0)) {
      return `days "${text}": expected days such as Mon, Mon-Fri or Sat,Sun (Mon Tue Wed Thu Fri Sat Sun)`
    }
    const first = ends[0] as number
    const last = ends[ends.length - 1] as number
    for (let d = first; ; d = (d + 1) % 7) {
      days[d] = true
      if (d === last) break
    }
  }
  return days
}

const WEEKDAY_INDEX: Readonly<Record<string, number>> = { Mon: 0, Tue: 1, Wed: 2, Thu: 3, Fri: 4, Sat: 5, Sun: 6 }

/** Local weekday (0 = Monday) and minutes since local midnight of an instant. */
function localTime(format: Intl.DateTimeFormat, at: number): { weekday: number; minutes: number } {
  let weekday = 0
  let hour = 0
  let minute = 0
  for (const part of format.formatToParts(at)) {
    if (part.type === 'weekday') weekday = WEEKDAY_INDEX[part.value] ?? 0
    else if (part.type === 'hour') hour = Number(part.value)
    else if (part.type === 'minute') minute = Number(part.value)
  }
  return { weekday, minutes: hour * 60 + minute }
}

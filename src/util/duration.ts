/**
 * Durations are written as strings (`500ms`, `30s`, `15m`, `2h`, `7d`, or combined, largest unit
 * first: `1h30m`), never bare numbers: a bare `90` is ambiguous (seconds? minutes?) and YAML 1.1
 * would read `1:30` as sexagesimal.
 */
const UNIT_MS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1000, ms: 1 } as const
type Unit = keyof typeof UNIT_MS
const ORDER: readonly Unit[] = ['d', 'h', 'm', 's', 'ms']
const PART_RE = /([0-9]{1,9})(ms|s|m|h|d)/g

export const DURATION_PATTERN = '^([0-9]{1,9}(ms|s|m|h|d)){1,5}$'
const DURATION_RE = new RegExp(DURATION_PATTERN)

/** Parses a duration string into milliseconds; undefined when it isn't one. */
export function parseDuration(text: string): number | undefined {
  if (!DURATION_RE.test(text)) return undefined
  let ms = 0
  let last = -1
  for (const [, n, unit] of text.matchAll(PART_RE)) {
    // Largest unit first, each at most once: `30m1h` and `1m1m` are typos, not durations.
    const rank = ORDER.indexOf(unit as Unit)
    if (rank <= last) return undefined
    last = rank
    ms += Number(n) * UNIT_MS[unit as Unit]
  }
  return ms
}

/**
 * True for a number, or a string that is only a number (`60`, `"60"`, `"1.5"`): a duration
 * without a unit. User input like that is refused rather than guessed (seconds? minutes?).
 */
export function isBareNumber(v: unknown): boolean {
  return typeof v === 'number' || (typeof v === 'string' && /^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)\s*$/.test(v))
}

/** The message for a duration given without a unit, naming where it was given (`ttl`, `--duration`). */
export function noUnitMessage(name: string, v: unknown): string {
  return `${name}: ${typeof v === 'string' ? JSON.stringify(v) : String(v)} has no unit: give one, e.g. 60s, 15m or 1h (a bare number is ambiguous)`
}

/** Formats milliseconds compactly, largest unit first (`5400000` → `1h30m`). */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s'
  let rest = ms
  let out = ''
  for (const unit of ORDER) {
    const n = Math.floor(rest / UNIT_MS[unit])
    if (n > 0) {
      out += `${n}${unit}`
      rest -= n * UNIT_MS[unit]
    }
  }
  return out
}

/**
 * Durations are written as strings (`500ms`, `30s`, `15m`, `2h`, `7d`), never bare numbers:
 * a bare `90` is ambiguous (seconds? minutes?) and YAML 1.1 would read `1:30` as sexagesimal.
 */
const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
const DURATION_RE = /^([0-9]{1,9})(ms|s|m|h|d)$/

export const DURATION_PATTERN = '^[0-9]{1,9}(ms|s|m|h|d)$'

/** Parses a duration string into milliseconds; undefined when it isn't one. */
export function parseDuration(text: string): number | undefined {
  const m = DURATION_RE.exec(text)
  if (!m) return undefined
  return Number(m[1]) * UNIT_MS[m[2] as keyof typeof UNIT_MS]
}

/** Formats milliseconds as the largest exact unit (`3600000` → `1h`). */
export function formatDuration(ms: number): string {
  for (const unit of ['d', 'h', 'm', 's'] as const) {
    if (ms >= UNIT_MS[unit] && ms % UNIT_MS[unit] === 0) return `${ms / UNIT_MS[unit]}${unit}`
  }
  return `${ms}ms`
}

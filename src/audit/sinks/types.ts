/**
 * A sink delivers formatted audit lines to one destination. `write` is called on the hot path of
 * every decision: it only queues (bounded) and never throws, blocks or waits. What a sink cannot
 * keep once its bound is reached is reported through `onDrop`, never lost silently.
 */

export interface AuditSink {
  /** Names the sink in metrics and in `audit.dropped` events (closed set: from config). */
  readonly name: string
  /**
   * The sink reads `record` (syslog takes the event's time and name for its header). Only such
   * sinks are given it: the audit log skips building a record object per event for the others.
   */
  readonly usesRecord?: boolean
  /** Queues one line (without its newline); `record` is the native event it renders (given when
   * `usesRecord`). */
  write(line: string, record?: Readonly<Record<string, unknown>>): void
  /** Resolves once everything queued so far was handed to the destination (or given up on). */
  flush(): Promise<void>
  /** Flushes, then releases the destination. */
  close(): Promise<void>
}

/** What a sink reports to the audit log that owns it. */
export interface SinkReporter {
  /** `count` lines were dropped once the sink's bound was reached. */
  onDrop(count: number): void
  /** A destination fault (written to the operational log, rate-limited by the caller). */
  onError(err: Error): void
}

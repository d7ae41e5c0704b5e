/**
 * The policy in force in a running gateway: hot reloads (reloader.ts) and what each one tells the
 * operator (a log line, `jitgate_policy_reloads_total{result}`, a `policy.loaded` or
 * `policy.rejected` audit event), and version agreement between replicas: after a local reload, the
 * replica announces its version (notices.ts); the others re-read their own files and report when
 * they arrive at a different version, in the log and at `/readyz` (`policy_version_mismatch`).
 */
import type { Logger } from 'pino'
import { formatIssues, type SourceIssue } from '../config/yaml-source.js'
import { bounded, type AuditLog } from '../audit/audit-log.js'
import type { GatewayMetrics } from '../metrics/metrics.js'
import type { Policy } from '../policy/policy.js'
import type { PolicyNotice, PolicyNoticeBus } from './notices.js'
import { createPolicyReloader, type ReloadResult, type ReloadTrigger } from '../policy/reloader.js'

/** At most this many problems go into a `policy.rejected` event; the log has the same cut. */
export const MAX_REPORTED_ISSUES = 50

export interface LivePolicyDeps {
  readonly initial: Policy
  /** Loads and validates the policy folder in full; rejects with SourceError. */
  load(): Promise<Policy>
  /** Folder to watch for changes; undefined: SIGHUP and notices only. */
  readonly watchDir: string | undefined
  readonly debounceMs?: number
  readonly gatewayId: string
  readonly bus: PolicyNoticeBus
  readonly audit: AuditLog
  readonly metrics: GatewayMetrics
  readonly log: Logger
}

/** This replica's version differs from the one another replica announced last. */
export interface PolicyVersionMismatch {
  readonly announced: string
  /** The gateway id of the replica that announced it. */
  readonly origin: string
  readonly local: string
}

export interface LivePolicy {
  /** The policy in force; read once per request. */
  current(): Policy
  /** Reloads now (or right after the reload in progress); `signal` is SIGHUP. */
  reload(trigger: ReloadTrigger): Promise<ReloadResult>
  /** Set while this replica's version differs from the last announced one. */
  mismatch(): PolicyVersionMismatch | undefined
  close(): Promise<void>
}

export function createLivePolicy(deps: LivePolicyDeps): LivePolicy {
  const { log, audit, metrics, gatewayId } = deps
  /** The last version announced by any replica (this one included). */
  let announced: PolicyNotice | undefined
  let reportedMismatch = ''
  /** The last reload was rejected: the next good one is reported even if its version is unchanged. */
  let lastRejected = false

  const reloader = createPolicyReloader({
    initial: deps.initial,
    load: deps.load,
    ...(deps.watchDir !== undefined ? { watchDir: deps.watchDir } : {}),
    ...(deps.debounceMs !== undefined ? { debounceMs: deps.debounceMs } : {}),
    onWatchError: (err) => log.warn({ err: err.message, dir: deps.watchDir }, 'cannot watch the policy folder: reload with SIGHUP'),
    onReload: report,
  })

  function report(r: ReloadResult, trigger: ReloadTrigger): void {
    metrics.policyReloads.inc({ result: r.result })
    const actor = trigger === 'notice' ? `replica:${announced?.origin ?? 'unknown'}` : trigger === 'signal' ? 'signal:SIGHUP' : 'file-watch'
    if (r.result === 'loaded') {
      log.info({ trigger, policy_version: r.policy.version, previous_version: r.previous.version }, 'policy reloaded')
      audit.emit('policy.loaded', { policy_files: fileNames(r.policy), actor })
    } else if (r.result === 'rejected') {
      const errors = reportable(r.issues)
      log.error({ trigger, policy_version: r.policy.version, errors }, 'policy reload rejected: the previous version stays in force')
      audit.emit('policy.rejected', { errors, actor })
    } else if (lastRejected) {
      // The files are good again (back to the version in force): the SIEM's last word on the policy
      // must not stay "rejected".
      log.info({ trigger, policy_version: r.policy.version }, 'policy files valid again: the version in force is unchanged')
      audit.emit('policy.loaded', { policy_files: fileNames(r.policy), actor })
    } else if (trigger === 'signal') {
      // An operator who sent SIGHUP waits for an answer; an editor's saves need none.
      log.info({ trigger, policy_version: r.policy.version }, 'policy unchanged: the version in force stays')
    } else {
      log.debug({ trigger, policy_version: r.policy.version }, 'policy unchanged')
    }
    lastRejected = r.result === 'rejected'
    // Announce local reloads that changed something, and every SIGHUP: an operator who signals one
    // replica means the whole fleet. A notice-triggered reload is never re-announced (no echo).
    if (trigger !== 'notice' && (r.result === 'loaded' || (r.result === 'unchanged' && trigger === 'signal'))) {
      announce(r.policy.version)
    }
    checkAgreement()
  }

  function announce(version: string): void {
    announced = { version, origin: gatewayId }
    deps.bus.publish(announced).catch((err: Error) => log.warn({ err: err.message }, 'could not announce the policy version to other replicas'))
  }

  function checkAgreement(): void {
    const m = mismatch()
    const key = m ? `${m.announced} ${m.local}` : ''
    if (m && key !== reportedMismatch) {
      log.warn(m, `policy version ${m.local} differs from ${m.announced} announced by ${m.origin}: the policy files of the replicas differ`)
    }
    reportedMismatch = key
  }

  function mismatch(): PolicyVersionMismatch | undefined {
    const local = reloader.current().version
    return announced !== undefined && announced.version !== local ? { announced: announced.version, origin: announced.origin, local } : undefined
  }

  const unsubscribe = deps.bus.subscribe((notice) => {
    if (notice.origin === gatewayId) return
    announced = notice
    void reloader.reload('notice')
  })

  return {
    current: reloader.current,
    reload: reloader.reload,
    mismatch,
    async close() {
      unsubscribe()
      await reloader.close()
      await deps.bus.close()
    },
  }
}

/** The issues as text lines for the log and the audit event, bounded in number and length. */
function reportable(issues: readonly SourceIssue[]): string[] {
  const lines = issues.slice(0, MAX_REPORTED_ISSUES).map((i) => bounded(formatIssues([i])))
  if (issues.length > MAX_REPORTED_ISSUES) lines.push(`… and ${issues.length - MAX_REPORTED_ISSUES} more`)
  return lines
}

function fileNames(policy: Policy): string[] {
  return policy.files.map((f) => f.split('/').pop() as string)
}

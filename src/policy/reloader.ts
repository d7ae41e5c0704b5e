/**
 * Hot reload of the policy folder. A reload parses and validates every file in full and only then
 * swaps the compiled policy in, in one assignment: a request decides under the old policy or the
 * new one, never a mix, and an invalid policy is never used (the last good one stays in force).
 *
 * Triggers: a change in the policy folder (fs.watch, debounced: an editor's save or a Kubernetes
 * ConfigMap swap is a burst of events), SIGHUP (the CLI calls `reload('signal')`), and a reload
 * notice from another replica (`'notice'`). The folder is watched, not the files it names (secret
 * files, JWKS files elsewhere): after changing those, send SIGHUP.
 *
 * What to do with each result (log, metric, audit, announce to replicas) is the caller's: see
 * `onReload`.
 *
 * Loading is asynchronous (the YAML is parsed off the event loop: requests keep being decided under
 * the policy in force meanwhile) and one at a time: a reload asked for while one runs is done once
 * more after it (the files may have changed after they were read), shared by every ask meanwhile.
 */
import { watch, type FSWatcher } from 'node:fs'
import { SourceError, type SourceIssue } from '../config/yaml-source.js'
import type { Policy } from './policy.js'

/** What caused a reload. */
export type ReloadTrigger = 'file' | 'signal' | 'notice'

export type ReloadResult =
  /** The new policy is in force. */
  | { readonly result: 'loaded'; readonly policy: Policy; readonly previous: Policy }
  /** The files compile to exactly the policy in force (secrets included): nothing to do. */
  | { readonly result: 'unchanged'; readonly policy: Policy }
  /** The files are invalid; `policy` (the previous one) stays in force. */
  | { readonly result: 'rejected'; readonly policy: Policy; readonly issues: readonly SourceIssue[] }

export interface PolicyReloaderOptions {
  readonly initial: Policy
  /** Loads and validates the policy folder in full; rejects with SourceError listing every problem. */
  load(): Promise<Policy>
  /** Told about every reload, after the swap. Must not throw. */
  onReload(result: ReloadResult, trigger: ReloadTrigger): void
  /** Folder to watch; undefined: no watching (SIGHUP and notices only). */
  readonly watchDir?: string
  /** Quiet time after the last change before reloading (default 250 ms). */
  readonly debounceMs?: number
  /** The watcher failed (folder removed, inotify limits): reloads then need SIGHUP. */
  readonly onWatchError?: (err: Error) => void
}

export interface PolicyReloader {
  /** The policy in force. The data plane reads it once per request. */
  current(): Policy
  /** Reloads now, or right after the reload in progress; resolves once the result is in force and reported. */
  reload(trigger: ReloadTrigger): Promise<ReloadResult>
  /** Stops watching; resolves once a reload in progress has been reported. */
  close(): Promise<void>
}

/** Which trigger a merged reload reports: a SIGHUP is announced to the fleet, a notice never is. */
const PRECEDENCE: Readonly<Record<ReloadTrigger, number>> = { signal: 2, file: 1, notice: 0 }

export function createPolicyReloader(opts: PolicyReloaderOptions): PolicyReloader {
  let policy = opts.initial
  const debounceMs = opts.debounceMs ?? 250

  let running: Promise<ReloadResult> | undefined
  let queued: { trigger: ReloadTrigger; readonly result: Promise<ReloadResult> } | undefined

  const start = (trigger: ReloadTrigger): Promise<ReloadResult> => {
    const run: Promise<ReloadResult> = once(trigger).finally(() => {
      if (running === run) running = undefined
    })
    running = run
    return run
  }

  // A queued reload is joined even once the one before it has ended (its own start is then a
  // callback away): asking in reaction to a finished reload never runs a second load beside it.
  const reload = (trigger: ReloadTrigger): Promise<ReloadResult> => {
    if (queued !== undefined) {
      if (PRECEDENCE[trigger] > PRECEDENCE[queued.trigger]) queued.trigger = trigger
      return queued.result
    }
    if (running === undefined) return start(trigger)
    const after = (): Promise<ReloadResult> => {
      queued = undefined
      return start(next.trigger)
    }
    const next: { trigger: ReloadTrigger; result: Promise<ReloadResult> } = { trigger, result: running.then(after, after) }
    queued = next
    return next.result
  }

  const once = async (trigger: ReloadTrigger): Promise<ReloadResult> => {
    let next: Policy
    let result: ReloadResult
    try {
      next = await opts.load()
    } catch (err) {
      // Anything that is not a policy error (a file vanishing mid-read, a bug) rejects the reload
      // too: the policy in force stays, and the process does not die of a watcher event.
      const issues = err instanceof SourceError ? err.issues : [{ file: opts.watchDir ?? '', line: 0, column: 0, path: '', message: String((err as Error).message ?? err) }]
      result = { result: 'rejected', policy, issues }
      opts.onReload(result, trigger)
      return result
    }
    if (next.fingerprint === policy.fingerprint) {
      result = { result: 'unchanged', policy }
    } else {
      const previous = policy
      policy = next
      result = { result: 'loaded', policy, previous }
    }
    opts.onReload(result, trigger)
    return result
  }

  let timer: NodeJS.Timeout | undefined
  let watcher: FSWatcher | undefined
  if (opts.watchDir !== undefined) {
    const onError = (err: Error) => opts.onWatchError?.(err)
    try {
      // Any entry of the folder: a ConfigMap update renames `..data`, not the *.yaml links.
      // Not persistent: watching alone never keeps the process alive.
      watcher = watch(opts.watchDir, { persistent: false }, () => {
        clearTimeout(timer)
        timer = setTimeout(() => void reload('file'), debounceMs)
        timer.unref()
      })
      watcher.on('error', onError)
    } catch (err) {
      onError(err as Error)
    }
  }

  return {
    current: () => policy,
    reload,
    async close() {
      clearTimeout(timer)
      watcher?.close()
      await queued?.result
      await running
    },
  }
}

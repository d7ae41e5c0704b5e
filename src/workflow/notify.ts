/**
 * Workflow notifications through webhooks (undici): a generic JSON payload signed with HMAC-SHA256,
 * and a Slack-compatible one (`{"text": …}`, for Slack incoming webhooks and the chat tools that
 * accept the same shape).
 *
 * A notification never blocks or changes a decision: `notify` only queues and returns. Deliveries
 * run in the background, a few at a time, each retried with exponential backoff (and jitter) on a
 * network error, a timeout, a 5xx or a 429; other 4xx answers are final. The queue is bounded:
 * past `queueSize` waiting deliveries a new one is dropped. Every outcome is counted
 * (`jitgate_notifications_total{outcome}`), so a failing webhook is visible, not silent.
 *
 * Generic signature: `X-Jitgate-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`
 * with `X-Jitgate-Timestamp` (Unix seconds); a receiver recomputes it over the raw body and
 * refuses old timestamps. `X-Jitgate-Delivery` stays the same across retries, for de-duplication.
 */
import { createHmac, randomUUID } from 'node:crypto'
import { request, type Dispatcher } from 'undici'
import type { AccessRequest } from './request-store.js'
import type { NotificationEvent } from './notification-events.js'

export type { NotificationEvent } from './notification-events.js'

export interface Notification {
  readonly event: NotificationEvent
  readonly at: number
  readonly request: AccessRequest
  /** Who caused it (approver, requester); absent for the gateway's own transitions. */
  readonly actor?: string
  /** `request.escalated`: the group it was escalated to. */
  readonly escalationGroup?: string
}

export interface WebhookSpec {
  readonly url: string
  readonly format: 'generic' | 'slack'
  /** HMAC key of the generic format. Non-enumerable once configured: never serialised. */
  readonly secret?: string
  /** The events this webhook receives; all when undefined. */
  readonly events?: readonly NotificationEvent[]
}

export type NotificationOutcome = 'sent' | 'retried' | 'failed' | 'dropped'

export interface NotifierOptions {
  readonly webhooks: readonly WebhookSpec[]
  readonly gatewayId: string
  /** Deliveries waiting or in flight, across webhooks, beyond which new ones are dropped. */
  readonly queueSize: number
  readonly maxAttempts: number
  /** Per attempt. */
  readonly timeoutMs: number
  /** First retry delay; doubled per attempt, at most a minute. */
  readonly backoffMs: number
  readonly onOutcome?: (outcome: NotificationOutcome) => void
  /** A delivery that failed for good, or was dropped (the operational log). */
  readonly onFailure?: (detail: { url: string; event: NotificationEvent; error: string }) => void
  readonly dispatcher?: Dispatcher
}

export interface Notifier {
  /** Queues the notification for every webhook that wants it. Never throws, never waits. */
  notify(n: Notification): void
  /** Resolves once nothing is queued or in flight (tests, shutdown). */
  idle(): Promise<void>
  /** Stops retrying and accepting; waits for attempts in flight. */
  close(): Promise<void>
}

const CONCURRENCY = 4
const MAX_BACKOFF_MS = 60_000

interface Delivery {
  readonly hook: WebhookSpec
  readonly id: string
  readonly event: NotificationEvent
  readonly body: string
}

export function createNotifier(opts: NotifierOptions): Notifier {
  const waiting: Delivery[] = []
  let active = 0
  let closed = false
  const stop = new AbortController()
  let idleWaiters: (() => void)[] = []
  const count = (o: NotificationOutcome): void => opts.onOutcome?.(o)

  const settleIdle = (): void => {
    if (waiting.length > 0 || active > 0) return
    for (const w of idleWaiters) w()
    idleWaiters = []
  }

  const pump = (): void => {
    while (active < CONCURRENCY && waiting.length > 0) {
      const d = waiting.shift() as Delivery
      active++
      void deliver(d).finally(() => {
        active--
        pump()
        settleIdle()
      })
    }
  }

  /** Attempts with backoff; resolves when sent, given up on, or the notifier closed. */
  async function deliver(d: Delivery): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const result = await attemptOnce(d)
      if (result.kind === 'sent') return count('sent')
      if (result.kind === 'final' || attempt >= opts.maxAttempts || closed) {
        count('failed')
        opts.onFailure?.({ url: redactUrl(d.hook.url), event: d.event, error: result.error })
        return
      }
      count('retried')
      const base = Math.min(opts.backoffMs * 2 ** (attempt - 1), MAX_BACKOFF_MS)
      // Jitter: replicas retrying the same dead webhook spread out instead of pulsing together.
      await sleep(base / 2 + Math.random() * (base / 2), stop.signal)
    }
  }

  async function attemptOnce(d: Delivery): Promise<{ kind: 'sent' } | { kind: 'retry' | 'final'; error: string }> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'user-agent': 'jitgate-notifier',
      'x-jitgate-event': d.event,
      'x-jitgate-delivery': d.id,
    }
    if (d.hook.format === 'generic' && d.hook.secret !== undefined) {
      const ts = String(Math.floor(Date.now() / 1000))
      headers['x-jitgate-timestamp'] = ts
      headers['x-jitgate-signature'] = `v1=${createHmac('sha256', d.hook.secret).update(`${ts}.${d.body}`).digest('hex')}`
    }
    try {
      const res = await request(d.hook.url, {
        method: 'POST',
        headers,
        body: d.body,
        signal: AbortSignal.any([AbortSignal.timeout(opts.timeoutMs), stop.signal]),
        ...(opts.dispatcher !== undefined ? { dispatcher: opts.dispatcher } : {}),
      })
      await res.body.dump()
      if (res.statusCode >= 200 && res.statusCode < 300) return { kind: 'sent' }
      const retry = res.statusCode >= 500 || res.statusCode === 429
      return { kind: retry ? 'retry' : 'final', error: `HTTP ${res.statusCode}` }
    } catch (err) {
      return { kind: 'retry', error: (err as Error).message }
    }
  }

  return {
    notify(n) {
      if (closed) return
      for (const hook of opts.webhooks) {
        if (hook.events !== undefined && !hook.events.includes(n.event)) continue
        const d: Delivery = { hook, id: randomUUID(), event: n.event, body: JSON.stringify(hook.format === 'slack' ? slackPayload(n) : genericPayload(n, opts.gatewayId)) }
        if (waiting.length + active >= opts.queueSize) {
          count('dropped')
          opts.onFailure?.({ url: redactUrl(hook.url), event: n.event, error: 'notification queue full' })
          continue
        }
        waiting.push(d)
      }
      pump()
    },
    idle() {
      return waiting.length === 0 && active === 0 ? Promise.resolve() : new Promise((resolve) => idleWaiters.push(resolve))
    },
    async close() {
      closed = true
      for (const d of waiting.splice(0)) {
        count('dropped')
        opts.onFailure?.({ url: redactUrl(d.hook.url), event: d.event, error: 'gateway stopping' })
      }
      stop.abort()
      await this.idle()
    },
  }
}

/** The generic payload: the event and the request's public fields (never a token). */
export function genericPayload(n: Notification, gatewayId: string): Record<string, unknown> {
  const r = n.request
  return {
    event: n.event,
    time: new Date(n.at).toISOString(),
    gateway_id: gatewayId,
    ...(n.actor !== undefined ? { actor: n.actor } : {}),
    ...(n.escalationGroup !== undefined ? { escalation_group: n.escalationGroup } : {}),
    request: {
      id: r.id,
      kind: r.kind,
      status: r.status,
      subject: r.subject,
      resource: r.resource,
      scopes: r.scopes,
      duration_s: Math.round(r.durationMs / 1000),
      reason: r.reason,
      ...(r.ticket !== undefined ? { ticket: r.ticket } : {}),
      created_at: new Date(r.createdAt).toISOString(),
      expires_at: new Date(r.expiresAt).toISOString(),
      grant_id: r.grantId,
      ...(r.grantExpiresAt !== undefined ? { grant_expires_at: new Date(r.grantExpiresAt).toISOString() } : {}),
      ...(r.comment !== undefined ? { comment: r.comment } : {}),
    },
  }
}

const HEADLINES: Record<NotificationEvent, string> = {
  'request.created': 'New access request',
  'request.escalated': 'Access request escalated',
  'request.approved': 'Access request approved',
  'request.denied': 'Access request denied',
  'request.expired': 'Access request expired',
  'breakglass.used': ':rotating_light: BREAK-GLASS access used (review required)',
}

/** Slack's incoming-webhook shape. Slack mrkdwn: `&`, `<` and `>` in user text must be escaped. */
export function slackPayload(n: Notification): { text: string } {
  const r = n.request
  const esc = (s: string): string => s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
  const lines = [
    `*${HEADLINES[n.event]}*: \`${r.id}\``,
    `*${esc(r.subject)}* → *${esc(r.resource)}* for ${Math.round(r.durationMs / 60_000)} min: ${r.scopes.map((s) => `\`${esc(s)}\``).join(', ')}`,
    `Reason: ${esc(r.reason)}${r.ticket !== undefined ? ` (ticket ${esc(r.ticket)})` : ''}`,
  ]
  if (n.actor !== undefined) lines.push(`By: ${esc(n.actor)}`)
  if (n.escalationGroup !== undefined) lines.push(`Escalated to: ${esc(n.escalationGroup)}`)
  if (r.comment !== undefined) lines.push(`Comment: ${esc(r.comment)}`)
  return { text: lines.join('\n') }
}

/** A webhook URL without its path and query, which often hold the webhook's secret (Slack's do). */
function redactUrl(url: string): string {
  try {
    return new URL(url).origin
  } catch {
    return '<invalid url>'
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve()
    const timer = setTimeout(done, ms)
    function done(): void {
      clearTimeout(timer)
      signal.removeEventListener('abort', done)
      resolve()
    }
    signal.addEventListener('abort', done, { once: true })
  })
}

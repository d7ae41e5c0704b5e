/** Webhook notifications against real HTTP receivers on port 0: signature, Slack shape, retries, bounds. */
import { createHmac } from 'node:crypto'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import { createNotifier, type Notification, type NotificationOutcome, type NotifierOptions } from '../../src/workflow/notify.js'
import { makeRequest } from './request-store-contract.js'

interface Received {
  readonly headers: IncomingHttpHeaders
  readonly body: string
}

/** A receiver answering each POST with the next status of `statuses` (the last one repeats). */
async function receiver(t: Test, statuses: number[] = [200], delayMs = 0) {
  const received: Received[] = []
  const server = createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => (body += c.toString()))
    req.on('end', () => {
      received.push({ headers: req.headers, body })
      const status = statuses[Math.min(received.length - 1, statuses.length - 1)] as number
      setTimeout(() => res.writeHead(status).end(), delayMs)
    })
  })
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r))
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  )
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook/SECRET-PATH`, received }
}

function notifier(t: Test, over: Partial<NotifierOptions>) {
  const outcomes: NotificationOutcome[] = []
  const failures: { url: string; error: string }[] = []
  const n = createNotifier({
    webhooks: [],
    gatewayId: 'gw-test',
    queueSize: 100,
    maxAttempts: 3,
    timeoutMs: 2000,
    backoffMs: 20,
    onOutcome: (o) => outcomes.push(o),
    onFailure: (f) => failures.push(f),
    ...over,
  })
  t.teardown(() => n.close())
  return { n, outcomes, failures }
}

const note = (over: Partial<Notification> = {}): Notification => ({
  event: 'request.created',
  at: Date.parse('2026-12-03T17:10:00.000Z'),
  actor: 'acme',
  request: makeRequest({ reason: 'SUP-1 <urgent> & "now"' }),
  ...over,
})

t.test('generic: signed JSON a receiver can verify', async (t) => {
  const hook = await receiver(t)
  const { n, outcomes } = notifier(t, { webhooks: [{ url: hook.url, format: 'generic', secret: 'webhook-secret' }] })
  const sent = note()
  n.notify(sent)
  await n.idle()
  t.same(outcomes, ['sent'])
  const [got] = hook.received
  const body = JSON.parse(got!.body)
  t.match(body, {
    event: 'request.created',
    time: '2026-12-03T17:10:00.000Z',
    gateway_id: 'gw-test',
    actor: 'acme',
    request: { id: sent.request.id, subject: 'acme', resource: 'crm-api', status: 'pending', duration_s: 3600, grant_id: sent.request.grantId },
  })
  t.equal(got!.headers['x-jitgate-event'], 'request.created')
  const ts = got!.headers['x-jitgate-timestamp'] as string
  const expected = createHmac('sha256', 'webhook-secret').update(`${ts}.${got!.body}`).digest('hex')
  t.equal(got!.headers['x-jitgate-signature'], `v1=${expected}`)
  t.ok(Math.abs(Number(ts) - Date.now() / 1000) < 60)
})

t.test('slack: a text payload with user input escaped', async (t) => {
  const hook = await receiver(t)
  const { n } = notifier(t, { webhooks: [{ url: hook.url, format: 'slack', events: ['breakglass.used'] }] })
  n.notify(note())
  n.notify(note({ event: 'breakglass.used' }))
  await n.idle()
  t.equal(hook.received.length, 1, 'only the events the webhook asked for')
  const { text } = JSON.parse(hook.received[0]!.body) as { text: string }
  t.match(text, /BREAK-GLASS/)
  t.match(text, /SUP-1 &lt;urgent&gt; &amp; "now"/)
  t.equal(hook.received[0]!.headers['x-jitgate-signature'], undefined)
})

t.test('retried with backoff on 5xx and 429, one delivery id; a 4xx is final', async (t) => {
  const flaky = await receiver(t, [503, 429, 200])
  const broken = await receiver(t, [400])
  const { n, outcomes, failures } = notifier(t, {
    webhooks: [
      { url: flaky.url, format: 'generic', secret: 's' },
      { url: broken.url, format: 'slack' },
    ],
  })
  n.notify(note())
  await n.idle()
  t.equal(flaky.received.length, 3)
  t.equal(new Set(flaky.received.map((r) => r.headers['x-jitgate-delivery'])).size, 1, 'the same delivery id on every attempt')
  t.equal(broken.received.length, 1)
  t.same(outcomes.filter((o) => o === 'sent').length, 1)
  t.same(outcomes.filter((o) => o === 'retried').length, 2)
  t.same(outcomes.filter((o) => o === 'failed').length, 1)
  t.match(failures, [{ error: 'HTTP 400' }])
  t.notOk(failures.some((f) => f.url.includes('SECRET-PATH')), 'a webhook URL is logged without its secret path')
})

t.test('a dead webhook gives up after maxAttempts; an unreachable one too', async (t) => {
  const dead = await receiver(t, [500])
  const { n, outcomes } = notifier(t, { webhooks: [{ url: dead.url, format: 'slack' }, { url: 'http://127.0.0.1:1/hook', format: 'slack' }] })
  n.notify(note())
  await n.idle()
  t.equal(dead.received.length, 3)
  t.same(outcomes.filter((o) => o === 'failed').length, 2)
})

t.test('notify never waits; past the queue bound new deliveries are dropped and counted', async (t) => {
  const slow = await receiver(t, [200], 300)
  const { n, outcomes } = notifier(t, { webhooks: [{ url: slow.url, format: 'slack' }], queueSize: 5 })
  for (let i = 0; i < 8; i++) n.notify(note())
  t.equal(slow.received.length, 0, 'notify returned before any delivery was even sent')
  await n.idle()
  t.equal(outcomes.filter((o) => o === 'dropped').length, 3)
  t.equal(outcomes.filter((o) => o === 'sent').length, 5)
})

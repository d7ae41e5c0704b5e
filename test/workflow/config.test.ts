/** The workflow's config sections: approvers.oidc, workflow, notifications (secrets never serialised). */
import t from 'tap'
import { loadConfig } from '../../src/config/config.js'
import { SourceError } from '../../src/config/yaml-source.js'

t.test('defaults, and every section read', async (t) => {
  const d = loadConfig({ text: '{}', env: {} })
  t.same(d.approvers, { oidc: undefined })
  t.same(d.workflow, { sweepIntervalMs: 10_000, retentionMs: 30 * 86_400_000 })
  t.same(d.notifications, { webhooks: [], queueSize: 1000, maxAttempts: 5, timeoutMs: 5000, backoffMs: 1000 })

  const c = loadConfig({
    env: { HOOK: 'hmac-key-0123456789' },
    text: `
approvers:
  oidc: { issuer: "https://login.example.com", jwks_url: "https://login.example.com/jwks", audience: jitgate }
workflow: { sweep_interval: 2s, retention: 7d }
notifications:
  webhooks:
    - { url: "https://hooks.example.com/a", secret_env: HOOK, events: [breakglass.used] }
    - { url: "https://hooks.slack.com/services/T/B/X", format: slack }
  queue_size: 10
  max_attempts: 2
  timeout: 1s
  backoff: 100ms
`,
  })
  t.same(c.approvers.oidc, { issuer: 'https://login.example.com', jwksUrl: 'https://login.example.com/jwks', audience: 'jitgate', groupsClaim: 'groups', maxAgeMs: 12 * 3_600_000 })
  const short = loadConfig({ env: {}, text: 'approvers:\n  oidc: { issuer: "https://i", jwks_url: "https://i/jwks", audience: a, max_age: 15m }\n' })
  t.equal(short.approvers.oidc?.maxAgeMs, 15 * 60_000)
  t.same(c.workflow, { sweepIntervalMs: 2000, retentionMs: 7 * 86_400_000 })
  t.match(c.notifications, { queueSize: 10, maxAttempts: 2, timeoutMs: 1000, backoffMs: 100 })
  const [generic, slack] = c.notifications.webhooks
  t.equal(generic?.secret, 'hmac-key-0123456789')
  t.notMatch(JSON.stringify(c), 'hmac-key', 'the secret is never serialised')
  t.same(slack, { url: 'https://hooks.slack.com/services/T/B/X', format: 'slack' })
})

/** The SourceError loading `text` throws. */
function configError(text: string): SourceError {
  try {
    loadConfig({ env: {}, text })
  } catch (err) {
    if (err instanceof SourceError) return err
    throw err
  }
  throw new Error('the config loaded')
}

t.test('approvers.oidc.max_age must be at least a second', async (t) => {
  t.match(configError('approvers:\n  oidc: { issuer: "https://i", jwks_url: "https://i/jwks", audience: a, max_age: 0s }\n').message, /approvers\.oidc\.max_age: must be at least 1s/)
})

t.test('a generic webhook needs its secret; problems are reported with their path', async (t) => {
  t.match(configError('notifications:\n  webhooks:\n    - { url: "https://h/c", events: [request.nope] }\n').message, /notifications\.webhooks\[0\]\.events\[0\]/)
  const err = configError('notifications:\n  webhooks:\n    - { url: "https://h/a" }\n    - { url: "https://h/b", secret_env: MISSING }\n')
  t.match(err.message, /notifications\.webhooks\[0\]\.url: a generic webhook is signed: give secret_env or secret_file/)
  t.match(err.message, /notifications\.webhooks\[1\]\.secret_env: environment variable MISSING is not set/)
})

import t from 'tap'
import { loadConfig, DEFAULT_CONFIG_FILE } from '../../src/config/config.js'
import { SourceError } from '../../src/config/yaml-source.js'

function issuesOf(fn: () => unknown): string[] {
  try {
    fn()
  } catch (err) {
    if (err instanceof SourceError) return err.issues.map((i) => `${i.line}:${i.column} ${i.path}: ${i.message}`)
    throw err
  }
  throw new Error('expected a SourceError')
}

t.test('the shipped default config loads and is frozen', async (t) => {
  const c = loadConfig({ file: DEFAULT_CONFIG_FILE, env: {} })
  t.equal(c.store.kind, 'memory')
  t.same(c.dataPlane.listen, { host: '0.0.0.0', port: 8080 })
  t.same(c.controlPlane.listen, { host: '127.0.0.1', port: 8081 })
  t.equal(c.controlPlane.adminToken, undefined)
  t.ok(c.policyDir.endsWith('/policies'))
  t.ok(Object.isFrozen(c) && Object.isFrozen(c.dataPlane))
})

t.test('every problem is reported at once, with line, column and path', async (t) => {
  const text = [
    'data_plane:', //               1
    '  listen: nowhere', //         2
    '  upstream_timeout: 30', //    3
    '  bogus: 1', //                4
    'store:', //                    5
    '  timeout: fast', //           6
    'log:', //                      7
    '  level: loud', //             8
    'extra: true', //               9
  ].join('\n')
  t.same(issuesOf(() => loadConfig({ text, env: {} })), [
    '2:3 data_plane.listen: expected host:port, e.g. 0.0.0.0:8080 or [::1]:8081',
    '3:3 data_plane.upstream_timeout: expected a duration such as 250ms, 30s, 15m, 2h or 7d',
    '4:3 data_plane.bogus: unknown key',
    '6:3 store.timeout: expected a duration such as 250ms, 30s, 15m, 2h or 7d',
    '8:3 log.level: expected one of "fatal", "error", "warn", "info", "debug", "trace", "silent"',
    '9:1 extra: unknown key',
  ])
})

t.test('YAML traps: duplicate keys, sexagesimal numbers', async (t) => {
  t.match(issuesOf(() => loadConfig({ text: 'log:\n  level: info\nlog:\n  level: warn\n', env: {} })), [/3:1 : Map keys must be unique/])
  // YAML 1.1 would read 1:30 as 90; under 1.2 core it stays a string and fails the duration check.
  t.match(issuesOf(() => loadConfig({ text: 'data_plane:\n  drain_timeout: 1:30\n', env: {} })), [/drain_timeout: expected a duration/])
})

t.test('environment overrides', async (t) => {
  const c = loadConfig({
    text: '{}',
    env: {
      REDIS_URL: 'redis://127.0.0.1:6379/2',
      JITGATE_ADMIN_TOKEN: 'a-long-enough-admin-token',
      JITGATE_DATA_LISTEN: '127.0.0.1:0',
      JITGATE_CONTROL_LISTEN: '[::1]:9999',
      JITGATE_KEY_PREFIX: 'tenant1:',
      JITGATE_LOG_LEVEL: 'warn',
    },
  })
  t.same(c.store, { kind: 'redis', url: 'redis://127.0.0.1:6379/2', keyPrefix: 'tenant1:', timeoutMs: 250, tombstoneMs: 600000, expirySweepMs: 5000 })
  t.equal(c.controlPlane.adminToken, 'a-long-enough-admin-token')
  t.same(c.controlPlane.listen, { host: '::1', port: 9999 })
  t.equal(c.dataPlane.listen.port, 0)
  t.equal(c.logLevel, 'warn')
})

t.test('store.expiry_sweep_interval: a duration of at least 100ms', async (t) => {
  t.equal(loadConfig({ text: 'store: { expiry_sweep_interval: 2s }', env: {} }).store.expirySweepMs, 2000)
  t.same(issuesOf(() => loadConfig({ text: 'store:\n  expiry_sweep_interval: 10ms\n', env: {} })), ['2:3 store.expiry_sweep_interval: expiry_sweep_interval must be at least 100ms'])
  t.match(issuesOf(() => loadConfig({ text: 'store:\n  expiry_sweep_interval: 5\n', env: {} })), [/expiry_sweep_interval: expected a duration/])
})

t.test('bad environment values are reported with the variable name', async (t) => {
  t.same(
    issuesOf(() => loadConfig({ text: '{}', env: { REDIS_URL: 'http://x', JITGATE_ADMIN_TOKEN: 'short', JITGATE_DATA_LISTEN: 'x' } })).sort(),
    [
      '0:0 : expected host:port, got "x"',
      '0:0 : expected a redis://, rediss:// or unix:// URL',
      '0:0 : the admin token must be at least 16 characters',
    ].sort(),
  )
})

t.test('a missing config file is a clear error', async (t) => {
  t.same(issuesOf(() => loadConfig({ file: '/nonexistent/jitgate.yaml', env: {} })), ['0:0 : file not found'])
})

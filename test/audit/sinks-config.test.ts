/** `audit.sinks` in the config file: resolved values, and every mistake reported on its own key. */
import t from 'tap'
import { loadConfig } from '../../src/config/config.js'
import { SourceError, formatIssues } from '../../src/config/yaml-source.js'

const load = (text: string, env: NodeJS.ProcessEnv = {}) => loadConfig({ text, env: { JITGATE_DATA_DIR: '/var/lib/jg', ...env }, baseDir: '/etc/jitgate' })
const problems = (text: string, env: NodeJS.ProcessEnv = {}) => {
  try {
    load(text, env)
    return 'no error'
  } catch (err) {
    return formatIssues((err as SourceError).issues)
  }
}

t.test('sinks resolve: paths against the config file, sizes, durations, secrets from the environment', async (t) => {
  const c = load(
    `audit:
  sinks:
    - { type: file, path: logs/audit.log, rotate_size: 10MiB, rotate_interval: 1d, keep: 7 }
    - { type: http, name: siem, url: "https://c.example/in", format: ocsf, batch_size: 50, batch_wait: 250ms, spool_max_size: 1GiB, headers_from_env: { Authorization: SIEM_AUTH } }
    - { type: syslog, address: "siem.example:601", format: cef, facility: 10 }
    - { type: stdout, format: ecs }
`,
    { SIEM_AUTH: 'Bearer s3cret' },
  )
  t.same(c.audit.sinks, [
    { type: 'file', path: '/etc/jitgate/logs/audit.log', rotate: { keep: 7, maxBytes: 10 * 1024 * 1024, intervalMs: 86_400_000 } },
    {
      type: 'http',
      name: 'siem',
      format: 'ocsf',
      url: 'https://c.example/in',
      headers: { Authorization: 'Bearer s3cret' },
      batchSize: 50,
      batchWaitMs: 250,
      spoolDir: '/var/lib/jg/audit-spool/siem',
      spoolMaxBytes: 1024 ** 3,
    },
    { type: 'syslog', format: 'cef', host: 'siem.example', port: 601, facility: 10 },
    { type: 'stdout', format: 'ecs' },
  ])
  t.equal(load('audit:\n  sinks: [{ type: stdout }]\n', { JITGATE_AUDIT_OUTPUT: '/tmp/a.log' }).audit.sinks, undefined, 'JITGATE_AUDIT_OUTPUT wins: one native sink')
})

t.test('each mistake is reported with its line and key', async (t) => {
  t.equal(
    problems(`audit:
  sinks:
    - { type: file, url: "http://x/" }
    - { type: http, url: "http://c/", headers_from_env: { Authorization: NOT_SET } }
`),
    [
      '<config>:3:7 audit.sinks[0].path: a file sink needs path',
      '<config>:3:21 audit.sinks[0].url: not an option of a file sink',
      '<config>:4:59 audit.sinks[1].headers_from_env.Authorization: environment variable NOT_SET is not set',
    ].join('\n'),
  )
  t.match(problems('audit:\n  sinks:\n    - { type: http, url: "ftp://x", spool_max_size: 10XB }\n'), /url: expected an http:\/\/ or https:\/\/ URL[\s\S]*spool_max_size: expected a size/)
  t.match(problems('audit:\n  output: stdout\n  sinks: [{ type: stdout }]\n'), /audit\.output: set either audit\.output or audit\.sinks, not both/)
  t.match(problems('audit:\n  sinks: [{ type: carrier-pigeon }]\n'), /type: expected one of "stdout", "file", "http", "syslog"/)
})

/**
 * A header name as CGI-style servers see it. CGI, WSGI, Rack and PHP read `X_Jit_Subject`,
 * `X.Jit.Subject` and `X-Jit-Subject` as the same variable (`HTTP_X_JIT_SUBJECT`: Apache turns
 * every character but letters and digits into `_`) and often merge them. Takes a lowercased name.
 */
export function cgiHeaderName(name: string): string {
  return name.replace(NOT_PLAIN_ALL, '-')
}

const NOT_PLAIN_ALL = /[^a-z0-9-]/g

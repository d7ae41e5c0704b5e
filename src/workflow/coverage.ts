/**
 * Whether requested scopes are within entitled ones: every requested scope must be covered by some
 * entitled scope, with the policy's own coverage rule (`scopeCovers` in policy/scope.ts), the one
 * the data plane applies to live grants when the policy tightens. So a grant the workflow issues is
 * always one the data plane accepts as entitled.
 *
 * In short: the requested methods must be among the entitled ones (`*` covers every method and is
 * covered only by `*`; `HEAD` comes with `GET`), and the requested path pattern must be matched
 * segment for segment: a literal by the same literal or a wildcard, `*` by `*` or `**`, `**` only
 * by `**`. Entitled `GET,POST /crm/tickets/**` covers `GET /crm/tickets/*` and
 * `POST /crm/tickets/42/**`, not `DELETE /crm/tickets/1` nor `GET /crm/**`; entitled
 * `GET /crm/customers/*` covers `GET /crm/customers/42`, not `GET /crm/customers/**`.
 */
import { parseScope, scopeCovers, type CompiledScope } from '../policy/scope.js'

export type CoverageResult =
  | { readonly ok: true }
  | { readonly ok: false; readonly invalid: readonly string[]; readonly uncovered: readonly string[] }

/**
 * Checks every requested scope against the entitled ones. `invalid`: scopes that do not parse
 * (with the reason); `uncovered`: valid scopes no entitled scope covers.
 */
export function checkCoverage(requested: readonly string[], entitled: readonly string[]): CoverageResult {
  const grants: CompiledScope[] = []
  for (const text of entitled) {
    const parsed = parseScope(text)
    if (parsed.ok) grants.push(parsed.scope)
  }
  const invalid: string[] = []
  const uncovered: string[] = []
  for (const text of requested) {
    const r = parseScope(text)
    if (!r.ok) invalid.push(`${JSON.stringify(text)}: ${r.error}`)
    else if (!grants.some((e) => scopeCovers(e, r.scope))) uncovered.push(text)
  }
  return invalid.length === 0 && uncovered.length === 0 ? { ok: true } : { ok: false, invalid, uncovered }
}

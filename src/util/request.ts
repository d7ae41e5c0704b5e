import type { IncomingMessage } from 'node:http'

/**
 * The client's address. Read it once, when the request arrives: Node detaches the socket from a
 * request whose body has been read and whose response has finished, and `req.socket` is null then
 * (an audit event built after forwarding a POST would throw).
 */
export function clientAddress(req: IncomingMessage): string {
  return (req.socket as IncomingMessage['socket'] | null)?.remoteAddress ?? ''
}

/**
 * The path of a request target as an audit event shows it: never the query (it can carry
 * credentials, `?access_token=`, and takes no part in a decision) nor a fragment, which no client
 * should send and which can carry one too.
 */
export function pathOfTarget(target: string): string {
  const end = target.search(/[?#]/)
  return end === -1 ? target : target.slice(0, end)
}

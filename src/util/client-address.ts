import type { IncomingMessage } from 'node:http'

/**
 * The client's address. Read it once, when the request arrives: Node detaches the socket from a
 * request whose body has been read and whose response has finished, and `req.socket` is null then
 * (an audit event built after forwarding a POST would throw).
 */
export function clientAddress(req: IncomingMessage): string {
  return (req.socket as IncomingMessage['socket'] | null)?.remoteAddress ?? ''
}

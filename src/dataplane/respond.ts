/**
 * Denial responses: the same code in the body, the audit event and the metric label.
 * Body shape (DESIGN.md): `{"error": {"code", "message", "request_id"}}`.
 */
import type { ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { STATUS_CODES } from 'node:http'
import { DENY_CODES, type DenyCode } from '../decision/codes.js'

/** Precomputed per code: the body template pieces and the RFC 6750 challenge. */
const PREPARED = new Map(
  (Object.keys(DENY_CODES) as DenyCode[]).map((code) => {
    const info = DENY_CODES[code] as { status: number; message: string; bearerError?: string }
    const challenge =
      info.bearerError === undefined
        ? undefined
        : info.bearerError === 'none'
          ? 'Bearer realm="jitgate"'
          : `Bearer realm="jitgate", error="${info.bearerError}", error_description="${info.message.replace(/"/g, "'")}"`
    return [code, { status: info.status, message: info.message, challenge }] as const
  }),
)

export function denyBody(code: DenyCode, requestId: string): string {
  const p = PREPARED.get(code) as { message: string }
  return JSON.stringify({ error: { code, message: p.message, request_id: requestId } })
}

export function writeDeny(res: ServerResponse, code: DenyCode, requestId: string): void {
  const p = PREPARED.get(code) as { status: number; challenge: string | undefined }
  const body = denyBody(code, requestId)
  const headers: Record<string, string | number> = {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(body),
    'cache-control': 'no-store',
    'x-request-id': requestId,
  }
  if (p.challenge) headers['www-authenticate'] = p.challenge
  if (p.status === 503) headers['retry-after'] = '1'
  res.writeHead(p.status, headers)
  res.end(body)
}

/** A denial on a raw upgrade socket: write a complete HTTP/1.1 response and close. */
export function writeDenyToSocket(socket: Duplex, code: DenyCode, requestId: string): void {
  const p = PREPARED.get(code) as { status: number; challenge: string | undefined }
  const body = denyBody(code, requestId)
  const lines = [
    `HTTP/1.1 ${p.status} ${STATUS_CODES[p.status] ?? ''}`,
    'content-type: application/json; charset=utf-8',
    `content-length: ${Buffer.byteLength(body)}`,
    'cache-control: no-store',
    `x-request-id: ${requestId}`,
    'connection: close',
  ]
  if (p.challenge) lines.push(`www-authenticate: ${p.challenge}`)
  if (!socket.destroyed && socket.writable) socket.end(`${lines.join('\r\n')}\r\n\r\n${body}`)
  else socket.destroy()
}

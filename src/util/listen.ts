/** `host:port` listen addresses; IPv6 hosts in brackets (`[::1]:8081`). */
export interface ListenAddress {
  readonly host: string
  readonly port: number
}

const LISTEN_RE = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/

export function parseListen(text: string): ListenAddress | undefined {
  const m = LISTEN_RE.exec(text)
  if (!m) return undefined
  const port = Number(m[3])
  if (port > 65535) return undefined
  return { host: (m[1] ?? m[2]) as string, port }
}

export function formatListen(addr: ListenAddress): string {
  return addr.host.includes(':') ? `[${addr.host}]:${addr.port}` : `${addr.host}:${addr.port}`
}

/** True for addresses only this machine can reach. */
export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host)
}

/**
 * The first key that occurs twice in one object of a JSON text, or undefined. `JSON.parse` keeps
 * the last of duplicate keys while other parsers (a WAF, a proxy, an auditor's tool) keep the
 * first: one body, two meanings. The control plane refuses such bodies outright.
 *
 * Call only on text `JSON.parse` accepted: this scanner trusts the syntax and only tracks strings,
 * nesting and key position. Keys are compared after unescaping (`"a"` and `"\u0061"` are one key).
 */
export function duplicateKey(text: string): string | undefined {
  const stack: (Set<string> | null)[] = []
  let expectKey = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22) {
      let j = i + 1
      while (j < text.length && text.charCodeAt(j) !== 0x22) j += text.charCodeAt(j) === 0x5c ? 2 : 1
      if (expectKey) {
        const key = JSON.parse(text.slice(i, j + 1)) as string
        const keys = stack[stack.length - 1] as Set<string>
        if (keys.has(key)) return key
        keys.add(key)
        expectKey = false
      }
      i = j
    } else if (c === 0x7b) {
      stack.push(new Set())
      expectKey = true
    } else if (c === 0x5b) {
      stack.push(null)
      expectKey = false
    } else if (c === 0x7d || c === 0x5d) {
      stack.pop()
      expectKey = false
    } else if (c === 0x2c) {
      expectKey = (stack[stack.length - 1] ?? null) !== null
    }
  }
  return undefined
}

/**
 * A small stand-in for the browser DOM, enough to run the console's own scripts under Node: it
 * builds the tree of the console's (well-formed, known) index.html, and implements the element
 * API the scripts use. It has no HTML parser for scripts to reach: `innerHTML` and friends throw.
 */

export class FakeText {
  parent: FakeElement | undefined
  constructor(readonly data: string) {}
  get textContent(): string {
    return this.data
  }
}

export interface FakeEvent {
  readonly type: string
  readonly submitter: { readonly value: string } | null
  defaultPrevented: boolean
  preventDefault(): void
}

type Node = FakeElement | FakeText

export class FakeElement {
  readonly children: Node[] = []
  readonly attributes = new Map<string, string>()
  readonly listeners = new Map<string, ((ev: FakeEvent) => void)[]>()
  parent: FakeElement | undefined
  value = ''
  checked = false
  disabled = false
  focused = false

  constructor(readonly tagName: string) {}

  get id(): string {
    return this.attributes.get('id') ?? ''
  }
  get hidden(): boolean {
    return this.attributes.has('hidden')
  }
  set hidden(v: boolean) {
    if (v) this.attributes.set('hidden', '')
    else this.attributes.delete('hidden')
  }
  setAttribute(name: string, value: string): void {
    this.attributes.set(name, String(value))
  }
  getAttribute(name: string): string | null {
    return this.attributes.get(name) ?? null
  }
  append(...nodes: (Node | string)[]): void {
    for (const n of nodes) {
      const node = typeof n === 'string' ? new FakeText(n) : n
      if (!(node instanceof FakeElement || node instanceof FakeText)) throw new Error(`append: not a node: ${String(n)}`)
      node.parent = this
      this.children.push(node)
    }
  }
  replaceChildren(...nodes: (Node | string)[]): void {
    this.children.length = 0
    this.append(...nodes)
  }
  addEventListener(type: string, fn: (ev: FakeEvent) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), fn])
  }
  /** Dispatches an event here and up the tree (bubbling), as a user action would. */
  dispatch(type: string, submitter: { value: string } | null = null): FakeEvent {
    const ev: FakeEvent = {
      type,
      submitter,
      defaultPrevented: false,
      preventDefault() {
        this.defaultPrevented = true
      },
    }
    for (let at: FakeElement | undefined = this; at !== undefined; at = at.parent) for (const fn of at.listeners.get(type) ?? []) fn(ev)
    return ev
  }
  click(): void {
    if (this.disabled) throw new Error('clicked a disabled button')
    this.dispatch('click')
  }
  focus(): void {
    this.focused = true
  }
  scrollIntoView(): void {}
  get textContent(): string {
    return this.children.map((c) => c.textContent).join('')
  }
  set innerHTML(_: string) {
    throw new Error('innerHTML must never be used')
  }
  set outerHTML(_: string) {
    throw new Error('outerHTML must never be used')
  }
  insertAdjacentHTML(): never {
    throw new Error('insertAdjacentHTML must never be used')
  }
  /** Every element below (and including) this one. */
  all(): FakeElement[] {
    return [this, ...this.children.flatMap((c) => (c instanceof FakeElement ? c.all() : []))]
  }
  /** The text nodes below, in order. */
  texts(): string[] {
    return this.children.flatMap((c) => (c instanceof FakeElement ? c.texts() : [c.data]))
  }
  /** `tag`, `.class`, `#id` or `tag[attr=value]`: all the scripts and tests need. */
  querySelectorAll(selector: string): FakeElement[] {
    return this.all().filter((e) => e !== this && matches(e, selector))
  }
  querySelector(selector: string): FakeElement | null {
    return this.querySelectorAll(selector)[0] ?? null
  }
  /** A form's controls by name; a radio group answers with the checked one's value. */
  get elements(): { namedItem(name: string): { value: string } | null } {
    return {
      namedItem: (name) => {
        const controls = this.all().filter((e) => e.attributes.get('name') === name)
        if (controls.length === 0) return null
        if (controls.every((c) => c.attributes.get('type') === 'radio')) return { value: controls.find((c) => c.checked)?.attributes.get('value') ?? '' }
        return controls[0] as FakeElement
      },
    }
  }
}

function matches(e: FakeElement, selector: string): boolean {
  if (selector.startsWith('.')) return (e.attributes.get('class') ?? '').split(/\s+/).includes(selector.slice(1))
  if (selector.startsWith('#')) return e.id === selector.slice(1)
  const m = /^([a-z0-9]+)(?:\[([a-z-]+)=([a-z0-9_-]+)\])?$/.exec(selector)
  if (!m) throw new Error(`selector not supported: ${selector}`)
  return e.tagName === m[1] && (m[2] === undefined || e.attributes.get(m[2]) === m[3])
}

const VOID = new Set(['meta', 'link', 'input', 'br', 'img', 'hr'])

export class FakeDocument {
  readonly root = new FakeElement('#document')
  /** Every tag ever created by a script (createElement). */
  readonly created: string[] = []

  constructor(html: string) {
    let at = this.root
    const token = /<!--[\s\S]*?-->|<!doctype[^>]*>|<\/([a-z0-9]+)\s*>|<([a-z0-9]+)((?:\s+[a-z-]+(?:="[^"]*")?)*)\s*>|([^<]+)/gi
    for (const m of html.matchAll(token)) {
      if (m[1] !== undefined) {
        if (at.tagName !== m[1]) throw new Error(`</${m[1]}> closes <${at.tagName}>`)
        at = at.parent as FakeElement
      } else if (m[2] !== undefined) {
        const e = new FakeElement(m[2].toLowerCase())
        for (const a of (m[3] ?? '').matchAll(/([a-z-]+)(?:="([^"]*)")?/g)) e.attributes.set(a[1] as string, a[2] ?? '')
        if (e.tagName === 'input') e.checked = e.attributes.has('checked')
        at.append(e)
        if (!VOID.has(e.tagName)) at = e
      } else if (m[4] !== undefined && m[4].trim() !== '') {
        at.append(m[4])
      }
    }
    if (at !== this.root) throw new Error(`<${at.tagName}> is never closed`)
  }

  getElementById(id: string): FakeElement | null {
    return this.root.all().find((e) => e.id === id) ?? null
  }
  querySelectorAll(selector: string): FakeElement[] {
    return this.root.querySelectorAll(selector)
  }
  querySelector(selector: string): FakeElement | null {
    return this.root.querySelector(selector)
  }
  createElement(tag: string): FakeElement {
    this.created.push(tag)
    return new FakeElement(tag)
  }
  createTextNode(text: string): FakeText {
    return new FakeText(text)
  }
}

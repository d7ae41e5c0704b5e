/** Types of views.js for the TypeScript side (tests); views.js is what the browser runs. */

/** The part of the DOM the views use: a test can pass a small stand-in. */
export interface ViewNode {
  setAttribute(name: string, value: string): void
  append(...nodes: unknown[]): void
  addEventListener(type: string, listener: () => void): void
}
export interface ViewDocument {
  createElement(tag: string): ViewNode
  createTextNode(text: string): unknown
}

export declare function el(doc: ViewDocument, tag: string, attrs?: Record<string, unknown> | null, ...children: unknown[]): ViewNode
export declare function formatDuration(seconds: number): string
export declare function formatAge(iso: string, nowMs: number): string
export declare function formatRemaining(iso: string, nowMs: number): string
export declare function stageProgress(r: object): { done: number; total: number; current?: { index: number; group: string; have: number; need: number } }
export declare function formatProgress(r: object): string
export declare function pendingTable(doc: ViewDocument, requests: readonly object[], nowMs: number, handlers: { onOpen(id: string): void }): ViewNode
export declare function requestDetail(doc: ViewDocument, r: object, nowMs: number): ViewNode
export declare function grantsTable(doc: ViewDocument, grants: readonly object[], nowMs: number, handlers: { onRevoke(grant: any): void; onOpenRequest?(id: string): void }): ViewNode
export declare function errorView(doc: ViewDocument, err: { code?: string; message?: string; status?: number; requestId?: string; details?: readonly string[] }): ViewNode

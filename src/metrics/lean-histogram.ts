/**
 * A Prometheus histogram with one label, for the data plane's per-request observations.
 *
 * prom-client's Histogram validates and hashes a label object on every `observe`. Here a label
 * value is resolved to its child once (`child('allow')`, or the first observation of a resource
 * id), and an observation is a bucket search and three additions. The registry reads it at scrape
 * time through `get()`, in the same shape as prom-client's own histograms, so `/metrics` shows
 * no difference.
 */
import type { Metric, Registry } from 'prom-client'

/** One sample as prom-client's registry prints it. */
interface Sample {
  readonly metricName: string
  readonly labels: Readonly<Record<string, string | number>>
  readonly value: number
}

/** What the registry reads at scrape time (prom-client's MetricObjectWithValues). */
export interface HistogramSnapshot {
  readonly name: string
  readonly help: string
  readonly type: 'histogram'
  readonly aggregator: 'sum'
  readonly values: readonly Sample[]
}

export interface HistogramChild {
  /** Records one value (seconds). */
  observe(value: number): void
}

class Child implements HistogramChild {
  /** Per bucket, not cumulative; the last one is +Inf. */
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor(private readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe(value: number): void {
    if (!Number.isFinite(value)) return
    const bounds = this.bounds
    let i = 0
    while (i < bounds.length && value > (bounds[i] as number)) i++
    ;(this.counts[i] as number)++
    this.sum += value
    this.count++
  }
}

export interface LeanHistogramOptions<L extends string> {
  readonly name: string
  readonly help: string
  readonly labelName: L
  /** Upper bounds in ascending order (`+Inf` is implied). */
  readonly buckets: readonly number[]
  readonly registers: readonly Registry[]
}

export class LeanHistogram<L extends string> {
  readonly name: string
  readonly help: string
  readonly type = 'histogram' as const
  readonly aggregator = 'sum' as const
  readonly labelName: L
  private readonly bounds: readonly number[]
  private readonly children = new Map<string, Child>()

  constructor(opts: LeanHistogramOptions<L>) {
    for (let i = 1; i < opts.buckets.length; i++) {
      if (!((opts.buckets[i] as number) > (opts.buckets[i - 1] as number))) throw new RangeError(`${opts.name}: buckets must ascend`)
    }
    this.name = opts.name
    this.help = opts.help
    this.labelName = opts.labelName
    this.bounds = Object.freeze([...opts.buckets])
    // prom-client's registry only needs name, help, type, aggregator, get() and reset().
    for (const registry of opts.registers) registry.registerMetric(this as unknown as Metric)
  }

  /** The child for one label value: resolve it once and keep it where the value is fixed. */
  child(labelValue: string): HistogramChild {
    let child = this.children.get(labelValue)
    if (child === undefined) {
      child = new Child(this.bounds)
      this.children.set(labelValue, child)
    }
    return child
  }

  /** Records one value under a label value (one Map lookup). */
  observe(labelValue: string, value: number): void {
    this.child(labelValue).observe(value)
  }

  reset(): void {
    this.children.clear()
  }

  async get(): Promise<HistogramSnapshot> {
    const values: Sample[] = []
    for (const [labelValue, child] of this.children) {
      let cumulative = 0
      for (let i = 0; i <= this.bounds.length; i++) {
        cumulative += child.counts[i] as number
        const le = i < this.bounds.length ? (this.bounds[i] as number) : '+Inf'
        values.push({ metricName: `${this.name}_bucket`, labels: { le, [this.labelName]: labelValue }, value: cumulative })
      }
      values.push({ metricName: `${this.name}_sum`, labels: { [this.labelName]: labelValue }, value: child.sum })
      values.push({ metricName: `${this.name}_count`, labels: { [this.labelName]: labelValue }, value: child.count })
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values }
  }
}

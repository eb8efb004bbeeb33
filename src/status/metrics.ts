/**
 * @module status/metrics — a small metrics registry (counters, gauges, histograms with fixed
 * buckets) and the Prometheus text exposition format (version 0.0.4) it renders to.
 * Conventions (docs/status.md "Metrics"): names `dstd_<area>_<what>_<unit>`, base units
 * (seconds, bytes), counters end in `_total`, every family has HELP and TYPE.
 *
 * Bounded by construction: a family holds at most `maxSeries` label combinations; a label
 * may name its allowed values (anything else is recorded as "other"); a label value over 128
 * characters keeps its first 115 and a hash of the whole value (`labelValue`), so two export
 * names (up to 4096 bytes, docs/config.md) that share a long start stay two series. A
 * combination past the bound lands in one overflow series whose labels all read "overflow",
 * and `dstd_metrics_series_dropped_total` counts it, as it counts a sample that would repeat
 * a series already rendered (two values shortened alike), so no peer (and no bug) can grow a
 * scrape without bound, and none disappears or merges unnoticed. Names and label names are our own code's:
 * a bad one is an assertion, not a runtime error.
 *
 * Two kinds of families: owned ones hold values that code updates (`inc`, `set`,
 * `observe`); collected ones read values at scrape time from whoever owns them (service
 * counters), so nothing is copied on the data path.
 */
import { createHash } from "node:crypto";
import { assert } from "../lib/assert.ts";

export type MetricType = "counter" | "gauge" | "histogram";
export type Labels = Readonly<Record<string, string>>;

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
export const LABEL_VALUE_MAX = 128;
/** Hex digits of SHA-256 ending a shortened label value: 48 bits, so two names collide by chance about once in 2^24 pairs. */
const LABEL_HASH_CHARS = 12;
export const DEFAULT_MAX_SERIES = 64;
const OVERFLOW = "overflow";
const OTHER = "other";

/** Seconds: 100 µs .. 10 s, the range a block request lives in (LAN to stalled WAN). */
export const LATENCY_BUCKETS: readonly number[] = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

export interface FamilyOptions {
  name: string;
  help: string;
  labels?: readonly string[];
  /** Allowed values per label; others are recorded as "other". */
  values?: Readonly<Record<string, readonly string[]>>;
  maxSeries?: number;
}

export interface HistogramOptions extends FamilyOptions {
  /** Upper bounds, strictly increasing, finite; +Inf is implied. */
  buckets: readonly number[];
}

/** Prometheus float formatting: NaN, +Inf, -Inf, else the shortest round-trip decimal. */
export function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  return String(value);
}

/** HELP text escaping: backslash and newline. */
export function escapeHelp(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n");
}

/** Label value escaping: backslash, double quote, newline. */
export function escapeLabelValue(text: string): string {
  return text.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

/** Shortened values already computed (the request path asks for the same few on every request). */
const shortened = new Map<string, string>();

/**
 * A label value as recorded: itself up to LABEL_VALUE_MAX characters; a longer one is cut to
 * LABEL_VALUE_MAX - 13 characters (not inside a UTF-16 surrogate pair) followed by "~" and
 * LABEL_HASH_CHARS hex digits of the SHA-256 of the whole value: still LABEL_VALUE_MAX long,
 * and distinct for distinct values but by a hash collision.
 */
export function labelValue(given: string): string {
  if (given.length <= LABEL_VALUE_MAX) return given;
  const known = shortened.get(given);
  if (known !== undefined) return known;
  let keep = LABEL_VALUE_MAX - LABEL_HASH_CHARS - 1;
  const last = given.charCodeAt(keep - 1);
  if (last >= 0xd800 && last <= 0xdbff) keep--; // a high surrogate: keep the pair whole
  const value = `${given.slice(0, keep)}~${createHash("sha256").update(given).digest("hex").slice(0, LABEL_HASH_CHARS)}`;
  if (shortened.size >= 1024) shortened.clear();
  shortened.set(given, value);
  return value;
}

function renderLabels(names: readonly string[], values: readonly string[], extra?: [string, string]): string {
  const parts = names.map((name, i) => `${name}="${escapeLabelValue(values[i]!)}"`);
  if (extra) parts.push(`${extra[0]}="${escapeLabelValue(extra[1])}"`);
  return parts.length === 0 ? "" : `{${parts.join(",")}}`;
}

function checkFamily(options: FamilyOptions, type: MetricType): void {
  const { name } = options;
  assert(NAME.test(name), `metric name '${name}' is not a Prometheus name`);
  assert(!name.startsWith("__"), `metric name '${name}' is reserved`);
  if (type === "counter") assert(name.endsWith("_total"), `counter '${name}' must end in _total`);
  else assert(!/_(total|bucket|count|sum)$/.test(name), `${type} '${name}' must not end in _total/_bucket/_count/_sum`);
  assert(options.help.trim().length > 0, `metric '${name}' needs HELP text`);
  const labels = options.labels ?? [];
  assert(new Set(labels).size === labels.length, `metric '${name}' repeats a label`);
  for (const label of labels) {
    assert(LABEL.test(label) && !label.startsWith("__"), `metric '${name}': bad label name '${label}'`);
    assert(!(type === "histogram" && label === "le"), `histogram '${name}' may not use the label 'le'`);
  }
  for (const label of Object.keys(options.values ?? {})) {
    assert(labels.includes(label), `metric '${name}': values given for unknown label '${label}'`);
  }
  assert((options.maxSeries ?? DEFAULT_MAX_SERIES) >= 1, `metric '${name}': maxSeries must be at least 1`);
}

/** Series storage shared by owned families: bounded map from label values to a child. */
abstract class OwnedFamily<Child> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly string[];
  abstract readonly type: MetricType;
  /** Keyed by the values as given (`full`); `values`: as rendered (labelValue shortens long ones). */
  protected readonly children = new Map<string, { values: string[]; full: string; child: Child }>();
  /** Rendered keys in use: a value shortened like another (a hash collision) must not render twice. */
  private readonly shown = new Set<string>();
  private overflow: { values: string[]; full: string; child: Child } | null = null;
  dropped = 0;

  constructor(protected readonly options: FamilyOptions) {
    this.name = options.name;
    this.help = options.help;
    this.labelNames = options.labels ?? [];
    if (this.labelNames.length === 0) this.labels({});
  }

  protected abstract make(): Child;

  /** The series for these label values (created on first use, within the bound). */
  labels(labels: Labels = {}): Child {
    const full = this.given(labels).join("\u0000");
    const found = this.children.get(full);
    if (found !== undefined) return found.child; // the per-request path: one join, one lookup
    const values = this.given(labels).map(labelValue);
    const shown = values.join("\u0000");
    if (this.shown.has(shown) || this.children.size >= (this.options.maxSeries ?? DEFAULT_MAX_SERIES)) {
      this.dropped++;
      this.overflow ??= { values: this.labelNames.map(() => OVERFLOW), full: "", child: this.make() };
      return this.overflow.child;
    }
    const entry = { values, full, child: this.make() };
    this.children.set(full, entry);
    this.shown.add(shown);
    return entry.child;
  }

  /** Forget one series (a service that was removed). */
  remove(labels: Labels): void {
    const full = this.given(labels).join("\u0000");
    const entry = this.children.get(full);
    if (entry === undefined) return;
    this.children.delete(full);
    this.shown.delete(entry.values.join("\u0000"));
  }

  /** The label values as given, but "other" for one outside its label's value set. */
  private given(labels: Labels): string[] {
    return this.labelNames.map((name) => {
      const given = labels[name];
      assert(given !== undefined, `metric '${this.name}': label '${name}' missing`);
      const allowed = this.options.values?.[name];
      return allowed !== undefined && !allowed.includes(given) ? OTHER : given;
    });
  }

  protected series(): Array<{ values: string[]; full: string; child: Child }> {
    const list = [...this.children.values()];
    if (this.overflow !== null) list.push(this.overflow);
    return list;
  }

  abstract renderSamples(out: string[]): void;
}

export class Counter {
  value = 0;
  inc(amount = 1): void {
    assert(amount >= 0 && Number.isFinite(amount), `counter increment ${amount} must be finite and non-negative`);
    this.value += amount;
  }
}

export class CounterFamily extends OwnedFamily<Counter> {
  readonly type = "counter";
  protected make(): Counter {
    return new Counter();
  }
  renderSamples(out: string[]): void {
    for (const { values, child } of this.series()) out.push(`${this.name}${renderLabels(this.labelNames, values)} ${formatValue(child.value)}`);
  }
}

export class Gauge {
  value = 0;
  set(value: number): void {
    this.value = value;
  }
  inc(amount = 1): void {
    this.value += amount;
  }
  dec(amount = 1): void {
    this.value -= amount;
  }
}

export class GaugeFamily extends OwnedFamily<Gauge> {
  readonly type = "gauge";
  protected make(): Gauge {
    return new Gauge();
  }
  renderSamples(out: string[]): void {
    for (const { values, child } of this.series()) out.push(`${this.name}${renderLabels(this.labelNames, values)} ${formatValue(child.value)}`);
  }
}

export class Histogram {
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  readonly counts: number[];
  sum = 0;
  count = 0;
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array(bounds.length + 1).fill(0);
  }
  observe(value: number): void {
    if (Number.isNaN(value)) return;
    let i = 0;
    while (i < this.bounds.length && value > this.bounds[i]!) i++;
    this.counts[i]!++;
    this.sum += value;
    this.count++;
  }
}

export class HistogramFamily extends OwnedFamily<Histogram> {
  readonly type = "histogram";
  readonly buckets: readonly number[];
  constructor(options: HistogramOptions) {
    const buckets = [...options.buckets];
    assert(buckets.length > 0, `histogram '${options.name}' needs buckets`);
    for (let i = 0; i < buckets.length; i++) {
      assert(Number.isFinite(buckets[i]!), `histogram '${options.name}': bucket ${buckets[i]} is not finite (+Inf is implied)`);
      assert(i === 0 || buckets[i]! > buckets[i - 1]!, `histogram '${options.name}': buckets must increase`);
    }
    super({ ...options, labels: options.labels ?? [] }); // make() below needs this.buckets: set before the first child
    this.buckets = buckets;
  }
  protected make(): Histogram {
    return new Histogram(this.buckets ?? (this.options as HistogramOptions).buckets);
  }
  renderSamples(out: string[]): void {
    for (const { values, child } of this.series()) {
      let cumulative = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        cumulative += child.counts[i]!;
        const le = i < this.buckets.length ? formatValue(this.buckets[i]!) : "+Inf";
        out.push(`${this.name}_bucket${renderLabels(this.labelNames, values, ["le", le])} ${cumulative}`);
      }
      out.push(`${this.name}_sum${renderLabels(this.labelNames, values)} ${formatValue(child.sum)}`);
      out.push(`${this.name}_count${renderLabels(this.labelNames, values)} ${child.count}`);
    }
  }
}

/** Receives one sample of a collected family. */
export type Emit = (labels: Labels, value: number) => void;

class CollectedFamily {
  readonly labelNames: readonly string[];
  dropped = 0;
  constructor(
    readonly type: "counter" | "gauge",
    readonly options: FamilyOptions,
    private readonly collect: (emit: Emit) => void,
  ) {
    this.labelNames = options.labels ?? [];
  }
  get name(): string {
    return this.options.name;
  }
  get help(): string {
    return this.options.help;
  }
  renderSamples(out: string[]): void {
    const max = this.options.maxSeries ?? DEFAULT_MAX_SERIES;
    const seen = new Set<string>();
    this.collect((labels, value) => {
      const values = this.labelNames.map((name) => {
        const given = labels[name] ?? "";
        const allowed = this.options.values?.[name];
        return labelValue(allowed !== undefined && !allowed.includes(given) ? OTHER : given);
      });
      const key = values.join("\u0000");
      // One sample per series: a second one (two values shortened alike, or the collector's
      // slip) is dropped, and counted like any other.
      if (seen.has(key) || seen.size >= max) {
        this.dropped++;
        return;
      }
      seen.add(key);
      out.push(`${this.name}${renderLabels(this.labelNames, values)} ${formatValue(value)}`);
    });
  }
}

type AnyFamily = CounterFamily | GaugeFamily | HistogramFamily | CollectedFamily;

export class Registry {
  private readonly families: AnyFamily[] = [];
  private readonly names = new Set<string>(["dstd_metrics_series_dropped_total"]);
  /** Rendered last, so it includes what the other families dropped in this very render. */
  private readonly dropped = new CollectedFamily(
    "counter",
    {
      name: "dstd_metrics_series_dropped_total",
      help: "Samples not recorded because their family had reached its series bound (owned families: per update; collected ones: per scrape).",
      labels: ["family"],
      maxSeries: 1024,
    },
    (emit) => {
      for (const family of this.families) if (family.dropped > 0) emit({ family: family.name }, family.dropped);
    },
  );

  counter(options: FamilyOptions): CounterFamily {
    return this.add(new CounterFamily(this.check(options, "counter")));
  }

  gauge(options: FamilyOptions): GaugeFamily {
    return this.add(new GaugeFamily(this.check(options, "gauge")));
  }

  histogram(options: HistogramOptions): HistogramFamily {
    return this.add(new HistogramFamily(this.check(options, "histogram")));
  }

  /** A family whose samples are read from their owner at every render. */
  collected(type: "counter" | "gauge", options: FamilyOptions, collect: (emit: Emit) => void): void {
    this.add(new CollectedFamily(type, this.check(options, type), collect));
  }

  /** The whole registry in Prometheus text format 0.0.4 (ends with a newline). */
  render(): string {
    const out: string[] = [];
    for (const family of [...this.families, this.dropped]) {
      out.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
      out.push(`# TYPE ${family.name} ${family.type}`);
      family.renderSamples(out);
    }
    return `${out.join("\n")}\n`;
  }

  private check<T extends FamilyOptions>(options: T, type: MetricType): T {
    checkFamily(options, type);
    assert(!this.names.has(options.name), `metric '${options.name}' registered twice`);
    this.names.add(options.name);
    return options;
  }

  private add<F extends AnyFamily>(family: F): F {
    this.families.push(family);
    return family;
  }
}

/** Content-Type of the text format. */
export const TEXT_FORMAT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

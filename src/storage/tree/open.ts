/**
 * @module storage/tree/open — opens a configured storage tree (config/types.ts TreeNodeSpec) into one
 * StoragePort: local leaves through storage/open.ts, remote leaves through
 * storage/remote/remote-port.ts, Ceph RBD leaves through storage/rbd/open.ts, inner nodes as LinearPort, StripePort and mirrors. The
 * composition root of the tree; the layers themselves stay pure logic.
 *
 * A mirror leg that cannot be opened (a remote export that is down) is handed to the mirror
 * as absent, with a way to open it again: the mirror starts degraded if its metadata allows
 * and keeps trying (mirror/leg-health.ts probes). A linear or stripe leg that cannot be opened fails the
 * whole node (it holds data nothing else has). On failure everything opened is closed again.
 */
import { randomBytes } from "node:crypto";
import { formatExportUrl } from "../../lib/address.ts";
import { DstdError, errorMessage } from "../../lib/errors.ts";
import { loadKeyFile } from "../../crypto/keys.ts";
import { openBackend } from "../open.ts";
import { createLocalPort } from "../local/port.ts";
import type { StoragePort } from "../port.ts";
import { openRemotePort } from "../remote/remote-port.ts";
import { describeRbd, openRbdPort } from "../rbd/open.ts";
import type { TreeClock } from "./clock.ts";
import type { LayoutRecords } from "./layout-book.ts";
import { LinearPort } from "./linear.ts";
import { bindingRecord, checkStripe, legAt, placeLegs, REPLACED_UNDER_MIRROR, stripeShrunk, type LayoutEntry, type NodeLayout } from "./tree-layout.ts";
import type { TreeLeg } from "./legs.ts";
import { openMirror, type MirrorOptions } from "./mirror/mirror.ts";
import type { TreeLegSpec, TreeNodeSpec } from "../../config/types.ts";
import { StripePort } from "./stripe.ts";
import { systemClock } from "./system-clock.ts";

export interface TreeLog {
  info(message: string): void;
  warn(message: string): void;
  debug?(message: string): void;
}

export interface OpenTreeOptions {
  log: TreeLog;
  /** Take the export lock on local files and devices (storage/local/lock.ts). */
  lock?: boolean;
  clock?: TreeClock;
  /** Mirror settings beyond the spec (tests, benchmarks): probe interval, resync window, layout. */
  mirror?: Partial<Omit<MirrorOptions, "clock" | "randomId" | "log">>;
  /**
   * This node is a leg of a mirror or a stripe: a file leg larger than its `size` is one
   * `dstd resize` grew (mirror/grow.ts, stripe.ts) and is opened at its size. Set by the
   * mirror and stripe cases for their own legs only: a linear's leg places the legs after it.
   */
  grown?: boolean;
  /**
   * The export's layout record (storage/tree/layout-book.ts), or none: without one a linear
   * node places its legs by their sizes now, and says so (docs/tree.md "The layout record").
   */
  layout?: LayoutRecords | null;
  /** Where this node sits in the export's tree, the record's key: "" the root, "1.0" leg 0 of the root's leg 1. */
  at?: string;
  /**
   * This node is inside leg `mirrorLeg` of a mirror, opened by the mirror itself (at its start
   * or a probe): a disk of a linear or stripe node in it replaced while the export was stopped
   * is refused (replaceUnderMirror). Not set by a reload that replaces the mirror leg whole.
   */
  mirrorLeg?: string;
  /** The epochs of this process's DST exports: a remote leg answering with one is refused (storage/remote/remote-port.ts). */
  localEpochs?: ReadonlySet<number>;
}

/**
 * Disks replaced (by name) in a linear or stripe node inside a mirror leg while the export
 * was stopped: the mirror finds its metadata on the leg's first disk and would take the leg as
 * holding its data, blank replacement and all, and serve reads from it. Refused, saying how to
 * replace a disk there (docs/tree.md "The layout record").
 */
function replaceUnderMirror(where: string, replaced: readonly string[], options: OpenTreeOptions): void {
  if (replaced.length === 0) return;
  if (options.mirrorLeg === undefined) {
    for (const line of replaced) options.log.info(`${where}: ${line}: taken as a replacement holding the same data`);
    return;
  }
  throw new DstdError("E_CONFIG", `${where}, in mirror leg ${options.mirrorLeg}: ${replaced.join("; ")}: ${REPLACED_UNDER_MIRROR}`);
}

/** The label a leg is shown with when the configuration gives none. */
export function defaultLabel(node: TreeNodeSpec): string {
  switch (node.kind) {
    case "remote":
      return formatExportUrl(node.url);
    case "file":
    case "device":
      return node.path;
    case "memory":
      return `memory:${node.sizeBytes}`;
    case "rbd":
      return describeRbd(node.rbd);
    default:
      return `${node.kind}(${node.legs.map((leg) => leg.label).join(", ")})`;
  }
}

export async function openTree(spec: TreeNodeSpec, options: OpenTreeOptions): Promise<StoragePort> {
  const clock = options.clock ?? systemClock;
  const log = options.log;
  const at = options.at ?? "";
  switch (spec.kind) {
    case "file":
    case "device":
    case "memory": {
      const backend = openBackend(
        spec.kind === "memory" ? { kind: "memory", size: spec.sizeBytes } : spec.kind === "file" ? { kind: "file", path: spec.path, size: spec.sizeBytes ?? undefined } : { kind: "device", path: spec.path },
        false,
        { lock: options.lock === true, grown: options.grown === true },
      );
      return createLocalPort(backend, { description: backend.description, log });
    }
    case "rbd":
      // A leg like any other: its own cluster connection and image handle (docs/rbd.md "As a tree leg").
      return openRbdPort(spec.rbd, { readOnly: false, log });
    case "remote": {
      const where = formatExportUrl(spec.url);
      const r = spec.reliability;
      return openRemotePort({
        url: spec.url,
        engine: {
          ...r,
          inflight: r.inflightMax,
          checksums: spec.checksums,
          auth: spec.keyFile !== null ? { key: loadKeyFile(spec.keyFile), suites: spec.suites } : null,
        },
        log: { info: (m) => log.info(`leg ${where}: ${m}`), warn: (m) => log.warn(`leg ${where}: ${m}`), debug: (m) => log.debug?.(`leg ${where}: ${m}`) },
        onStateChange: (state, detail) => (state === "ready" ? log.info : log.debug ?? log.info)(`leg ${where}: link ${state}: ${detail}`),
        localEpochs: options.localEpochs,
      });
    }
    case "linear":
    case "stripe": {
      // Checked against the layout record before any leg is opened (docs/tree.md "The layout
      // record"). A linear leg's size places the data of the legs after it: until its layout is
      // recorded, files must be the size configured, except the last (dstd resize grows it;
      // nothing follows it); once it is, the record places them (openLinear). A stripe's
      // mapping does not depend on its legs' sizes: one grown by dstd resize opens at its size
      // (the stripe serves as many rows as its smallest leg holds).
      const where = at === "" ? `the ${spec.kind} root` : `the ${spec.kind} node at ${at}`;
      const recorded = recordedLayout(spec, where, options);
      const labels = spec.legs.map((leg) => leg.label);
      if (spec.kind === "stripe" && options.layout == null) {
        log.warn(`${where}: its layout is not recorded (no state directory): a change of its chunk or of its legs' number or order would scramble its data unnoticed (docs/tree.md "The layout record")`);
      }
      if (spec.kind === "stripe" && options.layout != null) {
        const fits = checkStripe(labels, spec.chunkBytes, recorded?.kind === "stripe" ? recorded : null);
        if ("problem" in fits) throw new DstdError("E_CONFIG", `${where}: ${fits.problem} (layout record ${options.layout.path})`);
        replaceUnderMirror(where, fits.replaced, options);
      }
      const last = spec.legs.length - 1;
      const placed = spec.kind === "stripe" || recorded !== null;
      const ports = await openAll(spec.legs, (i) => ({ ...options, at: legAt(at, i), grown: placed || i === last }));
      const legs = ports.map((port, i) => ({ port, label: labels[i]! }));
      try {
        if (spec.kind === "linear") return openLinear(legs, at, where, recorded?.kind === "linear" ? recorded.legs : null, options);
        const book = options.layout ?? null;
        const stripeRecord = (bytes: number) => book?.set(at, { kind: "stripe", chunkBytes: spec.chunkBytes, legs: labels, bytes });
        const stripe = new StripePort(legs, spec.chunkBytes, { record: stripeRecord });
        const shrunk = stripeShrunk(labels, ports.map((port) => port.size), stripe.size, recorded?.kind === "stripe" ? recorded : null);
        if (shrunk !== null) throw new DstdError("E_CONFIG", `${where}: ${shrunk} (layout record ${book?.path})`);
        stripeRecord(stripe.size);
        return stripe;
      } catch (error) {
        await Promise.allSettled(ports.map((p) => p.close()));
        throw error;
      }
    }
    case "mirror": {
      const legOptions = (i: number) => ({ ...options, at: legAt(at, i), grown: true, mirrorLeg: spec.legs[i]!.label });
      const opened = await Promise.allSettled(spec.legs.map((leg, i) => openTree(leg.node, legOptions(i))));
      const legs = opened.map((result, i) => {
        const leg = spec.legs[i]!;
        if (result.status === "rejected") log.warn(`mirror leg ${leg.label} cannot be opened (${errorMessage(result.reason)}); the mirror will keep trying`);
        return {
          label: leg.label,
          writeMostly: leg.writeMostly,
          port: result.status === "fulfilled" ? result.value : null,
          open: () => openTree(leg.node, legOptions(i)),
        };
      });
      try {
        return await openMirror(legs, {
          ...options.mirror,
          clock,
          randomId: () => new Uint8Array(randomBytes(16)),
          log,
          readPolicy: spec.readPolicy,
          assumeClean: spec.assumeClean,
        });
      } catch (error) {
        await Promise.allSettled(legs.map((leg) => leg.port?.close()));
        throw error;
      }
    }
  }
}

/**
 * What the layout record holds for the linear or stripe node `spec` at `options.at`, or null
 * (storage/tree/tree-layout.ts bindingRecord). Throws DstdError when the same legs were laid
 * out by another kind of node (restructured: every byte would move).
 */
function recordedLayout(spec: { kind: "linear" | "stripe"; legs: readonly TreeLegSpec[] }, where: string, options: OpenTreeOptions): NodeLayout | null {
  const book = options.layout ?? null;
  if (book === null) return null;
  const bound = bindingRecord(
    spec.kind,
    spec.legs.map((leg) => leg.label),
    book.get(options.at ?? ""),
  );
  if ("problem" in bound) throw new DstdError("E_CONFIG", `${where}: ${bound.problem} (layout record ${book.path})`);
  if (bound.note !== undefined) options.log.info(`${where}: ${bound.note}`);
  return bound.record;
}

/**
 * A linear node placed by its layout record (storage/tree/tree-layout.ts), which it records
 * again before serving; without a record, by its legs' sizes now. Throws DstdError when the
 * record refuses the legs or cannot be written.
 */
function openLinear(legs: TreeLeg[], at: string, where: string, recorded: LayoutEntry[] | null, options: OpenTreeOptions): LinearPort {
  const book = options.layout ?? null;
  if (book === null) {
    if (legs.length > 1) options.log.warn(`${where}: its layout is not recorded (no state directory): a leg other than the last that grows while the export is stopped would move every byte after it (docs/tree.md "The layout record")`);
    return new LinearPort(legs);
  }
  const placement = placeLegs(
    legs.map((leg) => ({ label: leg.label, size: leg.port.size })),
    LinearPort.unitOf(legs),
    recorded,
  );
  if ("problem" in placement) throw new DstdError("E_CONFIG", `${where}: ${placement.problem} (layout record ${book.path})`);
  for (const note of placement.notes) options.log.info(`${where}: ${note}`);
  replaceUnderMirror(where, placement.replaced, options);
  const port = new LinearPort(legs, { lengths: placement.lengths, record: (layout) => book.set(at, { kind: "linear", legs: layout }) });
  book.set(at, { kind: "linear", legs: port.layout() });
  return port;
}

/** Open every leg; if one fails, close the others and rethrow. */
async function openAll(legs: readonly TreeLegSpec[], options: (index: number) => OpenTreeOptions): Promise<StoragePort[]> {
  const results = await Promise.allSettled(legs.map((leg, i) => openTree(leg.node, options(i))));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed === undefined) return results.map((r) => (r as PromiseFulfilledResult<StoragePort>).value);
  await Promise.allSettled(results.map((r) => (r.status === "fulfilled" ? r.value.close() : undefined)));
  throw failed.reason;
}

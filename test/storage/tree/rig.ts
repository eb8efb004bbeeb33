/**
 * @module test/storage/tree/rig — a small world for hand-written tree scenarios: SimStore legs
 * on a SimClock (sim-leg.ts), a mirror (or any port) over them, and promise helpers that run
 * simulated time until an operation settles. Test tooling only.
 */
import { Prng } from "../../../src/lib/prng.ts";
import { PassThrough } from "../../../src/storage/layers/pass-through.ts";
import type { StoragePort } from "../../../src/storage/port.ts";
import { SUPERBLOCK_AREA } from "../../../src/storage/tree/mirror/layout.ts";
import { call } from "../../../src/storage/port.ts";
import { MirrorPort, openMirror, type MirrorOptions } from "../../../src/storage/tree/mirror/mirror.ts";
import { SimClock } from "../../sim/sim-clock.ts";
import { SimStore, treeClock } from "./sim-leg.ts";
import { SIM_META_BYTES } from "./topology.ts";

let rigs = 0;

export class Rig {
  readonly clock = new SimClock(1);
  readonly tclock = treeClock(this.clock);
  /** Seeded per rig: two rigs' mirrors get different identities. */
  readonly prng = new Prng(7 + rigs++);
  readonly stores: SimStore[] = [];
  readonly logs: string[] = [];
  readonly log = {
    info: (m: string) => void this.logs.push(`INFO ${m}`),
    warn: (m: string) => void this.logs.push(`WARN ${m}`),
  };

  /** A leg of `size` bytes with this budget and a fixed 2–4 ms latency. */
  store(size: number, budgetMs = 1000, name = `L${this.stores.length}`): SimStore {
    const store = new SimStore(name, size, this.clock, new Prng(this.stores.length + 1), { budgetMs, latencyMinMs: 2, latencySpreadMs: 2 });
    this.stores.push(store);
    return store;
  }

  /** Run simulated time until `promise` settles (at most `limitMs`). */
  async settle<T>(promise: Promise<T>, limitMs = 600_000): Promise<T> {
    let done = false;
    let value: T | undefined;
    let error: unknown = null;
    promise.then(
      (v) => {
        done = true;
        value = v;
      },
      (e: unknown) => {
        done = true;
        error = e;
      },
    );
    const end = this.clock.now + limitMs;
    while (!done) {
      for (let i = 0; i < 8; i++) await undefined;
      if (done) break;
      if (this.clock.now >= end) throw new Error(`not settled after ${limitMs} simulated ms`);
      this.clock.runUntil(this.clock.ticks + 1);
    }
    if (error !== null) throw error;
    return value as T;
  }

  /** Run simulated time for `ms`. */
  run(ms: number): void {
    this.clock.runUntil(this.clock.ticks + ms);
  }

  /** Run until `condition()` (checked every ms), at most `limitMs`. */
  async until(condition: () => boolean, what: string, limitMs = 600_000): Promise<void> {
    const end = this.clock.now + limitMs;
    while (!condition()) {
      if (this.clock.now >= end) throw new Error(`${what}: not reached after ${limitMs} simulated ms\n${this.logs.slice(-20).join("\n")}`);
      this.clock.runUntil(this.clock.ticks + 1);
      if (this.clock.ticks % 50 === 0) for (let i = 0; i < 8; i++) await undefined;
    }
  }

  /**
   * `reopenable`: each leg comes with a way to open it again (as configured legs do), which
   * suspend and resume use. `labels` replace the stores' names; `wrap[i]` puts a layer over leg
   * i's port (a fault a test injects).
   */
  async mirror(
    stores: SimStore[],
    options: Partial<MirrorOptions> & { writeMostly?: boolean[]; reopenable?: boolean; labels?: string[]; wrap?: Array<((port: StoragePort) => StoragePort) | undefined> } = {},
  ): Promise<MirrorPort> {
    const legs = stores.map((store, i) => ({
      label: options.labels?.[i] ?? store.name,
      port: options.wrap?.[i]?.(store.port()) ?? (store.port() as StoragePort),
      writeMostly: options.writeMostly?.[i] ?? false,
      ...(options.reopenable === true ? { open: () => Promise.resolve(store.port() as StoragePort) } : {}),
    }));
    return this.settle(
      openMirror(legs, {
        clock: this.tclock,
        randomId: () => this.prng.bytes(16),
        log: this.log,
        probeIntervalMs: 100,
        layout: { metaBytes: SIM_META_BYTES, regionBytes: 4096, activeBytes: 16384 },
        ...options,
      }),
    );
  }

  write(port: StoragePort, offset: number, bytes: Uint8Array, fua = false): Promise<void> {
    return this.settle(call.write(port, offset, bytes, fua));
  }

  async read(port: StoragePort, offset: number, length: number): Promise<Uint8Array> {
    const into = new Uint8Array(length);
    await this.settle(call.read(port, offset, into));
    return into;
  }
}

export function filled(length: number, value: number): Uint8Array {
  return new Uint8Array(length).fill(value);
}

/** A leg's data area (after the mirror's metadata) as bytes. */
export function legData(store: SimStore, mirror: MirrorPort): Uint8Array {
  return store.data.subarray(mirror.layout.metaBytes, mirror.layout.metaBytes + mirror.size);
}

/**
 * A two-leg mirror over [a, b] written once (64 KiB of 1s at 0) and closed, then reopened with
 * leg 1 seen `shrinkBy` bytes short of what it was, so the mirror refuses it as too small;
 * `grow()` gives the leg its size back (dstd resize on its node).
 */
export async function tooSmallAtOpen(rig: Rig, a: SimStore, b: SimStore, shrinkBy: number): Promise<{ m: MirrorPort; grow: () => void }> {
  let shrunk = false;
  class Shrinks extends PassThrough {
    override get size(): number {
      return shrunk ? super.size - shrinkBy : super.size;
    }
  }
  const m1 = await rig.mirror([a, b], { assumeClean: true });
  await rig.write(m1, 0, filled(64 * 1024, 1));
  await rig.settle(m1.close());
  shrunk = true;
  const m = await rig.mirror([a, b], { wrap: [undefined, (p) => new Shrinks(p)] });
  return { m, grow: () => void (shrunk = false) };
}

/** Puts on `store` the superblocks of slot `slot` of another mirror of `legs` legs of `size` bytes (a disk from elsewhere). */
export async function strangerSuperblocks(store: SimStore, legs: number, slot: number, size: number): Promise<void> {
  const other = new Rig();
  const stores = Array.from({ length: legs }, () => other.store(size));
  const m = await other.mirror(stores, { assumeClean: true });
  await other.settle(m.close());
  store.data.set(stores[slot]!.data.subarray(0, SUPERBLOCK_AREA), 0);
  store.durable.set(stores[slot]!.durable.subarray(0, SUPERBLOCK_AREA), 0);
}

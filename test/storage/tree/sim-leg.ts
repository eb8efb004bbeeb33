/**
 * @module test/storage/tree/sim-leg — a leg of a storage tree on simulated time: an in-memory
 * disk (SimStore: the bytes, what is durable, the writes not flushed yet) served through a
 * StoragePort (SimLeg) that behaves as a remote leg behind the client engine does:
 *
 * - every request takes a seeded latency (times a factor during a slow period);
 * - while the leg is down (a cut, or its export killed and not yet restarted) requests wait;
 *   a request whose budget (the engine's deadline) runs out while it waits fails with
 *   ETIMEDOUT — before it took effect, or after (the reply was what got lost). An outage
 *   shorter than the budget therefore only delays requests, as the engine's resends do;
 * - a leg export restart loses nothing acknowledged (the engine replays what was not
 *   flushed: test/sim proves that of the real engine), so it is modelled as an outage;
 * - a crash of the NODE running the tree (`SimStore.crash`) loses each unflushed write or
 *   keeps it, in order (the sim-backend "random" mode), and every request in flight on the
 *   old port objects vanishes.
 * A handed-over write's buffer (storage/port.ts BufferHold) is kept, as the engine keeps it
 * for replay, until a FLUSH issued after it succeeds; it must be unchanged until then.
 * Trim zeroes (a trim may do that). No block status. Test tooling only.
 */
import { Errno } from "../../../src/lib/errno.ts";
import type { Prng } from "../../../src/lib/prng.ts";
import type { BufferHold, Done, ExtentsDone, StoragePort, ZeroFlags } from "../../../src/storage/port.ts";
import type { Timer, TreeClock } from "../../../src/storage/tree/clock.ts";
import { SUPERBLOCK_AREA } from "../../../src/storage/tree/mirror/layout.ts";
import type { SimClock } from "../../sim/sim-clock.ts";

/** The TreeClock of a SimClock (timers with cancel). */
export function treeClock(clock: SimClock): TreeClock {
  return {
    now: () => clock.now,
    after(ms: number, run: () => void): Timer {
      let cancelled = false;
      clock.after(Math.max(0, ms), () => {
        if (!cancelled) run();
      });
      return { cancel: () => void (cancelled = true) };
    },
  };
}

interface Mutation {
  offset: number;
  bytes: Uint8Array | null;
  length: number;
  /** FUA: durable at once; kept in the list so a crash replays it after older cached writes. */
  fua?: boolean;
}

export interface LegTiming {
  /** The engine's deadline: a request fails once it waited this long. */
  budgetMs: number;
  latencyMinMs: number;
  latencySpreadMs: number;
}

/** The disk behind one leaf leg: survives a crash of the tree's node. */
export class SimStore {
  readonly data: Uint8Array;
  readonly durable: Uint8Array;
  private unflushed: Mutation[] = [];
  /** Down (cut or export killed) until `upAt` (Infinity: until `up()`). */
  down = false;
  private upAt = 0;
  private downSince = 0;
  /** Longest outage so far (ms). */
  longestOutage = 0;
  /** When it last came back up (-Infinity: never down). */
  lastUp = -Infinity;
  slowUntil = 0;
  slowFactor = 1;
  /** Ports of this store, current life first. */
  ports: SimLeg[] = [];
  /** `sbReads`: reads inside the first 8 KiB (a mirror's superblock copies: what judges a leg without touching it). */
  readonly counters = { requests: 0, sbReads: 0, timeouts: 0, outages: 0, bytesWritten: 0 };

  /** Bytes the leg shows (a file's size); grows up to `capacity` by resize. */
  private visible: number;

  constructor(
    readonly name: string,
    size: number,
    readonly clock: SimClock,
    readonly prng: Prng,
    readonly timing: LegTiming,
    /** Bytes past `size` the leg can grow into (a file that can be extended); 0: fixed size. */
    readonly room = 0,
  ) {
    this.visible = size;
    this.data = new Uint8Array(size + room);
    this.durable = new Uint8Array(size + room);
  }

  get size(): number {
    return this.visible;
  }

  get capacity(): number {
    return this.data.length;
  }

  /**
   * A grown range reads as zeroes (a file extended by ftruncate). Off: it shows what the leg
   * held past its end (`data` beyond `size`), which a mirror must zero when it grows.
   */
  zeroOnGrow = false;

  /** Extend the leg (a file's ftruncate: its size survives a crash once the leg is flushed, as the mirror does). */
  grow(size: number): boolean {
    if (size > this.capacity) return false;
    if (this.zeroOnGrow && size > this.visible) {
      this.data.fill(0, this.visible, size);
      this.durable.fill(0, this.visible, size);
    }
    this.visible = Math.max(this.visible, size);
    return true;
  }

  /**
   * Show only `size` bytes (a partition or LV set smaller by mistake, a remote export that
   * offers less): what lies past it is kept, and grow() shows it again.
   */
  shrink(size: number): void {
    this.visible = Math.min(this.visible, size);
  }

  /** Written by hand and synced (dd … conv=notrunc,fsync): durable at once, after whatever the cache held. */
  overwrite(offset: number, bytes: Uint8Array | null, length = bytes?.length ?? 0): void {
    this.apply({ offset, bytes: bytes === null ? null : bytes.slice(), length }, false);
    this.flush();
  }

  get now(): number {
    return this.clock.now;
  }

  /** A new port (a new life of the node that opens this leg). */
  port(): SimLeg {
    const leg = new SimLeg(this);
    this.ports.unshift(leg);
    return leg;
  }

  /** Go down for `ms` (Infinity: until up()). */
  cut(ms: number): void {
    if (this.down) {
      this.upAt = Math.max(this.upAt, this.now + ms);
    } else {
      this.down = true;
      this.downSince = this.now;
      this.upAt = this.now + ms;
      this.counters.outages++;
    }
    const at = this.upAt;
    if (Number.isFinite(at)) {
      this.clock.after(at - this.now, () => {
        if (this.down && this.upAt === at) this.up();
      });
    }
  }

  up(): void {
    if (!this.down) return;
    this.down = false;
    this.lastUp = this.now;
    this.longestOutage = Math.max(this.longestOutage, this.now - this.downSince);
    for (const port of this.ports) port.resume();
  }

  slow(ms: number, factor: number): void {
    this.slowUntil = Math.max(this.slowUntil, this.now + ms);
    this.slowFactor = factor;
  }

  latency(): number {
    const base = this.timing.latencyMinMs + this.prng.int(this.timing.latencySpreadMs + 1);
    return this.now < this.slowUntil ? base * this.slowFactor : base;
  }

  /** Largest latency a request can see (for the "short outage never degrades" check). */
  get maxLatency(): number {
    return (this.timing.latencyMinMs + this.timing.latencySpreadMs) * Math.max(1, this.slowFactor);
  }

  apply(m: Mutation, fua: boolean): void {
    if (m.bytes === null) this.data.fill(0, m.offset, m.offset + m.length);
    else this.data.set(m.bytes, m.offset);
    this.counters.bytesWritten += m.length;
    if (fua) {
      if (m.bytes === null) this.durable.fill(0, m.offset, m.offset + m.length);
      else this.durable.set(m.bytes, m.offset);
    }
    // A FUA write stays in the list too: a crash that keeps an older cached write of the same
    // bytes must not put it back over the newer durable one (the cache held the newer data).
    this.unflushed.push(fua ? { ...m, fua: true } : m);
  }

  flush(): void {
    // In order, FUA ones too: a later FUA write must end up over an earlier cached one.
    for (const m of this.unflushed) {
      if (m.bytes === null) this.durable.fill(0, m.offset, m.offset + m.length);
      else this.durable.set(m.bytes, m.offset);
    }
    this.unflushed = [];
  }

  /** The node's process is gone: requests in flight on its ports vanish (nothing is lost). */
  abandon(): void {
    for (const port of this.ports) port.dead = true;
  }

  /** The node crashed: in-flight requests vanish; each unflushed write survives or not, in order. */
  crash(keep: (m: Mutation) => boolean): void {
    for (const port of this.ports) port.dead = true;
    const image = this.durable.slice();
    for (const m of this.unflushed) {
      if (m.fua !== true && !keep(m)) continue;
      if (m.bytes === null) image.fill(0, m.offset, m.offset + m.length);
      else image.set(m.bytes, m.offset);
    }
    this.data.set(image);
    this.durable.set(image);
    this.unflushed = [];
  }
}

/** One node-life's port on a SimStore. */
interface Kept {
  data: Uint8Array;
  expected: Uint8Array;
  hold: BufferHold;
  applied: boolean;
}

export class SimLeg implements StoragePort {
  readonly kind = "sim";
  readonly blockSize = 512;
  readonly maxPayload = 64 * 1024;
  readonly readOnly = false;
  readonly canTrim = true;
  readonly canZero = true;
  readonly canFastZero = false;
  readonly canFlush = true;
  readonly canMultiConn = true;
  readonly canBlockStatus = false;
  readonly synchronous = false;
  dead = false;
  /** Handed-over writes held until a FLUSH after them succeeds. */
  private kept: Kept[] = [];
  private parked: (() => void)[] = [];

  constructor(readonly store: SimStore) {}

  get description(): string {
    return this.store.name;
  }
  get size(): number {
    return this.store.size;
  }

  /** Present on a leg with room to grow (SimStore.room), like a file leg. */
  get resize(): ((size: number, done: Done) => void) | undefined {
    if (this.store.room === 0) return undefined;
    return (size, done) => this.request(() => void this.store.grow(size), (errno) => done(errno === 0 && this.store.size < size ? Errno.ENOSPC : errno));
  }

  read(offset: number, into: Uint8Array, done: Done): void {
    this.check(offset, into.length);
    if (offset + into.length <= SUPERBLOCK_AREA) this.store.counters.sbReads++; // a mirror judging the leg
    this.request(() => into.set(this.store.data.subarray(offset, offset + into.length)), done);
  }
  write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.check(offset, data.length);
    const bytes = data.slice(); // the port contract lets the caller reuse `data` after done
    this.request(() => this.store.apply({ offset, bytes, length: bytes.length }, fua), done);
  }
  /** Kept like the engine's replay log keeps it: sent as it lies, held until a later FLUSH succeeds. */
  writeHandedOver(offset: number, data: Uint8Array, fua: boolean, hold: BufferHold, done: Done): void {
    this.check(offset, data.length);
    hold.hold();
    const entry = { data, expected: data.slice(), hold, applied: false };
    this.kept.push(entry);
    this.request(() => {
      entry.applied = true;
      this.store.apply({ offset, bytes: data.slice(), length: data.length }, fua);
    }, done);
  }
  trim(offset: number, length: number, fua: boolean, done: Done): void {
    this.check(offset, length);
    this.request(() => this.store.apply({ offset, bytes: null, length }, fua), done);
  }
  zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    this.check(offset, length);
    if (flags.fast) return done(Errno.ENOTSUP);
    this.request(() => this.store.apply({ offset, bytes: null, length }, flags.fua), done);
  }
  flush(done: Done): void {
    // Like the engine's FLUSH: it releases the writes that had reached the leg before it.
    const covered = this.kept.filter((entry) => entry.applied);
    this.kept = this.kept.filter((entry) => !entry.applied);
    this.request(
      () => this.store.flush(),
      (errno) => {
        if (errno !== 0) this.kept.push(...covered);
        else for (const entry of covered) this.letGo(entry);
        done(errno);
      },
    );
  }

  private letGo(entry: Kept): void {
    if (!Buffer.from(entry.data).equals(Buffer.from(entry.expected))) throw new Error(`${this.store.name}: a handed-over write's buffer changed while the leg still held it`);
    entry.hold.drop();
  }
  extents(_offset: number, length: number, _max: number, done: ExtentsDone): void {
    done(0, [{ length, hole: false, zero: false }]);
  }
  async close(): Promise<void> {}

  resume(): void {
    const parked = this.parked;
    this.parked = [];
    for (const run of parked) run();
  }

  private check(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.store.size) throw new Error(`${this.store.name}: request ${offset}+${length} out of range ${this.store.size}`);
  }

  /**
   * Take effect once the leg is up, reply once it is up again; fail at the budget. The
   * deadline costs an event only when the request has to wait (the leg down, or a reply that
   * would come after it): most requests complete in two events.
   */
  private request(effect: () => void, done: Done): void {
    const store = this.store;
    const clock = store.clock;
    store.counters.requests++;
    const deadline = clock.now + store.timing.budgetMs;
    let finished = false;
    let applied = false;
    let timer = false;
    const fail = () => {
      if (finished || this.dead) return;
      finished = true;
      store.counters.timeouts++;
      done(Errno.ETIMEDOUT);
    };
    const wait = (step: () => void) => {
      this.parked.push(step);
      if (!timer) {
        timer = true;
        clock.after(deadline - clock.now, fail);
      }
    };
    const reply = () => {
      if (finished || this.dead) return;
      if (store.down) return wait(reply);
      finished = true;
      done(0);
    };
    const arrive = () => {
      if (finished || this.dead) return;
      if (store.down) return wait(arrive);
      if (!applied) {
        applied = true;
        effect();
      }
      const at = clock.now + store.latency();
      if (at > deadline) {
        if (!timer) {
          timer = true;
          clock.after(deadline - clock.now, fail);
        }
        return;
      }
      clock.after(at - clock.now, reply);
    };
    const first = clock.now + store.latency();
    if (first > deadline) {
      timer = true;
      return void clock.after(store.timing.budgetMs, fail);
    }
    clock.after(first - clock.now, arrive);
  }
}

/**
 * @module test/storage/tree/swarm — one seed of the storage-tree simulation, start to finish
 * (docs/tree.md "Simulation"): a random tree (linear, stripe, mirror, nested up to three
 * levels) over simulated leaves (sim-leg.ts), a random workload checked against the
 * reference model (oracle.ts), and a fault schedule: cuts shorter than the budget (must only
 * delay), cuts longer than it (mirror legs degrade and must resync when back), leaves down
 * until the end, slow periods, and crashes of the node running the tree (unflushed writes
 * lost at random; the tree reopened from what the legs hold); a root mirror, stripe or linear
 * node whose leaves have room grows online at a random moment, through any mirrors, stripes and
 * linear nodes (by their last leg) under it
 * (sometimes with a crash while it runs: the reopened size is the old or the new one, never
 * smaller than an acknowledged grow; a stripe's leaves are files, whose grown range reads as
 * zeroes; a mirror's show what they held past their end, which it must zero), and
 * once more after convergence if it has not (then it must succeed); a mirror leg is
 * suspended by the operator at a random moment and resumed later (or at heal), or replaced
 * by a blank disk (a reload, mirror/leg-change.ts): a suspended leaf gets no request, the hold
 * survives a node crash, and the leg (or its replacement) rejoins. The maintenance may leave
 * the leaf unfit (another mirror's superblocks, a clone of a sibling leg, rotted superblocks,
 * shrunk) or the replacement be the wrong disk: the mirror refuses it, and the operator resumes
 * it later without a repair (it stays refused; a refused leaf gets nothing but superblock
 * reads, across node crashes too) or after one (superblocks wiped, grown back: it rejoins).
 *
 * Phases: safety (workload + faults), heal (every leaf up; requests from now on must
 * succeed), convergence (every mirror leg back in sync), verification (the whole tree read
 * back against the model; every mirror's legs byte-identical; a clean close and reopen
 * needs no resync and reads the same, though a linear node's inner leaves grew while it was
 * stopped: the layout record keeps the legs after them in place). Every random choice comes
 * from the seed.
 */
import { Prng } from "../../../src/lib/prng.ts";
import { errnoName } from "../../../src/lib/errno.ts";
import type { StoragePort } from "../../../src/storage/port.ts";
import { call } from "../../../src/storage/port.ts";
import type { LayoutEntry } from "../../../src/storage/tree/tree-layout.ts";
import type { TreeClock } from "../../../src/storage/tree/clock.ts";
import { SlotState, SUPERBLOCK_AREA, SUPERBLOCK_BYTES, encodeSuperblock } from "../../../src/storage/tree/mirror/layout.ts";
import { REFUSED_STATES } from "../../../src/storage/tree/mirror/leg.ts";
import { blockVersion, makeWriteData } from "../../sim/block-data.ts";
import { SimClock } from "../../sim/sim-clock.ts";
import { type Op, type OpKind, TreeOracle, TreeViolation, violation } from "./oracle.ts";
import { SimStore, treeClock } from "./sim-leg.ts";
import { type Built, buildTree, describeShape, growTargetOf, linearInnerLeaves, randomShape, stripeLeaves, type TreeShape } from "./topology.ts";

const BLOCK = 512;

/**
 * A mirror leaf leg the mirror refuses (foreign, diverged, damaged, too small): untouched —
 * no request but a read of its superblock copies — until the operator repairs it.
 */
interface Refusal {
  mirror: number;
  leg: number;
  store: SimStore;
  /** Its leaf's requests other than superblock reads when it was first seen refused. */
  touches: number;
}

/** Requests that reached a leaf other than reads of its superblock copies (how a mirror judges a leg). */
function touches(store: SimStore): number {
  return store.counters.requests - store.counters.sbReads;
}

export interface SeedResult {
  seed: number;
  shape: string;
  ops: number;
  failed: number;
  degradations: number;
  resyncedBytes: number;
  crashes: number;
  reopenRefused: number;
  shortCuts: number;
  longCuts: number;
  marks: Record<string, number>;
}

/** Give promise continuations a chance to run (the tree's open/close are async). */
async function settleMicrotasks(): Promise<void> {
  for (let i = 0; i < 8; i++) await undefined;
}

export class TreeWorld {
  readonly clock = new SimClock(1);
  readonly tclock = treeClock(this.clock);
  /**
   * The current life of the node running the tree: its timers run on a clock that dies with it
   * (a crashed process runs no timers: an old life's probe must not reach a leg — seed 998140
   * counted one as a request to a suspended leg).
   */
  private life = { dead: false };
  stores: SimStore[];
  readonly shape: TreeShape;
  oracle!: TreeOracle;
  readonly prng: Prng;
  /** No submissions while the tree is being reopened after a node crash. */
  paused = false;
  private readonly treePrng: Prng;
  built!: Built;
  readonly ops: Op[] = [];
  private nextVersion = 1;
  outstanding = 0;
  healAt = -1;
  readonly trace: string[] = [];
  /** When the last open began (a leg down then is absent, even if it is back by the end). */
  private openedAt = 0;
  readonly marks = { crashes: 0, reopenRefused: 0, openFailed: 0, shortCuts: 0, longCuts: 0, downUntilHeal: 0, slow: 0, grows: 0, stripeGrows: 0, linearGrows: 0, nestedGrows: 0, grownWhileStopped: 0, growsFailed: 0, growsAfterCrash: 0, suspends: 0, suspendsRefused: 0, holdsAcrossCrash: 0, replaced: 0, regionsDoubled: 0, tampered: 0, wrongReplacements: 0, refusedForeign: 0, refusedDamaged: 0, refusedTooSmall: 0, refusedDiverged: 0, refusedResumes: 0, refusedStayed: 0, repairedResumes: 0, refusedRejoined: 0, refusedAcrossCrash: 0, repairedAcrossCrash: 0, openAmbiguous: 0 };
  /** Online growth (mirror/grow.ts, stripe.ts): a root mirror or stripe whose leaves have room to grow. */
  readonly growPrng: Prng;
  /** The size a grow asks for; 0: this seed does not grow. */
  growTarget = 0;
  /** A grow was started (a node crash may leave its record on some legs). */
  growStarted = false;
  /** A grow completed successfully: the size must never go back. */
  growAcked = false;
  /** A grow of this life of the tree has not completed (a stripe's waits for a down leg's budget). */
  growRunning = false;
  /** The operator's suspend/resume of a mirror leg (mirror/suspend.ts). */
  readonly holdPrng: Prng;
  /** The leg held out now (acknowledged suspend, no resume yet): mirror index, leg, and its leaf's request count then (a leaf leg). */
  held: { mirror: number; leg: number; leaf: number | null; requests: number } | null = null;
  /** A suspend was asked and not answered yet (it flushes the mirror first, which may wait out a budget). */
  suspending = false;
  /** What the operator's maintenance does to a leaf and how it repairs a refused leg (docs/tree.md "Operator actions"). */
  readonly refusePrng: Prng;
  /** Refused leaf legs not repaired yet: they must stay untouched and refused (across node crashes too). */
  refusals: Refusal[] = [];
  /** Repaired and resumed: they must not be refused again, and rejoin (counted once in sync). */
  rejoining: Refusal[] = [];
  /** Leaves shrunk during a maintenance, with the size that growing them back restores. */
  readonly shrunk = new Map<SimStore, number>();
  /** Leaves given another mirror's (valid) superblocks and not wiped since. */
  readonly strangers = new Set<SimStore>();
  /** A node crash due next to an operator's action on a refused leg (the seed's one crash, earlier or instead). */
  crashHint = -1;

  constructor(readonly seed: number) {
    const seeds = new Prng(seed);
    this.prng = new Prng(seeds.next());
    this.treePrng = new Prng(seeds.next());
    const legPrng = new Prng(seeds.next());
    this.shape = randomShape(new Prng(seeds.next()));
    this.growPrng = new Prng(seeds.next());
    this.holdPrng = new Prng(seeds.next());
    this.refusePrng = new Prng(seeds.next());
    const root = this.shape.root;
    // Mirrors, stripes and linear nodes grow (through each other; a linear node by its last leg).
    // Nested roots always try.
    const nested = root.kind !== "leaf" && root.children.some((c) => c.kind !== "leaf");
    const grows = root.kind !== "leaf" && (nested || this.growPrng.chance(0.6));
    const files = stripeLeaves(root);
    this.innerLinearLeaves = linearInnerLeaves(root);
    this.stores = this.shape.leafSizes.map((size, i) => {
      const timing = { budgetMs: 150 + legPrng.int(850), latencyMinMs: 1 + legPrng.int(3), latencySpreadMs: legPrng.int(15) };
      // A linear node's inner leaf can grow while the node is stopped (a device extended): room for it.
      const room = (grows ? (1 + this.growPrng.int(6)) * 4096 : 0) + (this.innerLinearLeaves.has(i) ? 8192 : 0);
      const store = new SimStore(`L${i}`, size, this.clock, new Prng(legPrng.next()), timing, room);
      // What the leg held past its end (an earlier use of the device): different on every leg.
      store.data.fill(0x40 + i, size);
      store.durable.fill(0x40 + i, size);
      // A stripe does not zero what it grows into: its legs are files (ftruncate reads zeroes).
      store.zeroOnGrow = files.has(i);
      return store;
    });
    if (grows) this.growTarget = growTargetOf(root, this.shape.leafSizes, this.stores.map((st) => st.capacity));
  }

  /** Grow the tree to growTarget; `then(errno)` when the grow completes (not after a node crash). */
  startGrow(then: (errno: number) => void = () => {}): void {
    const port = this.port;
    const target = this.growTarget;
    this.growStarted = true;
    this.growRunning = true;
    this.note(`GROW ${port.size} → ${target}`);
    port.resize!(target, (errno) => {
      if (this.port !== port) return; // a later life of the tree
      this.growRunning = false;
      this.note(`grow to ${target}: ${errno === 0 ? "ok" : errnoName(errno)}`);
      if (errno === 0) {
        this.marks.grows++;
        if (this.shape.root.kind === "stripe") this.marks.stripeGrows++;
        if (this.shape.root.kind === "linear") this.marks.linearGrows++;
        if (this.shape.root.kind !== "leaf" && this.shape.root.children.some((c) => c.kind !== "leaf")) this.marks.nestedGrows++;
        this.growAcked = true;
        this.oracle.grow(target / BLOCK);
      } else this.marks.growsFailed++;
      then(errno);
    });
  }

  /** Suspend leg `pick % legs` of mirror `which` for `forMs` (then resume it). */
  suspendLeg(which: number, pick: number, forMs: number): void {
    const { mirror, legLeaves } = this.built.mirrors[which]!;
    const leg = pick % mirror.legs.length;
    const problem = mirror.legProblem(leg, "suspend");
    if (problem !== null || this.held !== null) {
      this.marks.suspendsRefused++;
      return this.note(`SUSPEND m${which}.${leg} refused: ${problem ?? "another leg is held"}`);
    }
    this.note(`SUSPEND m${which}.${leg} (${mirror.legs[leg]!.state})`);
    this.suspending = true;
    mirror.setLegHeld(leg, "suspend", (errno) => {
      if (this.built.mirrors[which]?.mirror !== mirror) return; // a later life of the tree
      this.suspending = false;
      this.note(`suspend m${which}.${leg}: ${errno === 0 ? "ok" : errnoName(errno)}`);
      if (errno !== 0) return void this.marks.suspendsRefused++;
      this.marks.suspends++;
      const leaves = legLeaves[leg]!;
      const leaf = leaves.length === 1 ? leaves[0]! : null;
      this.held = { mirror: which, leg, leaf, requests: leaf === null ? 0 : this.stores[leaf]!.counters.requests };
      // Acknowledged after heal (its record waited for a failing leg): the maintenance ends now.
      if (this.healAt >= 0) this.resumeHeld();
      // Or the operator replaces the leaf with a blank disk (a reload: mirror/leg-change.ts).
      else if (leaf !== null && this.growTarget === 0 && this.holdPrng.chance(0.4)) this.clock.after(forMs, () => this.replaceHeld());
      else this.clock.after(forMs, () => this.resumeHeld());
    });
  }

  /** A suspended leaf leg was sent nothing since its suspend was acknowledged. */
  checkHeldQuiet(): void {
    const held = this.held;
    if (held === null || held.leaf === null) return;
    const now = this.stores[held.leaf]!.counters.requests;
    if (now !== held.requests) violation("suspended leg used", `leaf L${held.leaf} (mirror ${held.mirror} leg ${held.leg}) got ${now - held.requests} requests while suspended`);
  }

  /** After a node crash and reopen: an acknowledged hold is still there. */
  checkHoldKept(): void {
    const held = this.held;
    if (held === null) return;
    const state = this.built.mirrors[held.mirror]!.mirror.legs[held.leg]!.state;
    if (state !== "suspended") violation("hold lost", `mirror ${held.mirror} leg ${held.leg} reopened ${state}; its suspend was acknowledged and not resumed`);
    this.marks.holdsAcrossCrash++;
    if (held.leaf !== null) held.requests = this.stores[held.leaf]!.counters.requests; // the open read its superblock
  }

  /** Resume the held leg (the operator ends the maintenance); at heal it must be accepted. */
  resumeHeld(): void {
    const held = this.held;
    if (held === null) return;
    // The node is down or reopening (its open reads every leg's superblock): the operator waits.
    if (this.paused) return void this.clock.after(10, () => this.resumeHeld());
    this.checkHeldQuiet();
    this.held = null;
    const { mirror } = this.built.mirrors[held.mirror]!;
    const strict = this.healAt >= 0;
    // The maintenance left the leaf unfit: the resume must find it refused and leave it untouched.
    if (!strict && held.leaf !== null && this.refusePrng.chance(0.5)) {
      const how = this.tamper(this.stores[held.leaf]!, held.mirror, held.leg, true);
      this.marks.tampered++;
      this.note(`maintenance of m${held.mirror}.${held.leg} left ${this.stores[held.leaf]!.name} ${how}`);
      this.hintCrash();
    }
    this.note(`RESUME m${held.mirror}.${held.leg}`);
    mirror.setLegHeld(held.leg, "resume", (errno) => {
      if (errno === 0 || this.built.mirrors[held.mirror]?.mirror !== mirror) return;
      // While faults run, its record may fail on the last in-sync leg (the leg is probed anyway); after heal it may not.
      if (strict) violation("resume", `resuming mirror ${held.mirror} leg ${held.leg} failed: ${errnoName(errno)}`);
      this.note(`resume m${held.mirror}.${held.leg}: ${errnoName(errno)}`);
    });
  }

  /** Replace the held leaf leg by a blank disk of its size (it is resynced whole); at heal it is resumed instead. */
  replaceHeld(): void {
    const held = this.held;
    if (held === null || held.leaf === null) return;
    if (this.paused) return void this.clock.after(10, () => this.replaceHeld());
    if (this.healAt >= 0) return this.resumeHeld();
    const { mirror } = this.built.mirrors[held.mirror]!;
    const old = this.stores[held.leaf]!;
    const fresh = new SimStore(`${old.name}+`, old.size, this.clock, new Prng(this.holdPrng.next()), old.timing);
    // The wrong disk: another mirror's, this mirror's other leg, or one whose superblocks rotted.
    const wrong = this.refusePrng.chance(0.4) ? this.tamper(fresh, held.mirror, held.leg, false) : null;
    if (wrong !== null) this.marks.wrongReplacements++;
    const port = fresh.port();
    const problem = mirror.legChangeProblem(held.leg, port);
    if (problem !== null) {
      this.note(`REPLACE m${held.mirror}.${held.leg} refused: ${problem}`);
      return this.resumeHeld();
    }
    this.checkHeldQuiet();
    this.held = null;
    this.note(`REPLACE m${held.mirror}.${held.leg}: ${old.name} by ${wrong === null ? "blank" : wrong} ${fresh.name}`);
    mirror.setLeg(held.leg, { label: fresh.name, port, open: async () => fresh.port() });
    this.stores[held.leaf] = fresh; // the config names the new disk from now on
    this.marks.replaced++;
  }

  /**
   * Make `store` (mirror `which`'s leg `leg`, or its replacement) unfit the way maintenance
   * can: another mirror's superblocks on it, a clone of another of this mirror's leaf legs,
   * superblocks whose identity rotted (damaged), or (`shrink`) a size below what the mirror
   * needs. Returns what was done.
   */
  tamper(store: SimStore, which: number, leg: number, shrink: boolean): string {
    const { mirror, legLeaves } = this.built.mirrors[which]!;
    const prng = this.refusePrng;
    const siblings = legLeaves.map((leaves, i) => (i !== leg && leaves.length === 1 ? leaves[0]! : -1)).filter((l) => l >= 0);
    const kinds = ["foreign", "damaged", ...(shrink ? ["too-small"] : []), ...(siblings.length > 0 ? ["clone"] : [])];
    const kind = prng.pick(kinds);
    if (kind === "too-small") {
      const needed = mirror.layout.metaBytes + mirror.layout.dataBytes;
      const to = Math.max(SUPERBLOCK_AREA, needed - BLOCK * (1 + prng.int(16)));
      if (!this.shrunk.has(store)) this.shrunk.set(store, store.size);
      store.shrink(to);
      return `shrunk to ${to} bytes (the mirror needs ${needed})`;
    }
    if (kind === "clone") {
      const from = this.stores[prng.pick(siblings)]!;
      const n = Math.min(store.size, from.size);
      store.overwrite(0, from.data.subarray(0, n));
      return `a clone of ${from.name}`;
    }
    const sb = encodeSuperblock({
      mirrorId: prng.bytes(16),
      seq: 1 + prng.int(9),
      generation: 1 + prng.int(9),
      layout: mirror.layout,
      // Slot 0 of a healthy mirror as wide as this one. Not one whose other legs were out of
      // sync: put in leg 0's place while every other leg of ours is unreachable at a reopen, its
      // record would decide the open alone (nothing on the legs tells the two mirrors apart;
      // tree sim seed 3125 before this choice — a limitation, left to a mirror identity kept off the legs).
      legIndex: 0,
      legCount: mirror.legs.length,
      open: prng.chance(0.5),
      slots: mirror.legs.map(() => ({ state: SlotState.IN_SYNC, low: 1, high: 0 })),
    });
    // Rotted: a byte of the body changed in both copies (the checksum fails; the identity is not this mirror's).
    if (kind === "damaged") sb[24 + prng.int(400)]! ^= 1 + prng.int(255);
    const area = new Uint8Array(SUPERBLOCK_AREA);
    area.set(sb, 0);
    area.set(sb, SUPERBLOCK_BYTES);
    store.overwrite(0, area);
    if (kind === "foreign") this.strangers.add(store);
    return kind === "damaged" ? "with damaged superblocks of another mirror" : "with another mirror's superblocks";
  }

  /** Sometimes the node crashes right after an operator's action on a refused or unfit leg (once a seed, while faults run). */
  hintCrash(): void {
    if (this.crashHint < 0 && this.refusePrng.chance(0.5)) this.crashHint = this.clock.now + this.refusePrng.int(60);
  }

  /**
   * Refused leaf legs: a newly refused one is watched (untouched from now on) and the operator
   * acts on it later; a watched one was sent nothing but superblock reads; a repaired one in
   * sync has rejoined.
   */
  watchRefused(): void {
    if (this.paused) return;
    this.built.mirrors.forEach(({ mirror, legLeaves }, m) => {
      mirror.legs.forEach((leg, i) => {
        const leaves = legLeaves[i]!;
        const store = leaves.length === 1 ? this.stores[leaves[0]!]! : null;
        const same = (r: Refusal) => r.mirror === m && r.leg === i && r.store === store;
        const back = this.rejoining.find(same);
        if (back !== undefined && leg.state === "in-sync") {
          this.rejoining.splice(this.rejoining.indexOf(back), 1);
          this.marks.refusedRejoined++;
          this.note(`m${m}.${i} (${store!.name}) rejoined after its repair`);
        }
        if (!REFUSED_STATES.has(leg.state)) return;
        if (store === null) return; // only leaf legs are made unfit here: convergence reports any other
        if (back !== undefined) violation("repaired leg refused", `mirror ${m} leg ${i} (${store.name}) was repaired and resumed, and is ${leg.state} again: ${leg.lastError}`);
        if (this.refusals.some(same)) return;
        const key = leg.state === "foreign" ? "refusedForeign" : leg.state === "damaged" ? "refusedDamaged" : leg.state === "too-small" ? "refusedTooSmall" : "refusedDiverged";
        this.marks[key]++;
        const r: Refusal = { mirror: m, leg: i, store, touches: touches(store) };
        this.refusals.push(r);
        this.note(`m${m}.${i} (${store.name}) is ${leg.state}: ${leg.lastError}`);
        this.planRefusedAction(r);
      });
    });
    this.checkRefusedQuiet();
  }

  /** A refused leaf that is not repaired was sent nothing but superblock reads (no write, no read it served). */
  checkRefusedQuiet(): void {
    for (const r of this.refusals) {
      const now = touches(r.store);
      if (now !== r.touches) violation("refused leg touched", `leaf ${r.store.name} (mirror ${r.mirror} leg ${r.leg}) got ${now - r.touches} requests besides superblock reads while refused`);
    }
  }

  /** After a node crash and reopen: an unrepaired refused leg is refused again (or held, or unreachable now). */
  checkRefusedKept(): void {
    for (const r of this.refusals) {
      const leg = this.built.mirrors[r.mirror]!.mirror.legs[r.leg]!;
      // Absent if it was down when the open probed it: down now, or back up since the open began
      // (it came up while the open ran, after its probe: seed 2114583).
      const ok = REFUSED_STATES.has(leg.state) || leg.state === "suspended" || (leg.state === "absent" && (r.store.down || r.store.lastUp >= this.openedAt));
      if (!ok) violation("refused leg reopened", `leaf ${r.store.name} (mirror ${r.mirror} leg ${r.leg}) is unrepaired and reopened ${leg.state}`);
      this.marks.refusedAcrossCrash++;
      r.touches = touches(r.store); // the open read its superblocks (checked up to the crash)
    }
    this.marks.repairedAcrossCrash += this.rejoining.length;
  }

  /** The operator acts on a refused leg later (at heal: soon). */
  planRefusedAction(r: Refusal): void {
    const delay = this.healAt >= 0 ? 1 + this.refusePrng.int(50) : 20 + this.refusePrng.int(1000);
    this.clock.after(delay, () => this.actOnRefused(r));
  }

  /**
   * `dstd leg resume` on a refused leg: without a repair (it must stay refused and untouched),
   * or after one — its superblock copies wiped, or a shrunk leaf grown back — when it must be
   * taken back (resynced whole). After heal it is always repaired, and must rejoin.
   */
  actOnRefused(r: Refusal): void {
    if (!this.refusals.includes(r)) return;
    if (this.paused) return void this.clock.after(10, () => this.actOnRefused(r));
    this.checkRefusedQuiet();
    const { mirror } = this.built.mirrors[r.mirror]!;
    const leg = mirror.legs[r.leg]!;
    // Being judged again (a resume found it unreadable: probed until it answers), or held: later.
    if (!REFUSED_STATES.has(leg.state)) return void this.clock.after(50, () => this.actOnRefused(r));
    const strict = this.healAt >= 0;
    const was = leg.state;
    let repair: string | null = null;
    if (strict || this.refusePrng.chance(0.6)) {
      const size = this.shrunk.get(r.store);
      if (was === "too-small" && size !== undefined && r.store.grow(size)) {
        this.shrunk.delete(r.store);
        repair = `grown back to ${size} bytes`;
      } else if (was !== "too-small") {
        r.store.overwrite(0, null, SUPERBLOCK_AREA); // dd if=/dev/zero of=LEG bs=4096 count=2 conv=notrunc
        this.strangers.delete(r.store);
        repair = "its superblock copies wiped";
      } else if (strict) violation("liveness", `leaf ${r.store.name} (mirror ${r.mirror} leg ${r.leg}) is too-small and the simulation cannot grow it`);
    }
    if (repair !== null) {
      this.refusals.splice(this.refusals.indexOf(r), 1);
      this.rejoining.push(r);
      this.marks.repairedResumes++;
    } else this.marks.refusedResumes++;
    this.note(`RESUME m${r.mirror}.${r.leg} (${was}) ${repair === null ? "without a repair" : `after a repair: ${repair}`}`);
    if (!strict) this.hintCrash();
    mirror.setLegHeld(r.leg, "resume", (errno) => {
      if (this.built.mirrors[r.mirror]?.mirror !== mirror) return; // a later life of the tree
      const now = mirror.legs[r.leg]!.state;
      this.note(`resume m${r.mirror}.${r.leg}: ${errno === 0 ? "ok" : errnoName(errno)}; ${now}${mirror.legs[r.leg]!.lastError ? ` (${mirror.legs[r.leg]!.lastError})` : ""}`);
      if (repair === null) {
        if (now === "in-sync" || now === "syncing") violation("refused leg rejoined", `leaf ${r.store.name} (mirror ${r.mirror} leg ${r.leg}) was ${was} and resumed without a repair, and is ${now}`);
        if (REFUSED_STATES.has(now)) this.marks.refusedStayed++;
        this.planRefusedAction(r);
        return;
      }
      if (REFUSED_STATES.has(now)) violation("repaired leg refused", `leaf ${r.store.name} (mirror ${r.mirror} leg ${r.leg}) was ${was}, resumed after a repair (${repair}), and is ${now}: ${mirror.legs[r.leg]!.lastError}`);
      if (strict && (errno !== 0 || (now !== "syncing" && now !== "in-sync"))) violation("resume", `resuming repaired mirror ${r.mirror} leg ${r.leg} after heal: ${errnoName(errno)}, ${now}`);
    });
  }

  /**
   * The reopen was refused: a disk put in from another mirror holds its own slot there and as
   * many legs hold its identity as ours (mirror/assemble.ts). The operator wipes its superblock
   * copies (docs/tree.md "Operator actions"): blank, it is resynced whole.
   */
  wipeStrangers(): void {
    for (const store of this.strangers) {
      store.overwrite(0, null, SUPERBLOCK_AREA);
      this.note(`${store.name}: superblock copies wiped (the open could not tell which mirror this is)`);
      const r = this.refusals.find((x) => x.store === store);
      if (r !== undefined) {
        this.refusals.splice(this.refusals.indexOf(r), 1);
        this.rejoining.push(r);
      }
    }
    this.strangers.clear();
  }

  /** A suspend in flight when the node crashed may have landed: the operator sees it in status and resumes it. */
  resumeStray(): void {
    this.built.mirrors.forEach(({ mirror }, which) => {
      mirror.legs.forEach((leg, index) => {
        if (leg.state !== "suspended") return;
        this.note(`RESUME m${which}.${index} (a suspend that was in flight at the crash landed)`);
        mirror.setLegHeld(index, "resume", (errno) => {
          if (errno !== 0 && this.built.mirrors[which]?.mirror === mirror) violation("resume", `resuming mirror ${which} leg ${index} failed: ${errnoName(errno)}`);
        });
      });
    });
  }

  /**
   * After a node crash and reopen: a grow in flight may have reached some legs' records (the
   * reopened size is the old or the new one); an acknowledged grow is never lost.
   */
  reconcileSize(): void {
    const size = this.port.size;
    const known = this.oracle.blockCount * BLOCK;
    if (size < known) violation("grow lost", `the tree reopened at ${size} bytes; ${this.growAcked ? "a grow to" : "it was"} ${known} bytes ${this.growAcked ? "was acknowledged" : "before the crash"}`);
    if (size > known) {
      if (!this.growStarted || size !== this.growTarget) violation("size", `the tree reopened at ${size} bytes, ${known} before the crash, and no grow to that size was started`);
      this.marks.growsAfterCrash++;
      this.oracle.grow(size / BLOCK);
    }
  }

  log = {
    info: (m: string) => {
      if (m.startsWith("mirror: regions of ")) this.marks.regionsDoubled++;
      this.note(`tree: ${m}`);
    },
    warn: (m: string) => this.note(`tree WARN: ${m}`),
  };

  note(line: string): void {
    this.trace.push(`${String(this.clock.now).padStart(7)} ms  ${line}`);
    if (this.trace.length > 400 && process.env.TREE_SEED === undefined) this.trace.splice(0, 100);
  }

  get port(): StoragePort {
    return this.built.port;
  }

  /** Run the clock until `promise` settles (the tree's async open/close). */
  async drive<T>(promise: Promise<T>, limitMs = 600_000): Promise<T> {
    let settled = false;
    let value: T | undefined;
    let error: unknown = null;
    promise.then(
      (v) => {
        settled = true;
        value = v;
      },
      (e: unknown) => {
        settled = true;
        error = e;
      },
    );
    const end = this.clock.now + limitMs;
    for (;;) {
      await settleMicrotasks();
      if (settled) break;
      if (this.clock.now >= end) throw new Error(`async step did not finish in ${limitMs} simulated ms`);
      // Every leg request takes ≥ 2 ms: stepping 2 ms never skips past a continuation's I/O.
      this.clock.runUntil(this.clock.ticks + 2);
    }
    if (error !== null) throw error;
    return value as T;
  }

  /** Open a new life of the tree on fresh ports over the same stores. */
  async open(): Promise<void> {
    this.openedAt = this.tclock.now();
    const ports = this.stores.map((s) => s.port());
    const life = { dead: false };
    this.life = life;
    const clock: TreeClock = { now: () => this.tclock.now(), after: (ms, run) => this.tclock.after(ms, () => void (life.dead || run())) };
    this.built = await this.drive(buildTree(this.shape.root, ports, clock, this.treePrng, this.log, (leaf) => this.stores[leaf]!.port(), this.layouts));
  }

  /** The node's process is gone (a crash, or an open that gave up): its timers with it. */
  endLife(): void {
    this.life.dead = true;
  }

  /** The layout record (storage/tree/layout-book.ts): written before a layout is served, so it survives node crashes. */
  readonly layouts = new Map<string, LayoutEntry[]>();
  /** Leaves that are a linear node's leg other than its last. */
  readonly innerLinearLeaves: Set<number>;

  /**
   * While the node is stopped, a linear node's inner leaves grow (a device extended, a remote
   * export resized): the next open must place the legs after them where they were.
   */
  growWhileStopped(): void {
    for (const leaf of this.innerLinearLeaves) {
      const store = this.stores[leaf]!;
      if (store.size < store.capacity && store.grow(store.capacity)) {
        this.marks.grownWhileStopped++;
        this.note(`leaf L${leaf} grown to ${store.size} bytes while the node is stopped`);
      }
    }
  }

  // ---- workload --------------------------------------------------------------------------------

  submit(kind: OpKind, first: number, count: number, fua: boolean): Op {
    const version = kind === "write" ? this.nextVersion++ : kind === "trim" || kind === "zero" ? 0 : -1;
    const op: Op = { id: this.ops.length + 1, kind, first, count, version, fua, submitAt: this.clock.now, serial: this.oracle.nextSerial(), convergence: this.healAt >= 0, status: null, lost: false };
    this.ops.push(op);
    this.outstanding++;
    this.oracle.submitted(op);
    if (process.env.TREE_SEED !== undefined) this.note(`#${op.id} ${kind} ${first}+${count}${fua ? " fua" : ""} v${version}`);
    const port = this.port;
    const offset = first * BLOCK;
    const length = count * BLOCK;
    const done = (status: number, data: Uint8Array | null = null) => this.completed(op, status, data);
    switch (kind) {
      case "read": {
        const into = new Uint8Array(length);
        port.read(offset, into, (s) => done(s, into));
        break;
      }
      case "write": {
        const data = makeWriteData(version, first, count, BLOCK);
        // Every other write is handed over (storage/port.ts BufferHold), as the DST export
        // hands over what it received: once the last hold is dropped the buffer is poisoned,
        // so a layer or leg that read it later would put garbage on a leg (the oracle sees it).
        if (port.writeHandedOver !== undefined && op.id % 2 === 0) {
          let holds = 1;
          const hold = {
            hold: () => void holds++,
            drop: () => {
              if (--holds < 0) violation("liveness", `request #${op.id}: its buffer's hold dropped more often than taken`);
              if (holds === 0) data.fill(0xee);
            },
          };
          port.writeHandedOver(offset, data, fua, hold, (status) => {
            done(status);
            hold.drop();
          });
        } else port.write(offset, data, fua, done);
        break;
      }
      case "trim":
        port.trim(offset, length, fua, done);
        break;
      case "zero":
        port.zero(offset, length, { fua, noHole: false, fast: false }, done);
        break;
      case "flush":
        port.flush(done);
        break;
    }
    return op;
  }

  private completed(op: Op, status: number, data: Uint8Array | null): void {
    if (op.lost) return; // the node that ran it is gone
    if (op.status !== null) violation("liveness", `request #${op.id} (${op.kind}) completed twice`);
    op.status = status;
    this.outstanding--;
    if (status !== 0 || process.env.TREE_SEED !== undefined) this.note(`#${op.id} ${op.kind} ${op.first}+${op.count} ${status === 0 ? "ok" : `failed: ${errnoName(status)}`}`);
    if (status !== 0 && op.convergence) violation("liveness", `request #${op.id} (${op.kind} blocks ${op.first}+${op.count}) submitted after faults stopped failed with ${errnoName(status)}`);
    this.oracle.completed(op, status, data);
  }

  /** Submit what the queue depth allows, on blocks free of conflicting requests. */
  pump(depth: number, remaining: { n: number }, mix: number[]): void {
    if (this.paused) return;
    // Like a client that connects now: it sees the size the tree serves, grown or not.
    if (this.growStarted && this.port.size > this.oracle.blockCount * BLOCK) this.oracle.grow(this.port.size / BLOCK);
    const blocks = this.oracle.blockCount;
    while (this.outstanding < depth && remaining.n > 0) {
      const roll = this.prng.int(100);
      const kind: OpKind = roll < mix[0]! ? "read" : roll < mix[1]! ? "write" : roll < mix[2]! ? "trim" : roll < mix[3]! ? "zero" : "flush";
      if (kind === "flush") {
        this.submit("flush", 0, 0, false);
        remaining.n--;
        continue;
      }
      let placed = false;
      for (let attempt = 0; attempt < 8 && !placed; attempt++) {
        const count = 1 + this.prng.int(Math.min(8, blocks));
        const first = this.prng.int(blocks - count + 1);
        if (!this.oracle.canSubmit(kind, first, count)) continue;
        this.submit(kind, first, count, kind !== "read" && this.prng.chance(0.15));
        placed = true;
      }
      remaining.n--;
      if (!placed) break;
    }
  }

  // ---- faults ------------------------------------------------------------------------------------

  /** Crash the node: in-flight requests vanish, unflushed writes survive at random. */
  crashNode(): void {
    this.marks.crashes++;
    this.growRunning = false; // its completion goes with the node
    this.suspending = false;
    const inflight = this.ops.filter((op) => op.status === null && !op.lost);
    this.note(`NODE CRASH: ${inflight.length} requests in flight vanish`);
    this.oracle.crashed(inflight);
    this.outstanding -= inflight.length;
    this.endLife();
    for (const store of this.stores) store.crash(() => this.prng.chance(0.5));
  }

  heal(): void {
    this.healAt = this.clock.now;
    for (const store of this.stores) {
      store.up();
      store.slowUntil = 0;
    }
  }

  // ---- checks ------------------------------------------------------------------------------------

  /**
   * Read the whole tree and check it against the model. `tolerant`: chunks whose read fails
   * (a leg still down) are skipped — only what was read is checked.
   */
  async verifyImage(invariant: string, context: string, tolerant = false): Promise<void> {
    const size = this.oracle.blockCount * BLOCK;
    const chunk = Math.min(this.port.maxPayload, 32 * 1024);
    const reads: Promise<{ at: number; bytes: Uint8Array } | null>[] = [];
    for (let at = 0; at < size; at += chunk) {
      const bytes = new Uint8Array(Math.min(chunk, size - at));
      const read = call.read(this.port, at, bytes).then(() => ({ at, bytes }));
      reads.push(tolerant ? read.catch(() => null) : read);
    }
    for (const got of await this.drive(Promise.all(reads))) {
      if (got === null) continue;
      for (let b = 0; b < got.bytes.length / BLOCK; b++) {
        const block = got.at / BLOCK + b;
        const problem = this.oracle.check(block, got.bytes.subarray(b * BLOCK, (b + 1) * BLOCK), this.oracle.blocks[block]!.now);
        if (problem !== null) violation(invariant, `${context}: block ${block} ${problem}`);
      }
    }
  }

  /** Every mirror: all legs in sync and their data areas byte-identical. */
  async verifyLegs(): Promise<void> {
    // Metadata writes a FLUSH started (write-intent clears) land on nested mirrors' legs too.
    const quiet = () => this.built.mirrors.every(({ mirror }) => mirror.quiescent);
    for (let waited = 0; !quiet(); waited += 10) {
      if (waited > 60_000) violation("liveness", "mirrors still busy 60 s after the final flush");
      this.clock.runUntil(this.clock.ticks + 10);
      await settleMicrotasks();
    }
    for (const { mirror } of this.built.mirrors) {
      const states = mirror.legs.map((l) => l.state);
      if (states.some((s) => s !== "in-sync")) violation("convergence", `mirror legs not all in sync: ${states.join(", ")}`);
      const meta = mirror.layout.metaBytes;
      const images = mirror.legs.map(() => new Uint8Array(mirror.size));
      const reads: Promise<void>[] = [];
      mirror.legs.forEach((leg, i) => {
        for (let at = 0; at < mirror.size; at += 32 * 1024) {
          const n = Math.min(32 * 1024, mirror.size - at);
          reads.push(call.read(leg.port!, meta + at, images[i]!.subarray(at, at + n)));
        }
      });
      await this.drive(Promise.all(reads));
      for (let i = 1; i < images.length; i++) {
        if (!Buffer.from(images[0]!).equals(Buffer.from(images[i]!))) {
          const at = images[0]!.findIndex((b, k) => b !== images[i]![k]);
          const block = Math.floor(at / BLOCK);
          const versions = images.map((image) => blockVersion(image.subarray(block * BLOCK, (block + 1) * BLOCK), block));
          violation("legs differ", `mirror ${mirror.description}: leg ${i} differs from leg 0 at byte ${at} (mirror block ${block}; versions by leg: ${versions.join(" | ")})`);
        }
      }
    }
  }

  /**
   * A mirror leg degrades only when a leaf under it spent a request's whole budget: outages
   * and slow periods shorter than that only delay (what md over NBD gets wrong).
   */
  checkShortOutages(): void {
    for (const { mirror, legLeaves } of this.built.mirrors) {
      mirror.legs.forEach((leg, i) => {
        if (leg.degradations === 0) return;
        const leaves = legLeaves[i]!.map((l) => this.stores[l]!);
        if (!leaves.some((s) => s.counters.timeouts > 0)) {
          const outages = leaves.map((s) => `${s.name}: longest outage ${s.longestOutage} ms, budget ${s.timing.budgetMs} ms`).join("; ");
          violation("degraded by a short outage", `mirror leg ${leg.label} degraded ${leg.degradations}× but no leaf under it ever spent its budget (${outages})`);
        }
      });
    }
  }

  dump(): string {
    return this.trace.slice(process.env.TREE_SEED ? 0 : -60).join("\n");
  }
}

/** Run one seed; throws TreeViolation (with the seed in the message) on any broken invariant. */
export async function runTreeSeed(seed: number): Promise<SeedResult> {
  const world = new TreeWorld(seed);
  try {
    return await runWorld(world);
  } catch (error) {
    const what = error instanceof TreeViolation ? error.message : (error as Error).stack ?? String(error);
    throw new Error(`tree sim seed ${seed} (${describeShape(world.shape.root)}): ${what}\n  replay: TREE_SEED=${seed} bun test test/storage/tree/swarm.test.ts\n${world.dump()}`);
  }
}

export const phaseTimes: Record<string, number> = {};
async function runWorld(world: TreeWorld): Promise<SeedResult> {
  const { prng, clock } = world;
  // TREE_STATS=1: CPU milliseconds per phase, summed over seeds (where a seed's time goes).
  const stats = process.env.TREE_STATS !== undefined;
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1000;
  };
  let mark = stats ? cpu() : 0;
  const phase = (name: string) => {
    if (!stats) return;
    const now = cpu();
    phaseTimes[name] = (phaseTimes[name] ?? 0) + now - mark;
    mark = now;
  };
  await world.open();
  phase("open");
  world.oracle = new TreeOracle(Math.floor(world.port.size / BLOCK), BLOCK);
  const hasMirror = world.built.mirrors.length > 0;

  // Workload and fault schedule from the seed.
  const remaining = { n: 20 + prng.int(80) };
  const depth = 1 + prng.int(8);
  const reads = 20 + prng.int(30);
  const mix = [reads, reads + 40, reads + 45, reads + 50, 100];
  const safetyMs = 2_000 + prng.int(6_000);
  for (const store of world.stores) {
    const budget = store.timing.budgetMs;
    const cuts = prng.int(4);
    for (let c = 0; c < cuts; c++) {
      const at = prng.int(safetyMs);
      const roll = prng.int(10);
      const duration = roll < 4 ? Math.max(1, Math.floor(budget / 2) - 2 * store.maxLatency - 2) : roll < 8 ? Math.floor(budget * (1.2 + prng.float() * 2)) : Number.POSITIVE_INFINITY;
      clock.after(at, () => {
        if (world.healAt >= 0) return;
        world.note(`${store.name} down for ${Number.isFinite(duration) ? `${duration} ms` : "until heal"} (budget ${budget} ms)`);
        if (roll < 4) world.marks.shortCuts++;
        else if (roll < 8) world.marks.longCuts++;
        else world.marks.downUntilHeal++;
        store.cut(duration);
      });
    }
    if (prng.chance(0.3)) {
      const at = prng.int(safetyMs);
      const factor = 2 + prng.int(6);
      clock.after(at, () => {
        if (world.healAt >= 0) return;
        world.marks.slow++;
        store.slow(100 + prng.int(900), factor);
      });
    }
  }
  let crashAt = hasMirror && prng.chance(0.3) ? prng.int(safetyMs) : -1;
  if (world.growTarget > 0) {
    // A grow at a random moment of the safety phase: it may meet cuts, slow legs and a crash
    // (half the crashing seeds crash while it runs: between its zeroes and its record).
    const growAt = world.growPrng.int(safetyMs);
    if (crashAt >= 0 && world.growPrng.chance(0.5)) crashAt = Math.min(safetyMs - 1, growAt + world.growPrng.int(80));
    clock.after(growAt, () => {
      if (world.healAt >= 0 || world.paused) return;
      world.startGrow();
    });
  }

  if (hasMirror && world.holdPrng.chance(0.4)) {
    // The operator takes a mirror leg out for maintenance and brings it back later (or at heal).
    const at = world.holdPrng.int(safetyMs);
    const which = world.holdPrng.int(world.built.mirrors.length);
    const pick = world.holdPrng.int(8);
    const forMs = 50 + world.holdPrng.int(safetyMs);
    clock.after(at, () => {
      if (world.healAt >= 0 || world.paused) return;
      world.suspendLeg(which, pick, forMs);
    });
  }

  // Safety phase.
  // Spread the workload over the whole safety phase, so faults meet requests.
  const gap = Math.max(2, Math.floor((2 * safetyMs * depth) / remaining.n));
  const pumpEvery = () => {
    if (world.healAt >= 0) return;
    world.pump(depth, remaining, mix);
    if (world.healAt < 0) clock.after(1 + prng.int(gap), pumpEvery);
  };
  clock.after(1, pumpEvery);
  let crashed = false;
  let nextSettle = 0;
  while (clock.now < safetyMs) {
    clock.runUntil(Math.min(clock.ticks + 10, safetyMs));
    world.watchRefused();
    // A probe that reopens a leg (an absent or resumed one) continues in a promise.
    if (clock.now >= nextSettle) {
      nextSettle = clock.now + 100;
      await settleMicrotasks();
    }
    if (!crashed && ((crashAt >= 0 && clock.now >= crashAt) || (world.crashHint >= 0 && clock.now >= world.crashHint))) {
      await settleMicrotasks();
      crashed = true;
      world.checkHeldQuiet();
      world.checkRefusedQuiet();
      world.crashNode();
      world.paused = true;
      for (let attempt = 0; ; attempt++) {
        try {
          await world.open();
          break;
        } catch (error) {
          // A leg the mirror lists in sync was unreachable (it may be newer), or a metadata
          // write at open spent its budget: the open fails, as `dstd export` would exit.
          if ((error as { code?: string }).code !== "E_MIRROR" || attempt >= 3) throw error;
          if (/unreachable/.test((error as Error).message)) world.marks.reopenRefused++;
          else if (/different mirrors/.test((error as Error).message)) {
            world.marks.openAmbiguous++;
            world.wipeStrangers();
          } else world.marks.openFailed++;
          world.note(`reopen failed: ${(error as Error).message}`);
          // The node gives up (as `dstd export` exits): what it opened goes away with it.
          world.endLife();
          for (const store of world.stores) store.abandon();
          world.heal(); // and comes back once its legs are back (no new faults meanwhile)
        }
      }
      world.healAt = -1;
      world.reconcileSize();
      world.checkHoldKept();
      world.checkRefusedKept();
      await world.verifyImage("lost write", "after the node crash", true);
      world.paused = false;
    }
  }

  phase("safety");
  // Heal: every leaf up; requests from now on must succeed.
  world.heal();
  world.note("HEAL");
  world.resumeHeld();
  world.resumeStray();
  // The operator repairs every refused leg and resumes it: it must rejoin.
  for (const r of world.refusals) world.planRefusedAction(r);
  const drained = { n: 20 };
  const converge = () => {
    world.pump(depth, drained, mix);
    if (drained.n > 0) clock.after(1 + prng.int(10), converge);
  };
  clock.after(1, converge);
  const limit = clock.now + 120_000;
  // A suspend still in flight is answered (and, after heal, resumed) before the mirrors count as converged.
  const mirrorsInSync = () => !world.suspending && world.built.mirrors.every(({ mirror }) => mirror.legs.every((l) => l.state === "in-sync"));
  while (!(world.outstanding === 0 && drained.n === 0 && mirrorsInSync())) {
    if (clock.now >= limit) {
      const states = world.built.mirrors.map(({ mirror }) => mirror.legs.map((l) => `${l.label}:${l.state}${l.probing ? "(probing)" : ""}${l.port === null ? "(no port)" : ""}${l.lastError ? `(${l.lastError})` : ""}`).join(" ")).join(" | ");
      violation("liveness", `not converged 120 s after heal: ${world.outstanding} requests outstanding; mirror legs ${states}`);
    }
    clock.runUntil(clock.ticks + 10);
    world.watchRefused();
    if (clock.now >= nextSettle) {
      nextSettle = clock.now + 100;
      await settleMicrotasks();
    }
  }
  world.watchRefused();
  if (world.refusals.length > 0 || world.rejoining.length > 0) violation("convergence", `refused legs not repaired or rejoined: ${[...world.refusals, ...world.rejoining].map((r) => r.store.name).join(", ")}`);
  for (const op of world.ops) if (op.status === null && !op.lost) violation("liveness", `request #${op.id} never completed`);

  phase("converge");
  // A grow still running (a stripe's waits out a leg's budget) ends first, as an operator's would.
  for (let waited = 0; world.growRunning; waited += 10) {
    if (waited > 60_000) violation("liveness", "a grow did not complete in 60 s after heal");
    clock.runUntil(clock.ticks + 10);
    await settleMicrotasks();
  }
  if (world.growTarget > 0 && world.port.size < world.growTarget) {
    // Every leg in sync, no faults: a grow must succeed now.
    let result: number | null = null;
    world.startGrow((errno) => (result = errno));
    for (let waited = 0; result === null; waited += 10) {
      if (waited > 60_000) violation("liveness", "a grow after convergence did not complete in 60 s");
      clock.runUntil(clock.ticks + 10);
      await settleMicrotasks();
    }
    if (result !== 0) violation("liveness", `a grow with every leg in sync failed: ${errnoName(result)}`);
  }
  // Verification.
  world.checkShortOutages();
  await world.verifyImage("final image", "after convergence");
  await world.drive(call.flush(world.port));
  await world.verifyLegs();
  const degradations = world.built.mirrors.reduce((n, { mirror }) => n + mirror.legs.reduce((m, l) => m + l.degradations, 0), 0);
  const resyncedBytes = world.built.mirrors.reduce((n, { mirror }) => n + mirror.resyncedBytes, 0);
  if (hasMirror || world.innerLinearLeaves.size > 0) {
    // A clean close records it; the next open resyncs nothing and reads the same, though a
    // linear node's inner legs grew meanwhile (the layout record keeps the legs after them in place).
    await world.drive(world.port.close());
    world.growWhileStopped();
    await world.open();
    for (const { mirror } of world.built.mirrors) {
      const states = mirror.legs.map((l) => l.state);
      if (states.some((s) => s !== "in-sync")) violation("clean reopen", `after a clean close the mirror reopened with legs ${states.join(", ")}`);
    }
    await world.verifyImage("final image", "after a clean close and reopen");
  }
  phase("verify");
  const failed = world.ops.filter((op) => op.status !== null && op.status !== 0).length;
  if (process.env.TREE_STATS) console.log(`seed ${world.seed} ${world.shape.name} events ${world.clock.eventsRun} sim ${world.clock.now} ms requests ${world.stores.reduce((n, s) => n + s.counters.requests, 0)} ops ${world.ops.length} bytes ${world.stores.reduce((n, s) => n + s.counters.bytesWritten, 0)}`);
  return {
    seed: world.seed,
    shape: world.shape.name,
    ops: world.ops.length,
    failed,
    degradations,
    resyncedBytes,
    crashes: world.marks.crashes,
    reopenRefused: world.marks.reopenRefused,
    shortCuts: world.marks.shortCuts,
    longCuts: world.marks.longCuts,
    marks: { ...world.marks },
  };
}

/**
 * @module storage/tree/mirror/leg — one leg of a mirror as the mirror tracks it: its port,
 * its state, the regions it may be missing (`needs`), the generation range its slot records,
 * and its read statistics. States (docs/tree.md "Leg states"):
 *
 *   in-sync   holds every acknowledged write; serves reads; gets every write
 *   syncing   reachable, being resynced: gets every write, serves no reads
 *   degraded  failed its resend budget (or a probe): gets nothing; its missed regions are recorded
 *   absent    could not be opened at all (a remote leg that never answered); probed like degraded
 *   suspended taken out by the operator (`dstd leg suspend`): gets nothing, its missed regions
 *             are recorded, not probed; held out across restarts until `dstd leg resume`
 *   foreign   holds another mirror's metadata (or another slot's): never touched
 *   diverged  written by someone else after it left (split brain): never touched
 *   damaged   metadata present but unreadable (checksum): never touched
 *   too-small smaller than the mirror needs
 */
import type { StoragePort } from "../../port.ts";
import type { Timer } from "../clock.ts";
import type { ResyncSnapshot } from "../describe.ts";
import { RegionBitmap } from "./bitmap.ts";

export const LEG_STATES = ["in-sync", "syncing", "degraded", "absent", "suspended", "foreign", "diverged", "damaged", "too-small"] as const;
export type LegState = (typeof LEG_STATES)[number];

/** States whose leg is left alone for good (an operator must act: docs/tree.md). */
export const REFUSED_STATES: ReadonlySet<LegState> = new Set(["foreign", "diverged", "damaged", "too-small"]);

export interface MirrorLegInput {
  /** As configured: a URL, a path, the child's kind. */
  label: string;
  writeMostly?: boolean;
  /** The opened leg, or null when it could not be opened (then `open` is retried by probes). */
  port: StoragePort | null;
  open?: () => Promise<StoragePort>;
}

export class MirrorLeg {
  state: LegState = "absent";
  /** Regions this leg may be missing (meaningful unless in-sync). */
  readonly needs: RegionBitmap;
  /** Regions resynced since the leg's last flush: still recorded as missing on disk. */
  readonly cleanPending: RegionBitmap;
  /**
   * Write-intent regions when it was degraded: writes it took there may not be durable on it.
   * While this node runs they are not lost (a remote leg's engine replays what its export
   * had not flushed), so they are not resynced; but they are recorded as missing on disk, so
   * a crash of this node (which takes the replay log with it) resyncs them. Cleared by the
   * leg's next successful flush.
   */
  readonly unflushed: RegionBitmap;
  /** Whole-leg resync (slot state FULL). */
  full = false;
  /** Out of sync: the bitmap is valid for a returning leg whose generation is in [low, high]. */
  low = 0;
  high = 0;
  /** In sync: the generation it joined at. */
  joinGen = 0;
  /** The generation last read from or written to its superblock (null: unknown). */
  diskGen: number | null = null;
  /** The highest generation any superblock write sent to it carried (it may be on its disk). */
  issuedGen = 0;
  /**
   * Joining the in-sync set: 1 while every metadata page is copied to it (page writes go to
   * it from then on), 2 while the superblock commit that lists it in sync is in flight. A leg
   * whose superblock wins the next assembly must hold current bitmaps: hence the two steps.
   */
  joinPhase: 0 | 1 | 2 = 0;
  lastError: string | null = null;
  probe: Timer | null = null;
  probing = false;
  /** Read statistics for the least-latency policy. */
  latencyMs = 0;
  inflightReads = 0;
  reads = 0;
  /** Times it was degraded (flapping shows here). */
  degradations = 0;
  /**
   * Times it failed again while resyncing since it was last in sync: it answers its probe but
   * not its writes (a flapping leg). Each one doubles the wait before its next probe
   * (leg-health.ts probeDelay); a join resets it.
   */
  flaps = 0;
  /** Bytes every resync moved to it since it last left the in-sync set (one resync may stop and resume). */
  movedSinceLeft = 0;
  resync: ResyncSnapshot | null = null;

  constructor(
    readonly index: number,
    /** Follows the configuration: a reload that changes the subtree under it relabels it. */
    public label: string,
    readonly writeMostly: boolean,
    public port: StoragePort | null,
    /** How a probe or a resume reopens it; a reload that changes its subtree replaces it. */
    public open: (() => Promise<StoragePort>) | null,
    regions: number,
    slotBytes: number,
  ) {
    this.needs = new RegionBitmap(regions, slotBytes);
    this.cleanPending = new RegionBitmap(regions, slotBytes);
    this.unflushed = new RegionBitmap(regions, slotBytes);
  }

  /** The mirror grew to `regions` regions (mirror/grow.ts). */
  growBitmaps(regions: number): void {
    this.needs.grow(regions);
    this.cleanPending.grow(regions);
    this.unflushed.grow(regions);
  }

  /** The mirror's regions became `factor` times larger (mirror/grow.ts): every bitmap folds. */
  coarsenBitmaps(factor: number, regions: number): void {
    this.needs.coarsen(factor, regions);
    this.cleanPending.coarsen(factor, regions);
    this.unflushed.coarsen(factor, regions);
  }

  /** The newest generation its disk may show: a returning leg above it was written elsewhere. */
  get highBound(): number {
    return Math.max(this.high, this.issuedGen);
  }

  /** Gets writes (in-sync or syncing with a port). */
  get writable(): boolean {
    return this.port !== null && (this.state === "in-sync" || this.state === "syncing");
  }

  /** Missing regions are recorded for it (it will be resynced when it returns). */
  get tracked(): boolean {
    return this.state === "degraded" || this.state === "absent" || this.state === "suspended";
  }
}

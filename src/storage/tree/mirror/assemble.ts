/**
 * @module storage/tree/mirror/assemble — deciding, from what each leg's superblock says, which
 * legs of a mirror hold current data when the mirror opens (docs/tree.md "Generations").
 * Pure: the caller reads the superblocks; this returns a plan or the reason to refuse.
 *
 * The authority is the valid leg with the highest (generation, seq): its slot table is the
 * last decision the mirror made about every leg. From it:
 * - a leg its table lists in sync is in sync if its own generation is in [joined, current]
 *   (it may lag one commit: a commit that reached some legs before a crash); if it is
 *   unreachable the mirror refuses to open — it may have gone on alone and be newer;
 * - a leg listed out of sync with range [low, high] is resynced from its bitmap when its
 *   generation is in range, whole when below (or blank), and refused when above (it was
 *   written elsewhere after it left: split brain);
 * - after an unclean stop (flag "open" in the authority) every in-sync leg but one source
 *   is resynced over the write-intent bitmap, so legs never disagree about an unflushed
 *   write that reached only some of them.
 * - a leg whose slot is held (the operator suspended it) stays suspended, not probed, until
 *   `dstd leg resume` (docs/tree.md "Suspending a leg for maintenance");
 * Whenever a leg that the table lists in sync is not in sync any more, the generation goes up.
 */
import { type Decoded, type Layout, type LayoutOptions, MAX_MIRROR_LEGS, SlotState, type Superblock, planLayout, sameId } from "./layout.ts";
import type { LegState } from "./leg.ts";

export interface LegFound {
  /** A port exists and its superblock area was read. */
  present: boolean;
  sizeBytes: number;
  blockSize: number;
  writeMostly: boolean;
  decoded: Decoded | null;
}

export interface LegPlan {
  state: LegState;
  /** Resync sources: the authority's slot bitmap, the whole leg, the write-intent bitmap. */
  fromSlot: boolean;
  full: boolean;
  fromActive: boolean;
  low: number;
  high: number;
  joinGen: number;
  diskGen: number | null;
  /** Why it is in this state (logged). */
  note: string | null;
}

export interface Plan {
  create: boolean;
  layout: Layout;
  mirrorId: Uint8Array;
  generation: number;
  seq: number;
  /** Leg whose bitmaps are read (-1 when creating). */
  authority: number;
  unclean: boolean;
  legs: LegPlan[];
}

export interface PlanOptions {
  assumeClean: boolean;
  layout?: LayoutOptions;
  /** Identity for a new mirror. */
  newId: Uint8Array;
}

const plan0 = (state: LegState, note: string | null = null): LegPlan => ({
  state,
  fromSlot: false,
  full: false,
  fromActive: false,
  low: 0,
  high: 0,
  joinGen: 0,
  diskGen: null,
  note,
});

export function planAssembly(found: readonly LegFound[], options: PlanOptions): Plan | string {
  if (found.length < 1 || found.length > MAX_MIRROR_LEGS) return `a mirror has 1 to ${MAX_MIRROR_LEGS} legs (got ${found.length})`;
  const valid: { index: number; sb: Superblock }[] = [];
  found.forEach((leg, index) => {
    if (leg.decoded?.kind === "valid") valid.push({ index, sb: leg.decoded.sb });
  });
  if (valid.length === 0) return planCreate(found, options);

  // A disk of another mirror put in a slot of the number it had there holds "its own slot"
  // too, and its generations count another mirror's history: compared with ours, a higher one
  // would make that mirror's record decide ours, every leg of ours "foreign" (tree sim seed
  // 877). This mirror is the identity most valid legs hold; a tie cannot be told from the legs.
  const byId = new Map<string, { index: number; sb: Superblock }[]>();
  for (const v of valid) {
    const key = Buffer.from(v.sb.mirrorId).toString("hex");
    byId.set(key, [...(byId.get(key) ?? []), v]);
  }
  const groups = [...byId.values()].sort((a, b) => b.length - a.length);
  if (groups.length > 1 && groups[0]!.length === groups[1]!.length) {
    const tied = groups.filter((g) => g.length === groups[0]!.length).flatMap((g) => g.map((v) => v.index)).sort((a, b) => a - b);
    const names = tied.length === 2 ? `legs ${tied[0]} and ${tied[1]}` : `legs ${tied.join(", ")}`;
    return `${names} hold metadata of different mirrors, as many legs each: which mirror this is cannot be told from its legs; wipe the first 8 KiB of the legs that are not this mirror's (a disk put in from another mirror: docs/tree.md "Operator actions")`;
  }
  // The authority: highest (generation, seq) among its legs that sit in their own slot.
  const candidates = groups[0]!.filter((v) => v.sb.legIndex === v.index);
  if (candidates.length === 0) return `no leg holds its own slot of a mirror (legs reordered? leg ${groups[0]![0]!.index} holds slot ${groups[0]![0]!.sb.legIndex})`;
  let auth = candidates[0]!;
  for (const c of candidates) {
    if (c.sb.generation > auth.sb.generation || (c.sb.generation === auth.sb.generation && c.sb.seq > auth.sb.seq)) auth = c;
  }
  const id = auth.sb.mirrorId;
  const layout = auth.sb.layout;
  const G = auth.sb.generation;
  const slots = auth.sb.slots;
  const legs: LegPlan[] = [];
  let bump = false;

  for (let i = 0; i < found.length; i++) {
    const leg = found[i]!;
    const slot = i < auth.sb.legCount ? slots[i]! : { state: SlotState.UNUSED, low: 0, high: 0 };
    const decoded = leg.decoded;
    const listedInSync = slot.state === SlotState.IN_SYNC;
    let p: LegPlan;
    if (!leg.present || decoded === null) {
      if (listedInSync) return `leg ${i} is unreachable and the mirror's last record lists it in sync: it may hold newer data; bring it back (or, only if it is lost for good and another leg is in sync, put a blank disk in its place: it is resynced whole — docs/tree.md "Operator actions")`;
      p = outOfSync(plan0("absent", "unreachable"), slot);
    } else if (leg.sizeBytes < layout.metaBytes + layout.dataBytes) {
      p = plan0("too-small", `${leg.sizeBytes} bytes; the mirror needs ${layout.metaBytes + layout.dataBytes}`);
    } else if (decoded.kind === "blank") {
      p = { ...plan0("syncing", "no mirror metadata: resynced whole"), full: true };
    } else if (decoded.kind === "damaged") {
      // Our own superblock torn by a failed write (the leg fell out of sync then): resync it whole.
      const ours = decoded.mirrorId !== null && sameId(decoded.mirrorId, id);
      p = ours ? { ...plan0("syncing", `torn superblock (${decoded.reason}): resynced whole`), full: true } : plan0("damaged", decoded.reason);
    } else if (!sameId(decoded.sb.mirrorId, id)) {
      p = plan0("foreign", "metadata of another mirror");
    } else if (decoded.sb.legIndex !== i) {
      p = plan0("foreign", `holds slot ${decoded.sb.legIndex} of this mirror (legs reordered?)`);
    } else {
      const gen = decoded.sb.generation;
      if (listedInSync) {
        if (gen >= slot.low && gen <= G) p = { ...plan0("in-sync"), joinGen: slot.low, diskGen: gen };
        else if (gen < slot.low) p = { ...plan0("syncing", `generation ${gen} is older than when it joined (${slot.low}): resynced whole`), full: true, diskGen: gen };
        else p = { ...plan0("diverged", `generation ${gen} is newer than the mirror's ${G}`), diskGen: gen };
      } else if (slot.state === SlotState.UNUSED) {
        p = { ...plan0("syncing", "new slot: resynced whole"), full: true, diskGen: gen };
      } else if (gen > slot.high) {
        p = { ...plan0("diverged", `generation ${gen} is newer than when it left (${slot.high}): written elsewhere since`), diskGen: gen };
      } else {
        const whole = slot.state === SlotState.FULL || gen < slot.low;
        p = { ...outOfSync(plan0("syncing"), slot), full: whole, fromSlot: !whole, diskGen: gen };
      }
    }
    if (!listedInSync && slot.held === true && slot.state !== SlotState.UNUSED) {
      // Suspended by the operator: held out, whatever it holds now, until `dstd leg resume`
      // (its return is judged then, like a probe's: mirror/leg-health.ts judgeReturning).
      const diskGen = decoded?.kind === "valid" && sameId(decoded.sb.mirrorId, id) ? decoded.sb.generation : null;
      p = { ...outOfSync(plan0("suspended", "suspended by the operator (dstd leg resume brings it back)"), slot), diskGen };
    }
    if (listedInSync && p.state !== "in-sync") {
      bump = true;
      // Its bitmap (or a whole resync) is valid for the generation its disk shows, up to G: a
      // leg resynced whole that leaves again and comes back showing the same is not diverged.
      if (p.state === "syncing") p = { ...p, low: p.diskGen ?? 0, high: G };
    }
    legs.push(p);
  }
  for (let i = found.length; i < auth.sb.legCount; i++) {
    if (slots[i]!.state === SlotState.IN_SYNC) return `slot ${i} of the mirror is in sync but the configuration has only ${found.length} legs`;
  }
  if (!legs.some((l) => l.state === "in-sync")) return "no leg of the mirror is in sync";

  const unclean = auth.sb.open;
  if (unclean) {
    const inSync = legs.map((l, i) => [l, i] as const).filter(([l]) => l.state === "in-sync");
    const source = inSync.find(([, i]) => !found[i]!.writeMostly) ?? inSync[0]!;
    for (const [l, i] of inSync) {
      if (i === source[1]) continue;
      legs[i] = { ...l, state: "syncing", fromActive: true, low: l.diskGen ?? 0, high: G, note: "unclean stop: write-intent regions resynced" };
      bump = true;
    }
    for (const l of legs) if (l.state === "syncing" || l.state === "absent" || l.state === "suspended") l.fromActive = true;
  }
  return { create: false, layout, mirrorId: id, generation: bump ? G + 1 : G, seq: auth.sb.seq, authority: auth.index, unclean, legs };
}

function outOfSync(p: LegPlan, slot: { state: number; low: number; high: number }): LegPlan {
  if (slot.state === SlotState.BITMAP) return { ...p, fromSlot: true, low: slot.low, high: slot.high };
  return { ...p, full: true, low: slot.low, high: slot.high };
}

function planCreate(found: readonly LegFound[], options: PlanOptions): Plan | string {
  const problems = found
    .map((leg, i) => (!leg.present || leg.decoded === null ? `leg ${i} is unreachable` : leg.decoded.kind === "damaged" ? `leg ${i} has damaged metadata (${leg.decoded.reason})` : null))
    .filter((p) => p !== null);
  if (problems.length > 0) return `cannot create the mirror: ${problems.join("; ")}`;
  const blockSize = Math.max(...found.map((l) => l.blockSize));
  const layout = planLayout(Math.min(...found.map((l) => l.sizeBytes)), blockSize, options.layout);
  if (typeof layout === "string") return `cannot create the mirror: ${layout}`;
  const legs = found.map((_, i): LegPlan => {
    if (i === 0 || options.assumeClean) return { ...plan0("in-sync"), joinGen: 1, diskGen: 0 };
    return { ...plan0("syncing", "new mirror: resynced whole from leg 0"), full: true, diskGen: 0 };
  });
  return { create: true, layout, mirrorId: options.newId, generation: 1, seq: 0, authority: -1, unclean: false, legs };
}

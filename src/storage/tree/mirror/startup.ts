/**
 * @module storage/tree/mirror/startup — carrying out an assembly plan (mirror/assemble.ts
 * decides it): load the bitmaps the plan trusts from the authority, write every bitmap slot,
 * then the superblocks that point at them, then the cleared write-intent bitmap — a crash
 * between steps leaves the previous, still consistent, record (docs/tree.md "Generations").
 * Then resyncs and probes start.
 */
import { DstdError } from "../../../lib/errors.ts";
import { errnoMessage } from "../../../lib/errno.ts";
import { formatSize } from "../../../lib/size.ts";
import type { StoragePort } from "../../port.ts";
import { call } from "../../port.ts";
import type { Plan } from "./assemble.ts";
import { ACTIVE_SLOT, MAX_MIRROR_LEGS, SUPERBLOCK_BYTES, bitmapOffset, hexId } from "./layout.ts";
import { type MirrorLeg, REFUSED_STATES } from "./leg.ts";
import { SB_KEY, addActiveRegions, slotBytes, superblockFor } from "./metadata.ts";
import type { MirrorState } from "./state.ts";
import { closeLeg } from "./suspend.ts";

/** Load bitmaps, write the metadata the plan needs, then start resyncs and probes. */
export async function startMirror(s: MirrorState, plan: Plan): Promise<void> {
  const inSync = s.legs.filter((l) => l.state === "in-sync");
  let intent: Uint8Array | null = null;
  if (!plan.create) {
    const authority = s.legs[plan.authority]!.port!;
    const wanted = s.legs.filter((leg) => plan.legs[leg.index]!.fromSlot && !plan.legs[leg.index]!.full);
    const [read, ...bitmaps] = await Promise.all([plan.unclean ? readIntent(s, plan) : null, ...wanted.map((leg) => readSlot(s, authority, leg.index))]);
    intent = read ?? null;
    wanted.forEach((leg, i) => leg.needs.load(bitmaps[i]!));
    for (const leg of s.legs) if (plan.legs[leg.index]!.fromActive && intent !== null) addActiveRegions(s, leg.needs, intent);
  }
  for (const leg of s.legs) if (leg.full) leg.needs.fill();
  // Bitmaps first, then the superblocks that point at them, then the cleared write-intent
  // bitmap: a crash between steps leaves the previous, still consistent, record.
  const slots = Array.from({ length: MAX_MIRROR_LEGS }, (_, slot) => slotBytes(s, slot));
  await Promise.all(inSync.flatMap((leg) => slots.map((bytes, slot) => writeMeta(leg, bitmapOffset(s.layout, slot), bytes, false))));
  // Durable before the superblock (written with FUA) points at them: FUA covers its own write only.
  await Promise.all(inSync.map((leg) => flushMeta(leg)));
  if (plan.create) {
    // Leg 0 (the source) first: a crash before the others are stamped leaves them blank.
    for (const leg of s.legs) await writeMeta(leg, (s.seq % 2) * SUPERBLOCK_BYTES, superblockFor(s, leg, leg.state === "in-sync" ? s.generation : 0), true);
    for (const leg of s.legs) leg.diskGen = leg.state === "in-sync" ? s.generation : 0;
    s.seq++;
  } else {
    await new Promise<void>((resolve, reject) =>
      s.meta.persist(SB_KEY, (errno) => (errno === 0 ? resolve() : reject(new DstdError("E_MIRROR", `cannot write the mirror's superblock: ${errnoMessage(errno)}`)))),
    );
  }
  const cleared = new Uint8Array(s.layout.bitmapBytes);
  await Promise.all(s.legs.filter((l) => l.state === "in-sync").map((leg) => writeMeta(leg, bitmapOffset(s.layout, ACTIVE_SLOT), cleared, true)));
  s.activeDurable.fill(0);
  const summary = s.legs.map((l) => `${l.label}: ${l.state}${l.lastError && l.state !== "in-sync" ? ` (${l.lastError})` : ""}`).join("; ");
  s.log.info(`mirror ${hexId(s.mirrorId).slice(0, 8)} ${plan.create ? "created" : "opened"} at generation ${s.generation}, ${formatSize(s.size)}, region ${formatSize(s.layout.regionBytes)}${plan.unclean ? " (after an unclean stop)" : ""}: ${summary}`);
  for (const leg of s.legs) {
    if (REFUSED_STATES.has(leg.state)) s.log.warn(`mirror leg ${leg.label} is ${leg.state}: ${leg.lastError ?? ""}; it is left untouched (docs/tree.md "Leg states")`);
    if (leg.state === "syncing") s.hooks.startResync(leg);
    if (leg.tracked) s.hooks.scheduleProbe(leg);
    // Held out by the operator across this restart: its node sees no client until resumed.
    if (leg.state === "suspended") closeLeg(leg);
  }
}

/**
 * After an unclean stop: the write-intent regions of every leg that holds this mirror's
 * metadata, OR-ed. The authority's alone is not enough: a write's intent goes to the legs in
 * sync when it starts, and the authority may have been down then (its record won a tie of
 * generation and sequence because the commit that degraded it never landed anywhere) while
 * another leg took the write (tree sim seed 100778). More regions only mean more resync.
 */
async function readIntent(s: MirrorState, plan: Plan): Promise<Uint8Array> {
  const holders = s.legs.filter((leg) => leg.port !== null && leg.index !== plan.authority && plan.legs[leg.index]!.diskGen !== null && !REFUSED_STATES.has(leg.state));
  const [intent, ...others] = await Promise.all([
    readSlot(s, s.legs[plan.authority]!.port!, ACTIVE_SLOT),
    // Best effort: a leg that cannot be read now is resynced whole or from its slot anyway.
    ...holders.map((leg) => readSlot(s, leg.port!, ACTIVE_SLOT).catch(() => null)),
  ]);
  for (const other of others) {
    if (other === null) continue;
    for (let i = 0; i < intent.length; i++) intent[i] = intent[i]! | other[i]!;
  }
  return intent;
}

async function readSlot(s: MirrorState, port: StoragePort, slot: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(s.layout.bitmapBytes);
  await call.read(port, bitmapOffset(s.layout, slot), bytes).catch((error: Error) => {
    throw new DstdError("E_MIRROR", `cannot read the mirror's bitmaps from ${port.description}: ${error.message}`);
  });
  return bytes;
}

function flushMeta(leg: MirrorLeg): Promise<void> {
  return call.flush(leg.port!).catch((error: Error) => {
    throw new DstdError("E_MIRROR", `mirror leg ${leg.label}: cannot flush its metadata: ${error.message}`);
  });
}

function writeMeta(leg: MirrorLeg, offset: number, bytes: Uint8Array, fua: boolean): Promise<void> {
  return call.write(leg.port!, offset, bytes, fua).catch((error: Error) => {
    throw new DstdError("E_MIRROR", `mirror leg ${leg.label}: cannot write its metadata: ${error.message}`);
  });
}

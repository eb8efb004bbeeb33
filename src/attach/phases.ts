/**
 * @module attach/phases — the kernel attachment's lifecycle as a table: each phase, what
 * happens in it (and in which file), and the phases it may move to. attach/attachment.ts
 * drives it; a move the table does not list is a bug (an assertion), not a peer's doing.
 *
 *   geometry ──► connecting ──────────────┐
 *      └──────► taking-over ──────────────┴─► serving ◄──► reattaching
 *                                               │  └──────────┬─► detaching ──► ended
 *                                               └─────────────┴─► handover  ──► ended (or back to serving)
 *                                               serving / reattaching ──────► ended
 *
 * The phase name is also the `state` a record shows while the daemon is not simply serving
 * (attach/state.ts; `dstd list`): "reattaching", "detaching", "handover".
 *
 * Must not: do the work of a phase (this file only names and checks the moves).
 */
import { assert } from "../lib/assert.ts";

export type Phase = "geometry" | "connecting" | "taking-over" | "serving" | "reattaching" | "detaching" | "handover" | "ended";

export interface PhaseRow {
  /** What the attachment does while in this phase, and where. */
  readonly does: string;
  readonly next: readonly Phase[];
}

export const PHASES: Readonly<Record<Phase, PhaseRow>> = {
  geometry: {
    does: "size and logical block size from the export's welcome (attach/geometry.ts); for a takeover, what the kernel already has (sysfs) wins",
    next: ["connecting", "taking-over"],
  },
  connecting: {
    does: "NBD_CMD_CONNECT with N new sockets, the backend identifier and the dead-connection timeout (attach/connect.ts); a failure leaves nothing attached",
    next: ["serving"],
  },
  "taking-over": {
    does: "NBD_CMD_RECONFIGURE with new sockets in place of a dead daemon's, verified by the kernel's requests arriving (attach/takeover.ts); then a grown export grows the device (kernel/resize.ts)",
    next: ["serving"],
  },
  serving: {
    does: "the NBD front answers the kernel on every socket from the one engine-backed port; the record is rewritten every second (attach/state.ts)",
    next: ["reattaching", "detaching", "handover", "ended"],
  },
  reattaching: {
    does: "the kernel closed some of our sockets: RECONFIGURE replacements for the dead ones (attach/takeover.ts), or end if the device was disconnected",
    next: ["serving", "detaching", "handover", "ended"],
  },
  detaching: {
    does: "fsync the device, NBD_CMD_DISCONNECT, flush the export, forget the record: the device goes away (attach/leave.ts)",
    next: ["ended"],
  },
  handover: {
    does: "stop reading the kernel's requests, answer those held, flush the export, close our sockets: the device stays for the next daemon (attach/leave.ts); back to serving when the export did not confirm the flush and the daemon may stay (`dstd attach`)",
    next: ["ended", "serving"],
  },
  ended: {
    does: "nothing: netlink and the export link are closed",
    next: [],
  },
};

/** The current phase, moved only along PHASES. */
export class PhaseTracker {
  private phase: Phase = "geometry";

  get current(): Phase {
    return this.phase;
  }

  is(...phases: Phase[]): boolean {
    return phases.includes(this.phase);
  }

  canEnter(next: Phase): boolean {
    return PHASES[this.phase].next.includes(next);
  }

  enter(next: Phase): void {
    assert(this.canEnter(next), `attach lifecycle: ${this.phase} → ${next} is not a move of attach/phases.ts`);
    this.phase = next;
  }
}

/**
 * @module attach/takeover — the "taking-over" and "reattaching" phases (attach/phases.ts):
 * NBD_CMD_RECONFIGURE of a running device with new sockets in place of dead ones (a killed
 * or handed-over daemon's, or ours that the kernel closed), with the same backend identifier.
 *
 * The trap (docs/kernel.md §3): the kernel puts each new socket in place of the first DEAD one and
 * still acks when none is dead, dropping the socket (and ignoring the rest of the list). A
 * killed daemon's sockets die with its process, but the kernel marks them dead on its own
 * time. So: after the ack, a new socket the kernel dropped shows up as our end closing at
 * once; the ones that stay are the kernel's. Sockets still missing are asked for again after
 * the next LINK_DEAD (or a second), for up to 10 s; then another process must be serving the
 * device and we give up (E_BUSY). Success is seen in the kernel's requests arriving on a new
 * socket (a probe read of the first block makes sure one comes); sysfs `pid` proves nothing
 * (it keeps the first attacher's pid) and `backend` only confirms identity.
 *
 * Must not: keep a socket the kernel dropped, or leave the sockets it took open on failure.
 */
import { Errno } from "../lib/errno.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { devicePath, type NbdControl } from "../kernel/device.ts";
import { closeFd } from "../sys/libc.ts";
import type { AdoptedFd } from "../transport/fd.ts";
import { probeRead } from "./block-device.ts";
import { within } from "./deadline.ts";
import type { KernelLinks } from "./kernel-links.ts";
import type { LinkDeadWatch } from "./link-dead.ts";

export interface TakeoverStep {
  control: NbdControl;
  links: KernelLinks;
  watch: LinkDeadWatch;
  index: number;
  backendId: string;
  blockSize: number;
  deadConnTimeoutSec?: number;
  /** Sockets to put in place of dead ones. */
  sockets: number;
  log: Log;
}

export interface Takeover {
  /** "served": the kernel's requests arrive on a new socket; "unconfirmed": none within 10 s, but the kernel kept them. */
  verdict: "served" | "unconfirmed";
  ms: number;
  /** RECONFIGUREs sent (more than one when the kernel had not marked the old sockets dead yet). */
  attempts: number;
}

const GIVE_UP_MS = 10_000;
const VERIFY_MS = 10_000;
/** After the ack, time for the close of a socket the kernel dropped to reach the event loop. */
const SETTLE_MS = 50;

export async function takeOver(s: TakeoverStep): Promise<Takeover> {
  const started = performance.now();
  const device = devicePath(s.index);
  const taken: AdoptedFd[] = [];
  let served = false;
  for (let attempt = 1; ; attempt++) {
    const { kernelFds, links } = await s.links.open(s.sockets - taken.length, `nbd${s.index}`);
    try {
      await s.control.reconfigureDevice({ index: s.index, socketFds: kernelFds, backendId: s.backendId, deadConnTimeoutSec: s.deadConnTimeoutSec });
    } catch (error) {
      for (const link of [...taken, ...links]) link.terminate();
      throw error;
    } finally {
      for (const fd of kernelFds) closeFd(fd);
    }
    served = (await verify(links, device, s.blockSize)) === "served" || served;
    await Bun.sleep(SETTLE_MS);
    for (const link of links) if (!link.isClosed) taken.push(link);
    if (taken.length === s.sockets) {
      for (const link of taken) s.links.keep(link);
      return { verdict: served ? "served" : "unconfirmed", ms: performance.now() - started, attempts: attempt };
    }
    const elapsed = performance.now() - started;
    if (elapsed > GIVE_UP_MS) {
      for (const link of taken) link.terminate();
      const what = s.sockets === 1 ? "our socket" : `${s.sockets - taken.length} of our ${s.sockets} sockets`;
      throw new DstdError(
        "E_BUSY",
        `${device}: the kernel acknowledged RECONFIGURE but dropped ${what} ${attempt} times: its current sockets are alive, so another process still serves the device. Stop that process first (or dstd detach ${device})`,
        { errno: Errno.EBUSY },
      );
    }
    s.log.info(`${device}: the kernel kept ${s.sockets - taken.length === 1 ? "an old socket" : "old sockets"} (not marked dead yet); waiting for LINK_DEAD and trying again`);
    await s.watch.next(s.index, 1000);
  }
}

/** After RECONFIGURE: does the kernel use the new links? A probe read makes sure a request comes. */
async function verify(links: AdoptedFd[], device: string, blockSize: number): Promise<"served" | "dropped" | "unconfirmed"> {
  void probeRead(device, blockSize).catch(() => {}); // its outcome is not the verdict: the sockets are
  const verdict = await within(
    Promise.race([
      Promise.race(links.map((link) => link.firstData)).then(() => "served" as const),
      Promise.all(links.map((link) => link.closed)).then(() => "dropped" as const),
    ]),
    VERIFY_MS,
  );
  return verdict === "timeout" ? "unconfirmed" : verdict;
}

/**
 * @module attach/link-dead — the kernel's LINK_DEAD notifications (nbd_mc_group multicast,
 * kernel/device.ts NbdControl onLinkDead) as an attachment uses them: a listener for the
 * serving attachment (counts, logs), and an awaitable "next LINK_DEAD for device N" for a
 * takeover that waits for the kernel to mark a socket dead (docs/kernel.md §3).
 *
 * Must not: decide anything; it only delivers.
 */
export class LinkDeadWatch {
  private waiters: Array<{ index: number; wake: () => void }> = [];
  /** The running attachment's handler (null when none listens). */
  listener: ((index: number) => void) | null = null;

  push(index: number): void {
    this.listener?.(index);
    const woken = this.waiters.filter((w) => w.index === index);
    this.waiters = this.waiters.filter((w) => w.index !== index);
    for (const w of woken) w.wake();
  }

  /** True when LINK_DEAD for `index` arrives within `ms`. */
  next(index: number, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const waiter = { index, wake: () => (clearTimeout(timer), resolve(true)) };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        resolve(false);
      }, ms);
      this.waiters.push(waiter);
    });
  }
}

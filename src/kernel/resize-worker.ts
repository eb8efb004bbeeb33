/**
 * @module kernel/resize-worker — the Worker entry that sends a size change to the kernel
 * (kernel/resize.ts starts it). It opens its own netlink socket, resolves the `nbd` family,
 * sends NBD_CMD_RECONFIGURE with NBD_ATTR_SIZE_BYTES (kernel/device.ts resizeDevice) and
 * posts back the outcome and the size sysfs then reports.
 *
 * Why a thread of its own (docs/kernel.md §4): the kernel applies the size inside the netlink send
 * and may freeze the device's queue there until in-flight I/O completes; that I/O is served
 * by the main thread, which must stay free to serve it.
 *
 * Protocol: posts `{ ready: true }` once loaded; then takes one ResizeRequest and posts one
 * ResizeReply. It must be listed as an extra entry point of every `bun build --compile` that
 * uses kernel/resize.ts (build.ts; test/vm/vm.test.ts for the probe).
 */
import { DstdError, errorMessage } from "../lib/errors.ts";
import { NbdControl, readDeviceSysfs } from "./device.ts";
import type { ResizeReply, ResizeRequest } from "./resize.ts";

declare const self: Worker;

async function resize(request: ResizeRequest): Promise<ResizeReply> {
  try {
    const control = await NbdControl.open({ timeoutMs: request.netlinkTimeoutMs });
    try {
      await control.resizeDevice(request);
    } finally {
      control.close();
    }
    return { ok: true, sizeBytes: readDeviceSysfs(request.index).sizeBytes };
  } catch (error) {
    if (error instanceof DstdError) return { ok: false, code: error.code, message: error.message, errno: error.errno };
    return { ok: false, code: "E_NETLINK", message: errorMessage(error), errno: null };
  }
}

self.onmessage = (event: MessageEvent<ResizeRequest>) => {
  void resize(event.data).then((reply) => self.postMessage(reply));
};
self.postMessage({ ready: true });

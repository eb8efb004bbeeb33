/**
 * @module test/storage/tree/serve — a port served as DST export "disk" on loopback, open to
 * 127.0.0.1 read-write: the remote leg or tree node of the tests that need real sockets.
 */
import { DstServer } from "../../../src/export/server.ts";
import { parseAllowRule, type AllowRule } from "../../../src/lib/acl.ts";
import type { StoragePort } from "../../../src/storage/port.ts";
import { listen, type Listener } from "../../../src/transport/tcp.ts";
import { recordingLog } from "../../helpers/log.ts";

const allow = [parseAllowRule("127.0.0.1/32:rw") as AllowRule];

/** A DST export of `port` on loopback (on TCP port `at`, default any free one; `epoch` default random); close the listener when done. */
export async function serve(port: StoragePort, at = 0, epoch?: number): Promise<{ listener: Listener; port: number }> {
  const server = new DstServer({ log: recordingLog(), exports: [{ name: "disk", description: "", port, readOnly: false, allow }], epoch });
  const listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: at }], server.accept);
  return { listener, port: (listener.bound[0] as { port: number }).port };
}

/**
 * @module daemon/export-control — the control socket of a `dstd export` node started with
 * `--state-dir DIR` (docs/replication.md §12): it answers `dstd replica status|pause|resume|
 * promote|demote` for the node's replicated exports, so the two-node case run with flags can
 * fail over (`promote --force`) like a `dstd up` node, and `dstd leg suspend|resume` for its
 * mirror legs (docs/tree.md "Suspending a leg for maintenance"). `dstd status`, `reload` and
 * `resize` are `dstd up`'s and are refused with that said; `dstd events` follows an empty stream.
 */
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { CONTROL_VERSION } from "../control/protocol.ts";
import { startControlServer, type ControlServer } from "../control/server.ts";
import { EventBus } from "../status/events.ts";
import { VERSION } from "../version.ts";
import { replicaRequest } from "./replica-control.ts";
import type { ReplicaHandle } from "./replica-node.ts";
import { legParams, type ExportNode } from "./export-node.ts";

/** Opened before the exports start (a second node on the same directory fails before it listens); `node` reads the node once it runs. */
export async function startExportControl(stateDir: string, node: () => ExportNode | null, log: Log): Promise<ControlServer> {
  const upOnly = (what: string) => () => Promise.reject(new DstdError("E_REQUEST", `${what} needs a dstd up node; this dstd export answers only dstd replica and dstd leg on its control socket`));
  return await startControlServer({
    stateDir,
    log,
    handlers: {
      hello: () => ({ node: "dstd export", version: VERSION, pid: process.pid, protocol: CONTROL_VERSION }),
      status: () => {
        throw new DstdError("E_REQUEST", "dstd status needs a dstd up node; this dstd export answers only dstd replica and dstd leg on its control socket");
      },
      reload: upOnly("dstd reload"),
      resize: upOnly("dstd resize"),
      leg: async (params) => {
        const { name, leg, action } = legParams(params);
        const running = node();
        if (running === null) throw new DstdError("E_STATE", "the exports are still starting; try again when they listen");
        const message = await running.holdLeg(name, leg, action);
        log.info(message);
        return { name, leg, action, message };
      },
      replica: (params) => replicaRequest(node()?.replicas ?? new Map<string, ReplicaHandle>(), params, log),
      events: new EventBus(),
    },
  });
}

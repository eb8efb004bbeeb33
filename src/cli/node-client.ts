/**
 * @module cli/node-client — what `dstd status`, `events` and `reload` share: which state
 * directory (hence which control socket) they talk to, and the connection to the node.
 * Precedence: --state-dir, then $DSTD_STATE_DIR, then --config's state_dir, then
 * /var/lib/dstd (the same rule as `dstd up` and `dstd attach`).
 */
import type { ArgsDef } from "citty";
import { loadConfigFile } from "../config/load.ts";
import { DEFAULT_STATE_DIR } from "../config/defaults.ts";
import { ControlClient } from "../control/client.ts";
import { controlSocketPath } from "../control/server.ts";
import { DstdError } from "../lib/errors.ts";

export const nodeArgs = {
  config: { type: "string", description: "config file (only its state_dir is read)", valueHint: "FILE" },
  "state-dir": { type: "string", description: "state directory of the node (default /var/lib/dstd or $DSTD_STATE_DIR)", valueHint: "DIR" },
} as const satisfies ArgsDef;

export function stateDirFrom(args: { config?: string; "state-dir"?: string }): string {
  if (args["state-dir"] !== undefined) return args["state-dir"];
  if (process.env.DSTD_STATE_DIR) return process.env.DSTD_STATE_DIR; // an empty variable counts as unset
  if (args.config !== undefined) return loadConfigFile(args.config).stateDir;
  return DEFAULT_STATE_DIR;
}

/** The running node's control connection, or a clear "no node" error. */
export async function requireNode(stateDir: string): Promise<ControlClient> {
  const path = controlSocketPath(stateDir);
  const client = await ControlClient.connect(path);
  if (client === null) throw new DstdError("E_NO_NODE", `no dstd up node is running with state directory ${stateDir} (nothing answers on ${path})`);
  return client;
}

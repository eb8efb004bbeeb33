/**
 * @module daemon/replica-control — the control socket's `replica` method (docs/replication.md
 * §12): `dstd replica status|pause|resume|promote|demote|resync` find the export's
 * ReplicaHandle and act on it. Params: { op, name?, fetch?, replay?, force?, full? }.
 */
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import type { PauseWhat, ReplicaHandle } from "./replica-node.ts";

export async function replicaRequest(handles: ReadonlyMap<string, ReplicaHandle>, params: Record<string, unknown>, log: Log): Promise<unknown> {
  const op = params.op;
  const name = params.name;
  if (name !== undefined && typeof name !== "string") throw new DstdError("E_REQUEST", "replica: name must be a string");
  if (op === "status") {
    const chosen = name === undefined ? [...handles.values()] : [find(handles, name)];
    return { replicas: chosen.map((h) => h.status()) };
  }
  if (typeof name !== "string") throw new DstdError("E_REQUEST", `replica ${String(op)} needs the export's name`);
  const handle = find(handles, name);
  const what: PauseWhat = params.fetch === true && params.replay !== true ? "fetch" : params.replay === true && params.fetch !== true ? "replay" : "both";
  let message: string;
  switch (op) {
    // pause and resume are logged here; promote, demote and resync log their role change
    // themselves (replica-node.ts, at WARN, also when not asked through this socket), so
    // logging their answer again here printed each on the node twice.
    case "pause":
      message = handle.pause(what);
      log.info(message);
      break;
    case "resume":
      message = handle.resume(what);
      log.info(message);
      break;
    case "promote":
      message = await handle.promote(params.force === true);
      break;
    case "demote":
      message = await handle.demote();
      break;
    case "resync":
      message = await handle.resync(params.full === true);
      break;
    default:
      throw new DstdError("E_REQUEST", `unknown replica operation ${JSON.stringify(op)}; use status, pause, resume, promote, demote or resync`);
  }
  return { message, status: handle.status() };
}

function find(handles: ReadonlyMap<string, ReplicaHandle>, name: string): ReplicaHandle {
  const handle = handles.get(name);
  if (handle === undefined) {
    const known = [...handles.keys()];
    throw new DstdError("E_USAGE", `no replicated export named '${name}' is running${known.length > 0 ? ` (replicated: ${known.join(", ")})` : " (no export of this node has [export.replication])"}`);
  }
  return handle;
}

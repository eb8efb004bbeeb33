/**
 * @module cli/replica — `dstd replica ACTION [NAME]`: see and steer the replicated exports of
 * the running node (dstd up) through its control socket (docs/replication.md §12).
 *   status [NAME] [--json]              role, generation, state and reason, lag, ETA, log, contact
 *   pause NAME [--fetch|--replay]       stop fetching and/or replay on a secondary (both by default)
 *   resume NAME [--fetch|--replay]
 *   promote NAME [--force], demote NAME, resync NAME [--full]
 */
import { defineCommand } from "citty";
import { DstdError } from "../lib/errors.ts";
import { formatSize } from "../lib/size.ts";
import type { ReplicaStatus } from "../daemon/replica-status.ts";
import { nodeArgs, requireNode, stateDirFrom } from "./node-client.ts";

const ACTIONS = ["status", "pause", "resume", "promote", "demote", "resync"] as const;

export default defineCommand({
  meta: { name: "replica", description: "Replication of the running node's exports: status [NAME] [--json], pause|resume NAME [--fetch|--replay], promote NAME [--force], demote NAME, resync NAME [--full]" },
  args: {
    ...nodeArgs,
    action: { type: "positional", description: ACTIONS.join(" | "), required: true },
    name: { type: "positional", description: "export name (status: all when omitted)", required: false },
    json: { type: "boolean", description: "status: machine-readable output" },
    fetch: { type: "boolean", description: "pause/resume: only fetching from the primary" },
    replay: { type: "boolean", description: "pause/resume: only replay into the disk" },
    force: { type: "boolean", description: "promote: fail over without the primary (starts a new generation)" },
    full: { type: "boolean", description: "resync: copy the whole disk instead of the regions written since the fork" },
  },
  async run({ args }) {
    const action = String(args.action);
    if (!(ACTIONS as readonly string[]).includes(action)) throw new DstdError("E_USAGE", `unknown action '${action}'; use ${ACTIONS.join(", ")}`);
    const name = args.name === undefined ? undefined : String(args.name);
    if (action !== "status" && name === undefined) throw new DstdError("E_USAGE", `dstd replica ${action} needs the export's NAME`);
    if ((args.fetch || args.replay) && action !== "pause" && action !== "resume") throw new DstdError("E_USAGE", "--fetch and --replay are for pause and resume");
    if (args.force && action !== "promote") throw new DstdError("E_USAGE", "--force is for promote");
    if (args.full && action !== "resync") throw new DstdError("E_USAGE", "--full is for resync");
    const client = await requireNode(stateDirFrom(args));
    try {
      const result = (await client.request("replica", { op: action, name, fetch: args.fetch === true, replay: args.replay === true, force: args.force === true, full: args.full === true })) as {
        replicas?: ReplicaStatus[];
        message?: string;
      };
      if (action === "status") {
        const replicas = result.replicas ?? [];
        process.stdout.write(args.json ? `${JSON.stringify({ replicas }, null, 2)}\n` : renderReplicas(replicas));
      } else process.stdout.write(`${result.message}\n`);
    } finally {
      client.close();
    }
  },
});

function renderReplicas(replicas: readonly ReplicaStatus[]): string {
  if (replicas.length === 0) return "no replicated exports (add [export.replication] to an export)\n";
  const lines: string[] = [];
  for (const r of replicas) {
    const reason = r.reason === null ? "" : ` — ${r.reason}`;
    lines.push(`${r.name}: ${r.role}, generation ${r.generation}, ${r.state}${reason}`);
    if (r.role === "secondary") {
      const eta = r.eta_seconds === null ? "unknown" : `${r.eta_seconds} s`;
      lines.push(`  peer ${r.peer}; applied seq ${r.seq} of ${r.primary_seq ?? "?"}; lag ${formatSize(r.lag_bytes)}, ${r.lag_seconds} s; ETA ${eta}`);
      const sync = r.sync;
      if (sync !== null) {
        const rate = sync.rate_bytes_per_second === null ? "rate unknown" : `${formatSize(sync.rate_bytes_per_second)}/s`;
        lines.push(`  sync ${sync.phase}: ${formatSize(sync.done_bytes)} of ${formatSize(sync.total_bytes)} (${formatSize(sync.moved_bytes)} of data moved), ${rate}, ETA ${sync.eta_seconds === null ? "unknown" : `${sync.eta_seconds} s`}; consistent at seq ${sync.consistent_at_seq}`);
      }
      lines.push(`  log copy ${formatSize(r.log_bytes)}; last contact ${r.last_contact_seconds === null ? "never" : `${r.last_contact_seconds} s ago`}${r.fetch_paused ? "; fetch paused" : ""}${r.replay_paused ? "; replay paused" : ""}`);
    } else {
      lines.push(`  seq ${r.seq}; log ${formatSize(r.log_bytes)} of ${formatSize(r.log_limit ?? 0)} (${r.mode}${r.dirty_regions > 0 ? `, ${r.dirty_regions} dirty regions` : ""})`);
      for (const s of r.secondaries) lines.push(`  secondary ${s.name}: applied seq ${s.applied}, ${s.last_contact_seconds === null ? "no fetch since this node started" : `last fetch ${s.last_contact_seconds} s ago`}${s.refused === null ? "" : ` — refused: ${s.refused}`}`);
      if (r.secondaries.length === 0) lines.push("  no secondary has fetched yet");
    }
  }
  return `${lines.join("\n")}\n`;
}

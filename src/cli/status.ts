/**
 * @module cli/status — `dstd status [--json]`: one view of this machine's dstd. When a
 * `dstd up` node answers on the control socket: the node, its services (export groups with
 * listeners and clients, attachments with link state and counters); in every case: the
 * attachments standalone `dstd attach` daemons recorded in the state directory (what
 * `dstd list` shows). The JSON is the versioned schema of docs/status.md ("dstd-status" 1).
 */
import { defineCommand } from "citty";
import { daemonAlive, listStates } from "../attach/state.ts";
import { ControlClient } from "../control/client.ts";
import { controlSocketPath } from "../control/server.ts";
import { STATUS_SCHEMA, STATUS_VERSION, type NodeInfo, type ServiceStatus, type StatusReport } from "../control/schema.ts";
import { formatDuration } from "../lib/duration.ts";
import { formatSize } from "../lib/size.ts";
import { nodeArgs, stateDirFrom } from "./node-client.ts";
import type { NodeSnapshot } from "../storage/tree/describe.ts";

export async function collectStatus(stateDir: string): Promise<StatusReport> {
  const client = await ControlClient.connect(controlSocketPath(stateDir));
  let node: NodeInfo | null = null;
  let services: ServiceStatus[] = [];
  if (client !== null) {
    try {
      const answer = (await client.request("status")) as { node: NodeInfo; services: ServiceStatus[] };
      node = answer.node;
      services = answer.services;
    } finally {
      client.close();
    }
  }
  const attachments = listStates(stateDir)
    .filter((s) => node === null || s.pid !== node.pid)
    .map((s) => ({ ...s, state: daemonAlive(s.pid) ? s.state : "daemon gone" }));
  return { schema: STATUS_SCHEMA, version: STATUS_VERSION, generatedAt: new Date().toISOString(), node, services, attachments };
}

/** Columns padded to the widest cell; the last column is not padded. */
function table(rows: string[][]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((row) => row.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd());
}

function age(since: string, now: number): string {
  const ms = Math.max(0, now - Date.parse(since));
  return formatDuration(ms < 60_000 ? Math.floor(ms / 1000) * 1000 : Math.floor(ms / 60_000) * 60_000);
}

function serviceDetail(s: ServiceStatus): string {
  const c = s.counters;
  const parts: string[] = [];
  if (s.export) {
    const l = s.export.listeners;
    if (l.dst.length) parts.push(`dst ${l.dst.join(" ")}`);
    if (l.nbd.length) parts.push(`nbd ${l.nbd.join(" ")}`);
    parts.push(`${s.export.connections.current} client${s.export.connections.current === 1 ? "" : "s"}`);
    parts.push(`${c.requests ?? 0} requests (${s.rates.requests ?? 0}/s)`);
    parts.push(`${formatSize(c.bytesIn ?? 0)} in, ${formatSize(c.bytesOut ?? 0)} out`);
    parts.push(`${c.refused ?? 0} refused, ${c.protocolErrors ?? 0} protocol errors`);
  }
  if (s.attach) {
    const a = s.attach;
    const size = a.sizeBytes === null ? "" : ` ${formatSize(a.sizeBytes)}${a.writable === false ? " ro" : a.writable ? " rw" : ""}`;
    parts.push(`${a.device ?? "(no device yet)"} ← ${a.url} link ${a.link}${size}`);
    parts.push(`inflight ${c.inflight ?? 0}, resends ${c.resends ?? 0}, reconnects ${c.reconnects ?? 0}, timeouts ${c.timeouts ?? 0}`);
  }
  if (s.state === "backoff" && s.lastError) parts.push(`last error: ${s.lastError}`);
  return parts.join("; ");
}

/** The human view (what `dstd status` prints without --json). */
/** One row per mirror leg anywhere in an export's tree (docs/tree.md "Leg states"). */
function mirrorLegRows(exportName: string, node: NodeSnapshot): string[][] {
  const rows: string[][] = [];
  for (const leg of node.legs ?? []) {
    if (node.kind === "mirror") {
      const resync = leg.resync ? `resync ${formatSize(leg.resync.doneBytes)} done, ${formatSize(leg.resync.remainingBytes)} to go` : "";
      const note = [resync, leg.state === "in-sync" ? "" : (leg.lastError ?? ""), leg.writeMostly ? "write-mostly" : ""].filter((x) => x !== "").join("; ");
      rows.push([exportName, leg.label, leg.state, leg.generation === null || leg.generation === undefined ? "-" : String(leg.generation), formatSize(leg.dirtyBytes ?? 0), note]);
    }
    if (leg.node !== null) rows.push(...mirrorLegRows(exportName, leg.node));
  }
  return rows;
}

export function renderStatus(report: StatusReport, stateDir: string, now = Date.now()): string {
  const out: string[] = [];
  const node = report.node;
  if (node === null) {
    out.push(`no dstd up node is running (nothing answers on ${controlSocketPath(stateDir)})`);
  } else {
    out.push(`node: dstd ${node.version}, pid ${node.pid}, up ${formatDuration(node.uptimeSeconds * 1000)}, config ${node.config} (generation ${node.generation})`);
    out.push(`      ${node.summary}`);
    out.push(`      control ${node.controlSocket}${node.metricsListen ? `, metrics http://${node.metricsListen}/metrics` : ""}`);
    if (node.lastReload && !node.lastReload.ok) out.push(`      last reload refused: ${node.lastReload.messages.join("; ")}`);
    if (report.services.length > 0) {
      out.push("");
      out.push(
        ...table([
          ["SERVICE", "STATE", "FOR", "RESTARTS", "DETAIL"],
          ...report.services.map((s) => [s.name, s.state, age(s.since, now), String(s.restarts), serviceDetail(s)]),
        ]),
      );
    }
    const exports = report.services.flatMap((s) => (s.export?.exports ?? []).map((e) => ({ e, group: s.name })));
    if (exports.length > 0) {
      out.push("");
      out.push(
        ...table([
          ["EXPORT", "BACKEND", "SIZE", "ACCESS", "ALLOW", "GROUP"],
          ...exports.map(({ e, group }) => [
            e.name,
            e.backend.path === null ? e.backend.kind : `${e.backend.kind} ${e.backend.path}`,
            e.backend.sizeBytes === null ? "-" : formatSize(e.backend.sizeBytes),
            e.readOnly ? "ro" : "rw",
            e.allow.length === 0 ? "(nobody)" : e.allow.join(" "),
            group,
          ]),
        ]),
      );
    }
    const legs = exports.flatMap(({ e }) => (e.tree === undefined ? [] : mirrorLegRows(e.name, e.tree)));
    if (legs.length > 0) {
      out.push("");
      out.push(...table([["EXPORT", "MIRROR LEG", "STATE", "GENERATION", "MISSING", "NOTE"], ...legs]));
    }
    const clients = report.services.flatMap((s) => (s.export?.connections.list ?? []).map((c) => ({ c, group: s.name })));
    if (clients.length > 0) {
      out.push("");
      out.push(
        ...table([
          ["CLIENT", "PROTOCOL", "GROUP", "FOR", "IN", "OUT"],
          ...clients.map(({ c, group }) => [c.peer, c.protocol, group, age(c.since, now), formatSize(c.bytesIn), formatSize(c.bytesOut)]),
        ]),
      );
      const hidden = report.services.reduce((n, s) => n + (s.export && s.export.connections.truncated ? s.export.connections.current - s.export.connections.list.length : 0), 0);
      if (hidden > 0) out.push(`(${hidden} more clients not listed)`);
    }
  }
  if (report.attachments.length > 0) {
    out.push("");
    if (node !== null) out.push("attachments of standalone dstd attach daemons:");
    out.push(
      ...table([
        ["DEVICE", "URL", "STATE", "PID", "INFLIGHT", "RESENDS", "RECONNECTS"],
        ...report.attachments.map((s) => [s.device, s.url, s.state, String(s.pid), String(s.counters.inflight), String(s.counters.resends), String(s.counters.reconnects)]),
      ]),
    );
  } else if (node === null) {
    out.push("no attachments");
  }
  return `${out.join("\n")}\n`;
}

export default defineCommand({
  meta: {
    name: "status",
    description: "Show the running dstd up node (services, exports, clients, attachments) and standalone attachments; --json for the versioned schema",
  },
  args: {
    ...nodeArgs,
    json: { type: "boolean", description: "machine-readable output (schema dstd-status, version 1: docs/status.md)" },
  },
  async run({ args }) {
    const stateDir = stateDirFrom(args);
    const report = await collectStatus(stateDir);
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : renderStatus(report, stateDir));
  },
});

/**
 * @module cli/list — `dstd list` / `dstd status`: the attachments recorded in the state
 * directory, with their daemon's live counters (updated every second by the daemon).
 */
import { daemonAlive, defaultStateDir, listStates } from "../attach/state.ts";
import { commonArgs, readRawConfig, validateMerged } from "./args.ts";
import { defineDstdCommand } from "./command.ts";

function rows(stateDir: string) {
  return listStates(stateDir).map((s) => ({
    ...s,
    state: daemonAlive(s.pid) ? s.state : "daemon gone",
  }));
}

export function makeListCommand(name: "list" | "status") {
  return defineDstdCommand({
    meta: { name, description: "Show attachments: device, URL, state, daemon pid, in-flight, resends, reconnects" },
    args: {
      ...commonArgs,
      json: { type: "boolean", description: "machine-readable output" },
      "state-dir": { type: "string", description: "attachment state directory", valueHint: "DIR" },
    },
    run({ args }) {
      const { raw, source, baseDir } = readRawConfig(args.config);
      const config = validateMerged(raw, source, baseDir);
      const list = rows(args["state-dir"] ?? defaultStateDir(config.stateDir));
      if (args.json) {
        process.stdout.write(`${JSON.stringify(list, null, 2)}\n`);
        return;
      }
      if (list.length === 0) {
        process.stdout.write("no attachments\n");
        return;
      }
      const header = ["DEVICE", "URL", "STATE", "PID", "INFLIGHT", "RESENDS", "RECONNECTS"];
      const table = [
        header,
        ...list.map((s) => [
          s.device,
          s.url,
          s.state,
          String(s.pid),
          String(s.counters.inflight),
          String(s.counters.resends),
          String(s.counters.reconnects),
        ]),
      ];
      const widths = header.map((_, i) => Math.max(...table.map((r) => r[i]!.length)));
      for (const row of table) process.stdout.write(`${row.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()}\n`);
    },
  });
}

export default makeListCommand("list");

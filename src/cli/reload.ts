/**
 * @module cli/reload — `dstd reload`: ask the running node to re-read its config and apply
 * the difference (as SIGHUP does), and wait for the outcome: what changed, or why nothing
 * did. Exit status 0 when applied, 2 when the new config was refused. It is what
 * systemd/dstd.service runs as ExecReload.
 */
import { defineCommand } from "citty";
import type { ReloadOutcome } from "../control/schema.ts";
import { DstdError } from "../lib/errors.ts";
import { nodeArgs, requireNode, stateDirFrom } from "./node-client.ts";

export default defineCommand({
  meta: { name: "reload", description: "Make the running node re-read its config and apply the changes (like SIGHUP), and report them" },
  args: {
    ...nodeArgs,
    json: { type: "boolean", description: "print the outcome as JSON" },
  },
  async run({ args }) {
    const client = await requireNode(stateDirFrom(args));
    let outcome: ReloadOutcome;
    try {
      outcome = (await client.request("reload")) as ReloadOutcome;
    } finally {
      client.close();
    }
    if (args.json) process.stdout.write(`${JSON.stringify(outcome, null, 2)}\n`);
    if (!outcome.ok) throw new DstdError("E_CONFIG", `reload refused, nothing changed:\n${outcome.messages.join("\n")}`);
    if (args.json) return;
    const lines = outcome.changes.length === 0 ? ["nothing changed"] : outcome.changes;
    process.stdout.write(`reloaded (generation ${outcome.generation}):\n${lines.map((l) => `  ${l}\n`).join("")}`);
    for (const message of outcome.messages) process.stderr.write(`dstd: ${message}\n`);
  },
});

/**
 * @module cli/leg — `dstd leg suspend|resume NAME LEG`: take a mirror leg of an export of the
 * running node (dstd up) out for maintenance and bring it back (docs/tree.md "Suspending a leg
 * for maintenance"). While suspended the leg gets nothing, is not probed, and stays out across
 * restarts; what it misses is recorded, and resume resyncs only that. Resume also tells the
 * mirror that a leg it refused (foreign, diverged, damaged, too small) was repaired: it is
 * judged again at once, and the command fails saying why when it is still refused. LEG is the
 * leg's label as `dstd status` shows it (its configured `name`, URL or path), or its position
 * when the export has one mirror.
 */
import { defineCommand } from "citty";
import { DstdError } from "../lib/errors.ts";
import { nodeArgs, requireNode, stateDirFrom } from "./node-client.ts";

const ACTIONS = ["suspend", "resume"] as const;

export default defineCommand({
  meta: { name: "leg", description: "Suspend a mirror leg of the running node for maintenance, or resume it: suspend|resume NAME LEG" },
  args: {
    ...nodeArgs,
    action: { type: "positional", description: ACTIONS.join(" | "), required: true },
    name: { type: "positional", description: "export name", required: true },
    leg: { type: "positional", description: "the leg's label in dstd status (name, URL or path), or its position in the export's one mirror", required: true },
  },
  async run({ args }) {
    const action = String(args.action);
    if (!(ACTIONS as readonly string[]).includes(action)) throw new DstdError("E_USAGE", `unknown action '${action}'; use ${ACTIONS.join(" or ")}`);
    const client = await requireNode(stateDirFrom(args));
    try {
      const result = (await client.request("leg", { name: String(args.name), leg: String(args.leg), action })) as { message: string };
      process.stdout.write(`${result.message}\n`);
    } finally {
      client.close();
    }
  },
});

/**
 * @module cli/events — `dstd events [--follow] [--since SEQ]`: the running node's events as
 * JSON lines (docs/status.md "Events"). Without --follow: the events the node still keeps,
 * then exit. With --follow: new events as they happen (plus kept ones after --since), until
 * the node stops or Ctrl-C.
 */
import { defineCommand } from "citty";
import { DstdError } from "../lib/errors.ts";
import type { NodeEvent } from "../status/events.ts";
import { nodeArgs, requireNode, stateDirFrom } from "./node-client.ts";

export default defineCommand({
  meta: { name: "events", description: "Print the running node's events as JSON lines; --follow streams them as they happen" },
  args: {
    ...nodeArgs,
    follow: { type: "boolean", alias: "f", description: "keep streaming new events until the node stops (or Ctrl-C)" },
    since: { type: "string", description: "also print kept events after this sequence number (0: all kept)", valueHint: "SEQ" },
  },
  async run({ args }) {
    let since: number | null = null;
    if (args.since !== undefined) {
      since = /^\d+$/.test(args.since) ? Number(args.since) : NaN;
      if (!Number.isSafeInteger(since) || since < 0) throw new DstdError("E_USAGE", `--since: '${args.since}' is not a sequence number (0 or more)`);
    }
    const client = await requireNode(stateDirFrom(args));
    const print = (event: NodeEvent) => process.stdout.write(`${JSON.stringify(event)}\n`);
    if (!args.follow) {
      const answer = (await client.request("events", { since: since ?? 0 })) as { events: NodeEvent[] };
      for (const event of answer.events) print(event);
      client.close();
      return;
    }
    const ended = new Promise<string | null>((resolve) => {
      client.onClose = resolve;
      process.once("SIGINT", () => resolve("interrupted"));
      process.once("SIGTERM", () => resolve("interrupted"));
    });
    client.onEvent = print;
    const answer = (await client.request("events", { follow: true, ...(since === null ? {} : { since }) })) as { events: NodeEvent[] };
    for (const event of answer.events) print(event);
    const reason = await ended;
    client.close();
    if (reason !== "interrupted") process.stderr.write(`dstd: the node closed the event stream${reason ? ` (${reason})` : ""}\n`);
  },
});

/**
 * @module cli/resize — `dstd resize NAME SIZE`: grow (or, with --allow-shrink, shrink) an
 * export of the running node (dstd up) while its clients stay connected. DST clients learn the
 * new size in band (SIZE_NOTICE); NBD clients see it on their next connection. A block device
 * export follows a device that grew underneath (the size given must be its new size).
 */
import { defineCommand } from "citty";
import { DstdError } from "../lib/errors.ts";
import { parseSize } from "../lib/size.ts";
import { nodeArgs, requireNode, stateDirFrom } from "./node-client.ts";

export default defineCommand({
  meta: { name: "resize", description: "Grow (or with --allow-shrink shrink) an export of the running node; clients stay connected" },
  args: {
    ...nodeArgs,
    name: { type: "positional", description: "export name", required: true },
    size: { type: "positional", description: "new size, e.g. 20GiB", required: true },
    "allow-shrink": { type: "boolean", description: "allow a smaller size (refused while data lies past the new end)" },
    force: { type: "boolean", description: "with --allow-shrink: shrink even though data lies past the new end" },
  },
  async run({ args }) {
    const size = parseSize(String(args.size));
    if (typeof size === "string") throw new DstdError("E_USAGE", `SIZE: ${size}`);
    if (args.force && !args["allow-shrink"]) throw new DstdError("E_USAGE", "--force only makes sense with --allow-shrink");
    const client = await requireNode(stateDirFrom(args));
    try {
      const result = (await client.request("resize", {
        name: String(args.name),
        size,
        allowShrink: args["allow-shrink"] === true,
        force: args.force === true,
      })) as { message: string };
      process.stdout.write(`${result.message}\n`);
    } finally {
      client.close();
    }
  },
});

/** @module cli/check-config — `dstd check-config FILE`: validate without starting anything. */
import { defineCommand } from "citty";
import { loadConfigFile } from "../config/load.ts";

export default defineCommand({
  meta: { name: "check-config", description: "Validate a config file and print what it defines" },
  args: { file: { type: "positional", description: "TOML config file", required: true } },
  run({ args }) {
    const config = loadConfigFile(args.file);
    const exports = config.exports.map((e) => e.name).join(", ") || "none";
    process.stdout.write(
      `${args.file}: ok (${config.exports.length} export(s): ${exports}; ${config.attaches.length} attachment(s); ${config.keys.length} key(s))\n`,
    );
  },
});

/**
 * @module cli/check-config — `dstd check-config FILE`: validate without starting anything.
 * The schema (config/load.ts) first, then what export and attach would refuse on this
 * machine (cli/preflight.ts). Problems: one line each, exit 2. Warnings: one line each,
 * still exit 0 (the file is valid; it may be meant for another machine or user).
 */
import { loadConfigFile } from "../config/load.ts";
import { DstdError } from "../lib/errors.ts";
import { defineDstdCommand } from "./command.ts";
import { preflight } from "./preflight.ts";

export default defineDstdCommand({
  meta: {
    name: "check-config",
    description:
      "Validate a config file and print what it defines. Also checks what export and attach would refuse here: key files (missing, readable by others, for another identity), export files and devices, RBD images' librbd, ceph_conf and ceph_keyring (missing or unreadable); and warns about listen addresses this user cannot bind now and allow rules that can never match.",
  },
  args: { file: { type: "positional", description: "TOML config file", required: true } },
  examples: ["dstd check-config /etc/dstd.toml", "dstd check-config examples/dstd.toml"],
  async run({ args }) {
    const config = loadConfigFile(args.file);
    const { problems, warnings } = await preflight(config);
    for (const warning of warnings) process.stderr.write(`${args.file}: warning: ${warning}\n`);
    if (problems.length > 0) {
      const lines = problems.map((problem) => `${args.file}: ${problem}`);
      throw new DstdError("E_CONFIG", `${lines.join("\n")}\n${args.file}: ${problems.length} problem(s): export or attach would refuse to start`);
    }
    const exports = config.exports.map((e) => e.name).join(", ") || "none";
    const warned = warnings.length > 0 ? `; ${warnings.length} warning(s) above` : "";
    process.stdout.write(
      `${args.file}: ok (${config.exports.length} export(s): ${exports}; ${config.attaches.length} attachment(s); ${config.keys.length} key(s)${warned})\n`,
    );
  },
});

/** @module cli/version — `dstd version` (also `dstd --version`): the version, one line on stdout. */
import { VERSION } from "../version.ts";
import { defineDstdCommand } from "./command.ts";

export default defineDstdCommand({
  meta: { name: "version", description: "Print the version of this dstd executable." },
  args: {},
  run() {
    process.stdout.write(`${VERSION}\n`);
  },
});

/** @module cli/help — `dstd help [COMMAND]`: the root help, or one command's (as `dstd COMMAND --help`). */
import { defineDstdCommand } from "./command.ts";
import { commandUsage, findCommand, rootUsage } from "./run.ts";

export default defineDstdCommand({
  meta: { name: "help", description: "Show the list of commands, or the options of one command." },
  args: { command: { type: "positional", description: "the command to explain", required: false } },
  examples: ["dstd help copy"],
  async run({ args }) {
    if (args.command === undefined) process.stdout.write(rootUsage(process.stdout));
    else process.stdout.write(await commandUsage(findCommand(args.command), process.stdout));
  },
});

#!/usr/bin/env bun
/**
 * @module main — entry point of the `dstd` executable. Errors a user can cause (DstdError)
 * print one clear message and exit 1; anything else is a bug and prints its stack.
 */
import { runCommand, showUsage } from "citty";
import { main } from "./cli/index.ts";
import { DstdError } from "./lib/errors.ts";

const argv = process.argv.slice(2);

async function run(): Promise<number> {
  if (argv.length === 0) {
    await showUsage(main);
    return 0;
  }
  if (argv[0] === "--version" || argv[0] === "-v") {
    process.stdout.write(`${main.meta && "version" in (main.meta as object) ? (main.meta as { version: string }).version : ""}\n`);
    return 0;
  }
  if (argv.includes("--help") || argv.includes("-h")) {
    const loader = (main.subCommands as Record<string, () => Promise<never>>)[argv[0]!];
    if (loader) await showUsage(await loader(), main);
    else await showUsage(main);
    return 0;
  }
  try {
    await runCommand(main, { rawArgs: argv });
    return 0;
  } catch (error) {
    if (error instanceof DstdError || (error as { name?: string })?.name === "CLIError") {
      process.stderr.write(`dstd: ${(error as Error).message}\n`);
      if ((error as { code?: string }).code === "E_UNKNOWN_COMMAND" || (error as { code?: string }).code === "EARG") {
        await showUsage(main);
      }
      return (error as { code?: string }).code === "E_CONFIG" || (error as { code?: string }).code === "E_USAGE" ? 2 : 1;
    }
    process.stderr.write(`dstd: ${(error as Error)?.stack ?? String(error)}\n`);
    return 1;
  }
}

process.exitCode = await run();
// Daemons return from run() only after they stopped; make sure nothing keeps us alive.
process.exit(process.exitCode);

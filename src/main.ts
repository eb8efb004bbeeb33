#!/usr/bin/env bun
/**
 * @module main — entry point of the `dstd` executable: run the command line (cli/run.ts) and
 * exit with its status. A command that moves data first re-executes itself with the
 * allocator's option set (sys/allocator.ts), before it opens anything — and before the rest
 * of dstd is loaded (cli/run.ts is imported only afterwards), so the first image costs little.
 */
import { DATA_PATH_COMMANDS, keepFreedPages } from "./sys/allocator.ts";

if (DATA_PATH_COMMANDS.has(process.argv[2] ?? "")) keepFreedPages();
const { runCli } = await import("./cli/run.ts");
process.exitCode = await runCli(process.argv.slice(2));
// Daemons return from runCli only after they stopped; make sure nothing keeps us alive.
process.exit(process.exitCode);

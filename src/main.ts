#!/usr/bin/env bun
/**
 * @module main — entry point of the `dstd` executable: run the command line (cli/run.ts) and
 * exit with its status.
 */
import { runCli } from "./cli/run.ts";

process.exitCode = await runCli(process.argv.slice(2));
// Daemons return from runCli only after they stopped; make sure nothing keeps us alive.
process.exit(process.exitCode);

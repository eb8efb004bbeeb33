/**
 * @module cli/run — from argv to an exit status: find the command, parse its arguments
 * strictly (cli/parse.ts), run it, and turn what it throws into one clear message.
 *
 * Exit status: 0 success; 2 a usage or configuration mistake (what was typed or written is
 * wrong: nothing was started); 1 a runtime failure (the network, the disk, a peer's refusal).
 * No stack trace reaches the user unless `--log-level debug` (or trace) was given.
 */
import { DstdError } from "../lib/errors.ts";
import { useNativeGcm } from "../crypto/aead.ts";
import { loadNativeGcm } from "../sys/libcrypto.ts";
import { VERSION } from "../version.ts";
import type { DstdCommand } from "./command.ts";
import { COMMANDS } from "./index.ts";
import { nearestFlag, parseCommandLine, UsageError } from "./parse.ts";
import { outputOf, renderCommandUsage, renderRootUsage } from "./usage.ts";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Error codes that mean "what was typed or written is wrong": exit 2. */
const USAGE_CODES = new Set(["E_USAGE", "E_CONFIG"]);

export function rootUsage(stream: { isTTY?: boolean; columns?: number }): string {
  const rows = Object.entries(COMMANDS).map(([name, entry]): [string, string] => [name, entry.summary]);
  return renderRootUsage(VERSION, rows, outputOf(stream));
}

export async function commandUsage(name: string, stream: { isTTY?: boolean; columns?: number }): Promise<string> {
  const command = await COMMANDS[name]!.load();
  const meta = (command.meta ?? {}) as { description?: string };
  return renderCommandUsage(name, command, meta.description ?? COMMANDS[name]!.summary, outputOf(stream));
}

/** The command named `name`, or a UsageError suggesting the nearest one. */
export function findCommand(name: string): string {
  if (Object.hasOwn(COMMANDS, name)) return name;
  const guess = nearestFlag(name, Object.keys(COMMANDS));
  const hint = guess === null ? "" : ` (did you mean '${guess}'?)`;
  throw new UsageError(`unknown command '${name}'${hint}; run 'dstd help' for the list`);
}

/** `--log-level debug|trace` anywhere on the line: errors then show their stack. */
function debugRequested(argv: readonly string[]): boolean {
  for (let i = 0; i < argv.length; i++) {
    const token = argv[i]!;
    const value = token === "--log-level" ? argv[i + 1] : token.startsWith("--log-level=") ? token.slice(12) : undefined;
    if (value === "debug" || value === "trace") return true;
  }
  return false;
}

function report(error: unknown, where: string, debug: boolean): number {
  const prefix = `dstd${where ? ` ${where}` : ""}: `;
  if (error instanceof DstdError) {
    process.stderr.write(`${prefix}${error.message}\n`);
    if (debug && error.stack) process.stderr.write(`${error.stack}\n`);
    return USAGE_CODES.has(error.code) ? EXIT_USAGE : EXIT_FAILURE;
  }
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`${prefix}${message}\n`);
  if (debug) process.stderr.write(`${error instanceof Error ? error.stack : ""}\n`);
  else process.stderr.write(`${prefix}this is unexpected: please report it; --log-level debug shows where it happened\n`);
  return EXIT_FAILURE;
}

export async function runCli(argv: readonly string[]): Promise<number> {
  // AES-256-GCM into our own buffers (sys/libcrypto.ts); node:crypto when libcrypto is missing.
  // DSTD_NATIVE_GCM=0 keeps node:crypto (to compare the two).
  if (process.env.DSTD_NATIVE_GCM !== "0") useNativeGcm(loadNativeGcm);
  const debug = debugRequested(argv);
  const first = argv[0];
  if (first === undefined) {
    process.stderr.write(rootUsage(process.stderr));
    return EXIT_USAGE;
  }
  if (first === "--help" || first === "-h") {
    process.stdout.write(rootUsage(process.stdout));
    return EXIT_OK;
  }
  if (first === "--version" || first === "-V" || first === "-v") {
    process.stdout.write(`${VERSION}\n`);
    return EXIT_OK;
  }
  let name = "";
  try {
    if (first.startsWith("-")) {
      throw new UsageError(`'${first}' before the command: write dstd COMMAND [OPTIONS] (run 'dstd help' for the commands)`);
    }
    name = findCommand(first);
    const command: DstdCommand = await COMMANDS[name]!.load();
    const parsed = parseCommandLine(argv.slice(1), command, name);
    if (parsed.help) {
      process.stdout.write(await commandUsage(name, process.stdout));
      return EXIT_OK;
    }
    // A command may return its own status (an interrupted copy: 130, as shells report SIGINT).
    const status: unknown = await command.run?.({ args: parsed.args as never, rawArgs: parsed.rawArgs, cmd: command });
    return typeof status === "number" ? status : EXIT_OK;
  } catch (error) {
    const status = report(error, name, debug);
    if (error instanceof UsageError && error.showUsage && name !== "") {
      process.stderr.write(`\n${await commandUsage(name, process.stderr)}`);
    }
    return status;
  }
}

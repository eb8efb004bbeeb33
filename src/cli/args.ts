/**
 * @module cli/args — argument fragments shared by commands, and the few things citty does
 * not do for us: repeatable flags (`--listen A --listen B`) and turning config issues
 * about command-line values into messages that name the flag.
 */
import type { ArgsDef } from "citty";
import { formatIssues, readConfigFile } from "../config/load.ts";
import type { Config, ConfigIssue } from "../config/types.ts";
import { validateConfig } from "../config/validate.ts";
import { DstdError } from "../lib/errors.ts";
import { createLog, isLogLevel, LOG_LEVELS, type Log } from "../lib/log.ts";

export const commonArgs = {
  config: { type: "string", description: "TOML config file (flags override it)", valueHint: "FILE" },
  "log-level": { type: "string", description: "error | warn | info | debug | trace", valueHint: "LEVEL" },
} as const satisfies ArgsDef;

/** Every value of a repeatable flag, in order: `--allow A --allow=B` → ["A", "B"]. */
export function repeated(rawArgs: readonly string[], flag: string): string[] {
  const values: string[] = [];
  for (let i = 0; i < rawArgs.length; i++) {
    const arg = rawArgs[i]!;
    if (arg === `--${flag}` && i + 1 < rawArgs.length) values.push(rawArgs[++i]!);
    else if (arg.startsWith(`--${flag}=`)) values.push(arg.slice(flag.length + 3));
  }
  return values;
}

/** Raw TOML of --config (or {}), for merging with flags before validation (config/load.ts reads it). */
export function readRawConfig(path: string | undefined): { raw: Record<string, unknown>; source: string; baseDir: string | null } {
  if (!path) return { raw: {}, source: "command line", baseDir: null };
  const { raw, baseDir } = readConfigFile(path);
  return { raw, source: path, baseDir };
}

/**
 * Validate merged input. Issues in the table built from flags (`cliExportIndex`) are
 * reported with the flag name: "export[0].size" → "--size".
 */
export function validateMerged(raw: unknown, source: string, baseDir: string | null, cliExportIndex = -1): Config {
  const result = validateConfig(raw, { baseDir });
  if ("config" in result) return result.config;
  const fromFlags = (issue: ConfigIssue) => issue.path.startsWith(`export[${cliExportIndex}].`);
  const flagIssues = result.issues.filter(fromFlags).map((issue) => ({
    path: `--${issue.path.slice(`export[${cliExportIndex}].`.length).replace(/\[\d+\]$/, "").replaceAll("_", "-")}`,
    message: issue.message,
  }));
  const fileIssues = result.issues.filter((issue) => !fromFlags(issue));
  const lines = [
    ...(flagIssues.length ? [formatIssues(flagIssues, "command line")] : []),
    ...(fileIssues.length ? [formatIssues(fileIssues, source)] : []),
  ];
  throw new DstdError("E_CONFIG", lines.join("\n"));
}

export function logFromArgs(level: string | undefined, fallback: string, tag?: string): Log {
  const chosen = level ?? fallback;
  if (!isLogLevel(chosen)) throw new DstdError("E_USAGE", `--log-level: '${chosen}' is not one of ${LOG_LEVELS.join(", ")}`);
  return createLog(chosen, tag);
}

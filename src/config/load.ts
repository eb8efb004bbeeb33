/**
 * @module config/load — the only place configuration touches the filesystem and the only TOML
 * reader: read the file, Bun.TOML.parse it, validateConfig it. Every failure is one
 * DstdError("E_CONFIG") whose message is ready to print: one line per problem, each prefixed
 * by the file name ("dstd.toml: export[1].size: ..."). Never returns a half-valid config.
 * Commands that merge flags into the file's tables first take the raw tables from
 * readConfigFile and validate the merge themselves (cli/args.ts).
 */
import { readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { DstdError, errorMessage } from "../lib/errors.ts";
import type { Config, ConfigIssue, ValidateOptions } from "./types.ts";
import { validateConfig } from "./validate.ts";

/** A config file larger than this is surely not a config file (and would be slow to scan). */
export const CONFIG_FILE_MAX = 1024 * 1024;
/** Lines scanned to locate a TOML syntax error (Bun's error has no position). */
const SYNTAX_SCAN_LINES = 5000;

/** E_CONFIG carrying the structured issues too, for `--json` output and tests. */
export class ConfigError extends DstdError {
  readonly issues: readonly ConfigIssue[];
  constructor(message: string, issues: readonly ConfigIssue[] = [], cause?: unknown) {
    super("E_CONFIG", message, { errno: 22, cause });
    this.name = "ConfigError";
    this.issues = issues;
  }
}

/** Read, parse and validate a config file; relative paths in it are relative to its folder. */
export function loadConfigFile(path: string): Config {
  const { raw, baseDir } = readConfigFile(path);
  return validateOrThrow(raw, path, { baseDir });
}

/**
 * Read and parse a config file without validating it: its tables as TOML gives them, and the
 * folder its relative paths start from. Throws ConfigError when it cannot be read or parsed.
 */
export function readConfigFile(path: string): { raw: Record<string, unknown>; baseDir: string } {
  const raw = parseToml(readConfigText(path), path);
  return { raw, baseDir: dirname(resolve(path)) };
}

function readConfigText(path: string): string {
  try {
    const stat = statSync(path);
    if (!stat.isFile()) throw new ConfigError(`${path}: not a regular file`);
    if (stat.size > CONFIG_FILE_MAX) {
      throw new ConfigError(`${path}: ${stat.size} bytes is too large for a config file`);
    }
    return readFileSync(path, "utf8");
  } catch (error) {
    if (error instanceof ConfigError) throw error;
    throw new ConfigError(`${path}: cannot read config file: ${describeFsError(error)}`, [], error);
  }
}

function describeFsError(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ENOENT") return "no such file";
  if (code === "EACCES" || code === "EPERM") return "permission denied";
  if (code === "EISDIR") return "is a directory";
  return errorMessage(error);
}

/**
 * Parse and validate config text. `source` names it in messages (the file path, or e.g.
 * "--config-text"). Throws ConfigError listing every issue; returns a frozen Config.
 */
export function parseConfigText(
  text: string,
  source: string,
  options: ValidateOptions = {},
): Config {
  return validateOrThrow(parseToml(text, source), source, options);
}

/** Bun.TOML.parse, with a syntax error located and named by `source`. */
function parseToml(text: string, source: string): Record<string, unknown> {
  try {
    return Bun.TOML.parse(text) as Record<string, unknown>;
  } catch (error) {
    const message = tomlMessage(error);
    const line = locateSyntaxError(text, message);
    const where = line === null ? "" : ` line ${line}:`;
    throw new ConfigError(`${source}:${where} invalid TOML: ${message}`, [], error);
  }
}

function validateOrThrow(raw: unknown, source: string, options: ValidateOptions): Config {
  const result = validateConfig(raw, options);
  if ("config" in result) return result.config;
  throw new ConfigError(formatIssues(result.issues, source), result.issues);
}

/** One line per issue: "source: path: message" ("source: message" for whole-file issues). */
export function formatIssues(issues: readonly ConfigIssue[], source: string): string {
  return issues
    .map((issue) => `${source}: ${issue.path === "" ? "" : `${issue.path}: `}${issue.message}`)
    .join("\n");
}

function tomlMessage(error: unknown): string {
  return errorMessage(error).replace(/^TOML Parse error:\s*/, "");
}

/**
 * Bun.TOML.parse reports no position, so find the first line at which parsing the text up
 * to that line fails with the same message. An unterminated string or array makes earlier
 * prefixes fail with a different message, which is why the message must match. Returns
 * null if no line reproduces it (or the file is too long to scan).
 */
export function locateSyntaxError(text: string, message: string): number | null {
  const lines = text.split("\n");
  if (lines.length > SYNTAX_SCAN_LINES) return null;
  for (let count = 1; count <= lines.length; count++) {
    try {
      Bun.TOML.parse(lines.slice(0, count).join("\n"));
    } catch (error) {
      if (tomlMessage(error) === message) return count;
    }
  }
  return null;
}

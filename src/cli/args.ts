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
import { useRecordLanes } from "../crypto/record.ts";
import { CryptoPool } from "../transport/crypto-pool.ts";

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
 * reported with the flag name: "export[0].size" → "--size". When flags changed an export of
 * the file, `flagKeys` are the keys they set: only issues under those name a flag, the
 * others are the file's.
 */
export function validateMerged(raw: unknown, source: string, baseDir: string | null, cliExportIndex = -1, flagKeys: ReadonlySet<string> | null = null): Config {
  const result = validateConfig(raw, { baseDir });
  if ("config" in result) return result.config;
  const prefix = `export[${cliExportIndex}].`;
  const fromFlags = (issue: ConfigIssue) => issue.path.startsWith(prefix) && (flagKeys === null || flagKeys.has(issue.path.slice(prefix.length).split(/[.[]/)[0]!));
  const seen = new Set<string>();
  const flagIssues = result.issues
    .filter(fromFlags)
    .map((issue) => ({ path: flagOf(issue.path.slice(`export[${cliExportIndex}].`.length)), message: issue.message }))
    .filter((issue) => !seen.has(`${issue.path}\n${issue.message}`) && seen.add(`${issue.path}\n${issue.message}`));
  const fileIssues = result.issues.filter((issue) => !fromFlags(issue));
  const lines = [
    ...(flagIssues.length ? [formatIssues(flagIssues, "command line")] : []),
    ...(fileIssues.length ? [formatIssues(fileIssues, source)] : []),
  ];
  throw new DstdError("E_CONFIG", lines.join("\n"));
}

/**
 * The flag that set a key of the export table built from flags: "size" → "--size"; the tree
 * `dstd export --mirror/--linear/--stripe` builds (cli/export.ts treeFromFlags) by its flags:
 * "tree.chunk" → "--stripe-chunk", "tree.linear[1].size" → "--size" (every leg has it),
 * "tree.mirror[2]" → "--mirror (leg 3)".
 */
function flagOf(key: string): string {
  if (key === "tree.chunk") return "--stripe-chunk";
  // A flag's read_only is a boolean, never the wrong type: its one issue is false on an RBD snapshot.
  if (key === "read_only") return "--no-read-only";
  // [export.replication] keys come from --log-dir, --log-size, --replica-of/--peer, --key-file…
  const replication = /^replication\.(\w+)/.exec(key)?.[1];
  if (replication !== undefined) return replication === "peer" ? "--replica-of or --peer" : `--${replication.replaceAll("_", "-")}`;
  const leg = /^tree\.(mirror|linear|stripe)(?:\[(\d+)\](?:\.(.*))?)?$/.exec(key);
  if (leg !== null) {
    const [, kind, index, rest] = leg;
    if (rest === "size") return "--size";
    return index === undefined ? `--${kind}` : `--${kind} (leg ${Number(index) + 1}${rest === undefined ? "" : `, ${rest}`})`;
  }
  return `--${key.replace(/\[\d+\]$/, "").replace(/^tree\./, "").replaceAll("_", "-")}`;
}

export function logFromArgs(level: string | undefined, fallback: string, tag?: string): Log {
  const chosen = level ?? fallback;
  if (!isLogLevel(chosen)) throw new DstdError("E_USAGE", `--log-level: '${chosen}' is not one of ${LOG_LEVELS.join(", ")}`);
  return createLog(chosen, tag);
}

/** `--crypto-threads N` of the commands that seal and open records (copy, attach, export, up). */
export const cryptoArgs = {
  "crypto-threads": {
    type: "string",
    description: "worker threads sealing and opening AES-256-GCM records; 0 keeps them on the event loop (default: crypto_threads of --config, else 0)",
    valueHint: "N",
  },
} as const satisfies ArgsDef;

/** Put `--crypto-threads` into the raw config (flags override the file; the validator bounds it). */
export function mergeCryptoThreads(raw: Record<string, unknown>, flag: string | undefined): void {
  if (flag === undefined) return;
  if (!/^\d+$/.test(flag)) throw new DstdError("E_USAGE", `--crypto-threads: '${flag}' is not a whole number (0 keeps crypto on the event loop)`);
  raw.crypto_threads = Number(flag);
}

/**
 * Start the crypto pool of `crypto_threads` workers and route every new AES-256-GCM channel
 * through it (crypto/record.ts useRecordLanes); nothing with 0. A pool that cannot start (no
 * libcrypto in the worker) fails the command: the operator asked for threads.
 */
export async function startCryptoThreads(threads: number, log: Log): Promise<CryptoPool | null> {
  if (threads === 0) return null;
  let pool: CryptoPool;
  try {
    pool = await CryptoPool.start(threads, {
      onFailure: (reason) => log.error(`${reason}: connections with records in the crypto pool are closed; new ones seal and open on the event loop`),
    });
  } catch (error) {
    throw new DstdError("E_CRYPTO", `crypto_threads = ${threads}: ${error instanceof Error ? error.message : String(error)}`);
  }
  useRecordLanes((key, role, direction, owner) => pool.lane(key, role, direction, owner));
  log.debug(`crypto: ${threads} worker thread${threads === 1 ? "" : "s"}, ${pool.slots} slots of ${pool.slotBytes} bytes`);
  return pool;
}

/**
 * @module cli/attach — `dstd attach [URL]`: make a remote export usable locally, with dstd in
 * the data path. By default it becomes a kernel block device (/dev/nbdN, attach/attachment.ts);
 * `--nbd-listen ADDR` serves it as a standard NBD endpoint instead (machines without the kernel
 * NBD driver). Settings come from flags, the matching `[[attach]]` entry of --config (or the only
 * one, when no URL is given), then `[client]`.
 *
 * A foreground daemon for service managers. Signals:
 *   SIGTERM, SIGINT  detach: flush, NBD_CMD_DISCONNECT (the device goes away), exit 0
 *   SIGUSR2          handover: flush and exit 0 leaving the device attached; the next
 *                    `dstd attach` of it resumes it (upgrades). A flush the export does not
 *                    confirm keeps it serving (logged; SIGUSR2 again later). SIGKILL leaves it attached too.
 *   SIGHUP           re-read the config; reliability settings cannot change in a running
 *                    engine, so changes are reported with how to apply them (restart: no unmap)
 */
import { loadKeyFile } from "../crypto/keys.ts";
import { attachKernel, startNbdAttach, type KernelAttachNode } from "../daemon/attach-node.ts";
import { defaultStateDir } from "../attach/state.ts";
import type { AttachmentEnd } from "../attach/attachment.ts";
import { DEFAULT_ATTACH_CONNECTIONS, LIMITS } from "../config/defaults.ts";
import type { AttachConfig, Config, Reliability } from "../config/types.ts";
import { formatDuration, parseDuration } from "../lib/duration.ts";
import { formatSize } from "../lib/size.ts";
import { formatExportUrl, NBD_DEFAULT_PORT, parseExportUrl, parseListenAddress, type ExportUrl } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";
import { commonArgs, cryptoArgs, logFromArgs, mergeCryptoThreads, readRawConfig, startCryptoThreads, validateMerged } from "./args.ts";
import { waitForSignal } from "./signals.ts";
import { defineDstdCommand } from "./command.ts";

const DEFAULT_DEAD_CONN_TIMEOUT_SEC = 120;

export default defineDstdCommand({
  meta: {
    name: "attach",
    description:
      "Attach a remote export as /dev/nbdN (or serve it over NBD with --nbd-listen). Runs until detached: SIGTERM detaches (the device goes away), SIGUSR2 or SIGKILL leave the device for the next `dstd attach` of it to resume",
  },
  examples: [
    "dstd attach dst://server/disk --key-file alice.key",
    "dstd attach dst://server/disk --nbd-listen unix:/run/dstd-disk.sock",
  ],
  args: {
    ...commonArgs,
    ...cryptoArgs,
    url: { type: "positional", description: "dst://HOST[:PORT]/EXPORT or dst+unix:///EXPORT?socket=PATH (default: the only [[attach]] of --config)", required: false },
    device: { type: "string", description: "kernel NBD device to attach (/dev/nbdN; default: the first free one)", valueHint: "DEV" },
    "nbd-listen": { type: "string", description: "serve the disk as NBD here instead: unix:PATH or 127.0.0.1:PORT", valueHint: "ADDR" },
    "dead-conn-timeout": { type: "string", description: "how long the kernel holds I/O for a restarted daemon (default 2m)", valueHint: "DURATION" },
    connections: { type: "string", description: "sockets to give the kernel (NBD multi-conn; default 1, or [[attach]] connections)", valueHint: "N" },
    "key-file": { type: "string", description: "identity key file to authenticate with", valueHint: "FILE" },
    "state-dir": { type: "string", description: "attachment state directory (default: $DSTD_STATE_DIR, else the config's state_dir, else /var/lib/dstd)", valueHint: "DIR" },
  },
  async run({ args }) {
    const { raw, source, baseDir } = readRawConfig(args.config);
    mergeCryptoThreads(raw, args["crypto-threads"]);
    const config = validateMerged(raw, source, baseDir);
    const log = logFromArgs(args["log-level"], config.logLevel, "attach");
    await startCryptoThreads(config.cryptoThreads, log);
    const { url, entry } = chooseAttach(args.url, config);
    const settings = clientSettings(config, entry);
    const keyFile = args["key-file"] ?? settings.keyFile ?? undefined;
    const engine = {
      ...settings.reliability,
      inflight: settings.reliability.inflightMax,
      checksums: settings.checksums,
      auth: keyFile ? { key: loadKeyFile(keyFile), suites: settings.suites } : null,
    };
    const stateDir = args["state-dir"] ?? defaultStateDir(config.stateDir);
    const device = args.device ?? entry?.device ?? null;
    const listenText = args["nbd-listen"] ?? null;
    if (listenText !== null || (device === null && entry?.nbdListen)) {
      if (args.device !== undefined) throw new DstdError("E_USAGE", "--device and --nbd-listen are two different modes: give one");
      if (args.connections !== undefined) throw new DstdError("E_USAGE", "--connections counts the sockets of a kernel device; --nbd-listen serves each NBD client on its own connection");
      const nbdListen = listenText === null ? entry!.nbdListen! : parseListenAddress(listenText, NBD_DEFAULT_PORT);
      if (typeof nbdListen === "string") throw new DstdError("E_USAGE", `--nbd-listen: ${nbdListen}`);
      const signalled = waitForSignal(); // before "listening" is logged (cli/export.ts says why)
      const node = await startNbdAttach({ url, engine, log, nbdListen, stateDir });
      const signal = await signalled;
      log.info(`${signal}: flushing and detaching`);
      await node.stop();
      return;
    }
    const connections = socketCount(args.connections, entry?.connections ?? DEFAULT_ATTACH_CONNECTIONS);
    const result = await attachKernel({ url, device, stateDir, engine, deadConnTimeoutSec: deadConnTimeout(args["dead-conn-timeout"]), connections, log });
    if (result.kind === "already") {
      process.stdout.write(`${result.message}\n`);
      return;
    }
    await superviseKernel(result.attachment, log, () => reloadReport(args.config, url, settings.reliability, log));
  },
});

/** The URL to attach and its `[[attach]]` entry (if any). */
function chooseAttach(text: string | undefined, config: Config): { url: ExportUrl; entry: AttachConfig | null } {
  if (text !== undefined && text !== "") {
    const url = parseExportUrl(text);
    if (typeof url === "string") throw new DstdError("E_USAGE", `${text}: ${url}`);
    const wanted = formatExportUrl(url);
    return { url, entry: config.attaches.find((a) => formatExportUrl(a.url) === wanted) ?? null };
  }
  if (config.attaches.length === 1) return { url: config.attaches[0]!.url, entry: config.attaches[0]! };
  if (config.attaches.length === 0) throw new DstdError("E_USAGE", "give the export URL to attach (or one [[attach]] entry in --config)");
  const urls = config.attaches.map((a) => formatExportUrl(a.url)).join(", ");
  throw new DstdError("E_USAGE", `the config has ${config.attaches.length} [[attach]] entries (${urls}): name the one to attach by its URL (one daemon per attachment)`);
}

function clientSettings(config: Config, entry: AttachConfig | null) {
  return entry === null
    ? config.client
    : { keyFile: entry.keyFile, suites: entry.suites, checksums: entry.checksums, reliability: entry.reliability };
}

function deadConnTimeout(text: string | undefined): number {
  if (text === undefined) return DEFAULT_DEAD_CONN_TIMEOUT_SEC;
  const ms = parseDuration(text);
  if (typeof ms === "string") throw new DstdError("E_USAGE", `--dead-conn-timeout: ${ms}`);
  if (ms < 1000) throw new DstdError("E_USAGE", "--dead-conn-timeout must be at least 1s: with 0 the kernel fails I/O the moment the daemon restarts");
  return Math.ceil(ms / 1000);
}

function socketCount(text: string | undefined, configured: number): number {
  if (text === undefined) return configured;
  const { min, max } = LIMITS.attachConnections;
  const n = Number(text);
  if (!/^[0-9]+$/.test(text.trim()) || n < min || n > max) throw new DstdError("E_USAGE", `--connections ${text}: give a whole number of sockets from ${min} to ${max}`);
  return n;
}

/** Run until a signal or until the device goes away by itself; exit status via the thrown error. */
async function superviseKernel(attachment: KernelAttachNode, log: Log, reload: () => void): Promise<void> {
  // A handover the export did not confirm keeps serving: wait for the next signal.
  while ((await superviseOnce(attachment, log, reload)) === "serving");
}

async function superviseOnce(attachment: KernelAttachNode, log: Log, reload: () => void): Promise<"serving" | "done"> {
  const event = await new Promise<{ signal: string } | { end: AttachmentEnd }>((resolve) => {
    const handlers: Array<[NodeJS.Signals, () => void]> = [];
    const on = (signal: NodeJS.Signals, fn: () => void) => {
      handlers.push([signal, fn]);
      process.on(signal, fn);
    };
    const finish = (value: { signal: string } | { end: AttachmentEnd }) => {
      for (const [signal, fn] of handlers) process.off(signal, fn);
      resolve(value);
    };
    for (const signal of ["SIGTERM", "SIGINT", "SIGUSR2"] as const) on(signal, () => finish({ signal }));
    on("SIGHUP", reload);
    void attachment.ended.then((end) => finish({ end }));
  });
  if ("end" in event) {
    if (event.end.error !== null) throw event.end.error;
    log.warn(`${event.end.reason}; exiting`);
    return "done";
  }
  if (event.signal === "SIGUSR2") {
    log.info("SIGUSR2: handing over (the device stays attached)");
    return (await attachment.handover({ stayOnFailure: true })) === "serving" ? "serving" : "done";
  }
  log.info(`${event.signal}: detaching ${attachment.device}`);
  await attachment.detach();
  return "done";
}

/** Reliability fields as the config file names and writes them (docs/config.md). */
const RELIABILITY_KEYS: Record<keyof Reliability, [string, (value: number) => string]> = {
  resendIntervalMs: ["resend_interval", formatDuration],
  maxResends: ["max_resends", String],
  deadlineMs: ["deadline", formatDuration],
  reconnectMinMs: ["reconnect_min", formatDuration],
  reconnectMaxMs: ["reconnect_max", formatDuration],
  keepaliveIntervalMs: ["keepalive_interval", formatDuration],
  keepaliveTimeoutMs: ["keepalive_timeout", formatDuration],
  replayBufferBytes: ["replay_buffer", formatSize],
  inflightMax: ["inflight", String],
  queueDepth: ["queue_depth", String],
  links: ["links", String],
};

/**
 * SIGHUP. The engine takes its reliability settings at start and has no live update, so
 * nothing is applied in place: say what changed and how to apply it (a restart does not
 * unmap the device).
 */
function reloadReport(configPath: string | undefined, url: ExportUrl, running: Readonly<Reliability>, log: Log): void {
  if (configPath === undefined) return log.info("SIGHUP: no --config to re-read; nothing to reload");
  try {
    const { raw, source, baseDir } = readRawConfig(configPath);
    const config = validateMerged(raw, source, baseDir);
    const wanted = formatExportUrl(url);
    const entry = config.attaches.find((a) => formatExportUrl(a.url) === wanted) ?? null;
    const next = clientSettings(config, entry).reliability;
    const changed = (Object.keys(RELIABILITY_KEYS) as Array<keyof Reliability>)
      .filter((k) => next[k] !== running[k])
      .map((k) => `${RELIABILITY_KEYS[k][0]} ${RELIABILITY_KEYS[k][1](running[k])} → ${RELIABILITY_KEYS[k][1](next[k])}`);
    if (changed.length === 0) return log.info(`SIGHUP: ${configPath} re-read; no reliability setting changed`);
    log.warn(`SIGHUP: ${configPath} changes ${changed.join(", ")}; a running engine cannot change them: restart the daemon to apply them (kill -USR2 it, then run dstd attach again: the device stays mapped)`);
  } catch (error) {
    log.warn(`SIGHUP: ${configPath}: ${(error as Error).message}; keeping the running settings`);
  }
}

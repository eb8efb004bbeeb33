/**
 * @module cli/copy — `dstd copy SRC DST`: argument handling, progress display, Ctrl-C, exit
 * status. The copying itself is client/copy.ts (files, devices, exports) and
 * client/copy-stream.ts (`-`: stdin, stdout).
 *
 * Ctrl-C (or SIGTERM) once: no new chunks start, the ones in flight finish, and the copy says
 * how far it got and what became of the target; a second Ctrl-C stops at once. Exit status
 * 130 then, as a shell reports a process ended by SIGINT.
 */
import { existsSync, readFileSync } from "node:fs";
import { loadKeyFile } from "../crypto/keys.ts";
import {
  COPY_CHUNK_MIN,
  copyData,
  FLUSH_EVERY,
  CopyInterrupted,
  newCopyState,
  openEndpoint,
  openLocalTarget,
  type CopyEndpoint,
  type CopyResult,
  type LocalTarget,
} from "../client/copy.ts";
import { copyFromStream, copyToStream, stdinSource, stdoutSink } from "../client/copy-stream.ts";
import { MemoryBudget } from "../client/memory-budget.ts";
import { isUrl, parseExportUrl, type ExportUrl } from "../lib/address.ts";
import { parseDuration } from "../lib/duration.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { formatSize, parseSize } from "../lib/size.ts";
import { commonArgs, cryptoArgs, logFromArgs, mergeCryptoThreads, readRawConfig, startCryptoThreads, validateMerged } from "./args.ts";
import { defineDstdCommand } from "./command.ts";
import { UsageError } from "./parse.ts";
import { ProgressLine } from "./progress.ts";

type Spec = { path: string } | { url: ExportUrl } | { stream: true };

function parseEndpoint(text: string, role: string): Spec {
  if (text === "-") return { stream: true };
  if (!isUrl(text)) return { path: text };
  const url = parseExportUrl(text);
  if (typeof url === "string") throw new UsageError(`${role} ${text}: ${url}`);
  return { url };
}

/** 130 = 128 + SIGINT: what a shell reports for a command stopped by Ctrl-C. */
const EXIT_INTERRUPTED = 130;

export default defineDstdCommand({
  meta: {
    name: "copy",
    description:
      "Copy between a local file or device and an export, or between exports. An export is dst://HOST[:PORT]/EXPORT, dst+unix:///EXPORT?socket=PATH, nbd://HOST[:PORT]/EXPORT or nbd+unix:///EXPORT?socket=PATH; '-' is stdin (as SOURCE) or stdout (as TARGET). A new local file appears only when the copy is complete. An export that cannot be reached fails the copy at once unless --wait.",
  },
  args: {
    ...commonArgs,
    ...cryptoArgs,
    source: { type: "positional", description: "local path, export URL, or - for stdin", required: true },
    target: { type: "positional", description: "local path, export URL, or - for stdout", required: true },
    inflight: { type: "string", description: "requests in flight (default 32)", valueHint: "N" },
    chunk: { type: "string", description: "bytes per request (default 1MiB)", valueHint: "SIZE" },
    progress: { type: "boolean", alias: "p", description: "show progress and link state on stderr (default: when stderr is a terminal)" },
    "key-file": { type: "string", description: "identity key file to authenticate with (dstd keygen)", valueHint: "FILE" },
    deadline: { type: "string", description: "how long one request may take, across reconnects, before the copy fails (default 2m, [client] deadline)", valueHint: "DURATION" },
    wait: { type: "boolean", description: "wait for a dst:// export to come up (until --deadline) instead of failing when it cannot be reached" },
    overwrite: { type: "boolean", description: "replace an existing local target file of another size" },
    "flush-every": { type: "string", description: "flush the target after this many bytes while copying (default 32MiB; 0: only at the end, the client then keeps up to [client] replay_buffer for replay)", valueHint: "SIZE" },
  },
  examples: [
    "dstd copy image.raw dst://server:10810/disk --progress",
    "dstd copy dst://server/disk backup.raw",
    "dstd copy dst://server/disk - | gzip > backup.raw.gz",
    "gunzip < backup.raw.gz | dstd copy - dst://server/disk",
    "dstd copy image.raw dst://server/disk --wait --deadline 10m",
  ],
  habits: { f: "--overwrite", force: "--overwrite", timeout: "--deadline DURATION" },
  async run({ args }) {
    const { raw, source: configSource, baseDir } = readRawConfig(args.config);
    mergeCryptoThreads(raw, args["crypto-threads"]);
    const config = validateMerged(raw, configSource, baseDir);
    const log = logFromArgs(args["log-level"], "warn", "copy");
    await startCryptoThreads(config.cryptoThreads, log);
    const reliability = { ...config.client.reliability };
    if (args.deadline !== undefined) {
      const ms = parseDuration(args.deadline);
      if (typeof ms === "string") throw new UsageError(`--deadline: ${ms}`);
      if (ms < 1000) throw new UsageError(`--deadline ${args.deadline} is too short: give at least 1s`);
      reliability.deadlineMs = ms;
    }
    const keyFile = args["key-file"] ?? config.client.keyFile ?? undefined;
    const auth = keyFile ? { key: loadKeyFile(keyFile), suites: config.client.suites } : null;
    const engine = { ...reliability, inflight: reliability.inflightMax, auth, checksums: config.client.checksums };
    const chunk = args.chunk === undefined ? 1024 * 1024 : parseSize(args.chunk);
    if (typeof chunk === "string") throw new UsageError(`--chunk: ${chunk}`);
    if (chunk < COPY_CHUNK_MIN) throw new UsageError(`--chunk: '${args.chunk}' is below 4KiB, the smallest request a copy makes`);
    const flushEvery = args["flush-every"] === undefined ? FLUSH_EVERY : parseSize(args["flush-every"]);
    if (typeof flushEvery === "string") throw new UsageError(`--flush-every: ${flushEvery}`);
    const inflight = args.inflight === undefined ? 32 : /^\d+$/.test(args.inflight) ? Number(args.inflight) : NaN;
    if (!Number.isInteger(inflight) || inflight < 1 || inflight > 1024) {
      throw new UsageError(`--inflight: '${args.inflight}' is not a whole number from 1 to 1024`);
    }
    const sourceSpec = parseEndpoint(args.source, "source");
    const targetSpec = parseEndpoint(args.target, "target");
    if ("stream" in sourceSpec && "stream" in targetSpec) throw new UsageError("SOURCE and TARGET cannot both be - (stdin to stdout is cat's job)");
    if (!("url" in sourceSpec) && !("url" in targetSpec)) {
      throw new UsageError("one of SOURCE and TARGET must be an export URL (dst://, dst+unix://, nbd:// or nbd+unix://)");
    }
    if ("path" in sourceSpec && !existsSync(sourceSpec.path)) {
      const substituted = /^\/(dev|proc\/self)\/fd\/\d+$/.test(sourceSpec.path) ? " (a descriptor of the shell does not reach dstd: pipe the data into `dstd copy - TARGET` instead)" : "";
      throw new UsageError(`source ${sourceSpec.path} does not exist${substituted}`);
    }
    if ("stream" in targetSpec && process.stdout.isTTY) {
      throw new UsageError("refusing to write disk data to a terminal: redirect stdout (dstd copy URL - > FILE)");
    }
    if ("stream" in sourceSpec && process.stdin.isTTY) {
      throw new UsageError("stdin is a terminal: pipe the data in (… | dstd copy - URL)");
    }

    const show = args.progress ?? process.stderr.isTTY === true;
    const progress = new ProgressLine(show, process.stderr.isTTY === true);
    const state = newCopyState();
    const abort = new AbortController();
    const endpoints: CopyEndpoint[] = [];
    let interrupts = 0;
    let copying = false;
    const onSignal = () => {
      interrupts++;
      if (!copying) {
        // Still connecting (perhaps waiting for the export with --wait): nothing to finish.
        process.stderr.write("dstd copy: interrupted before the copy started; nothing was copied\n");
        process.exit(EXIT_INTERRUPTED);
      }
      if (interrupts === 1) {
        abort.abort();
        progress.finish();
        process.stderr.write("dstd copy: stopping: finishing the requests in flight (Ctrl-C again to stop at once)\n");
      }
      // Second Ctrl-C: stop waiting for the requests in flight (an export that went away).
      else for (const endpoint of endpoints) endpoint.abort?.();
    };
    process.on("SIGINT", onSignal);
    process.on("SIGTERM", onSignal);
    const common = {
      log,
      engine,
      firstContact: args.wait === true ? ("retry" as const) : ("fail" as const),
      onLinkChange: (linkState: string, detail: string) => progress.linkChanged(linkState, detail),
      flushEvery,
    };
    let local: LocalTarget | null = null;
    let memoryBudget: MemoryBudget | null = null;
    let targetName = args.target;
    try {
      let result: CopyResult;
      const memory = new MemoryBudget();
      memoryBudget = memory;
      const options = { chunk, inflight, flushEvery, memory, progress: (done: number, total: number) => progress.update(done, total), signal: abort.signal, state };
      if ("stream" in sourceSpec) {
        const target = await openEndpoint(targetSpec as { url: ExportUrl }, { ...common, writable: true });
        endpoints.push(target);
        targetName = target.label;
        copying = true;
        result = await copyFromStream(stdinSource(), "stdin", target, options);
      } else {
        const source = await openEndpoint(sourceSpec as { url: ExportUrl } | { path: string }, { ...common, writable: false });
        endpoints.push(source);
        if ("stream" in targetSpec) {
          targetName = "stdout";
          copying = true;
          result = await copyToStream(source, stdoutSink(), options);
        } else {
          let target: CopyEndpoint;
          if ("path" in targetSpec) {
            local = openLocalTarget(targetSpec.path, source.size, args.overwrite === true);
            target = local.endpoint;
          } else target = await openEndpoint(targetSpec, { ...common, writable: true });
          endpoints.push(target);
          targetName = target.label;
          copying = true;
          result = await copyData(source, target, options);
          local?.commit();
        }
      }
      progress.finish();
      const rate = result.bytes / 1024 / 1024 / Math.max(result.seconds, 0.001);
      if (show || args["log-level"]) {
        process.stderr.write(
          `copied ${formatSize(result.bytes)} (${formatSize(result.zeroBytes)} zero, not sent as data) in ${result.seconds.toFixed(2)} s, ${rate.toFixed(0)} MiB/s\n`,
        );
      }
      return 0;
    } catch (error) {
      progress.finish();
      const fate = local === null ? "" : `; ${local.abandon(state.contiguous)}`;
      const total = state.total > 0 ? ` of ${formatSize(state.total)} (${Math.floor((state.contiguous / state.total) * 100)}%)` : "";
      if (error instanceof CopyInterrupted || (abort.signal.aborted && state.total > 0)) {
        process.stderr.write(`dstd copy: interrupted after copying ${formatSize(state.contiguous)}${total} to ${targetName}${fate}\n`);
        return EXIT_INTERRUPTED;
      }
      if (state.done === 0 && fate === "") throw error;
      const code = error instanceof DstdError ? error.code : "E_COPY";
      throw new DstdError(code, `${errorMessage(error)} (after copying ${formatSize(state.contiguous)}${total})${fate}`, { cause: error });
    } finally {
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      for (const endpoint of endpoints) {
        const memory = endpoint.memory?.();
        if (memory !== undefined) {
          const peak = ownPeakRss();
          log.debug(
            `${endpoint.label}: ${memory}; rss ${(process.memoryUsage.rss() / 2 ** 20).toFixed(0)} MiB, ` +
              `peak RSS ${peak === null ? "unknown" : `${(peak / 2 ** 20).toFixed(0)} MiB`}, ${memoryBudget?.collections ?? 0} collections`,
          );
        }
        const c = endpoint.counters?.();
        if (c) {
          log.info(
            `${endpoint.label}: connects=${c.connects} reconnects=${c.reconnects} resends=${c.resends} replays=${c.replays} keepalive_failures=${c.keepaliveFailures} timeouts=${c.timeouts}`,
          );
        }
      }
      for (const endpoint of endpoints.reverse()) await endpoint.close().catch(() => {});
    }
  },
});

/**
 * This process's own peak resident size (VmHWM, bytes), null where /proc is missing. Not the
 * parent's wait4 rusage: for a child started with vfork (Bun.spawn), Linux carries the
 * parent's peak into the child's ru_maxrss at exec, so a small copy started from a large
 * process "peaks" at the parent's size (measured: /bin/true from a 319 MiB parent, 324 MiB).
 */
function ownPeakRss(): number | null {
  try {
    const match = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"));
    return match === null ? null : Number(match[1]) * 1024;
  } catch {
    return null;
  }
}

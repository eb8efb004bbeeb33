/**
 * @module cli/copy — `dstd copy SRC DST`: argument handling, progress display, exit status.
 * The copying itself is client/copy.ts.
 */
import { defineCommand } from "citty";
import { existsSync } from "node:fs";
import { loadKeyFile } from "../crypto/keys.ts";
import { copyData, openEndpoint, type CopyEndpoint } from "../client/copy.ts";
import { isUrl, parseExportUrl, type ExportUrl } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import { parseSize, formatSize } from "../lib/size.ts";
import { commonArgs, logFromArgs, readRawConfig, validateMerged } from "./args.ts";

function parseEndpoint(text: string, role: string): { path: string } | { url: ExportUrl } {
  if (!isUrl(text)) return { path: text };
  const url = parseExportUrl(text);
  if (typeof url === "string") throw new DstdError("E_USAGE", `${role} ${text}: ${url}`);
  return { url };
}

function progressBar(enabled: boolean) {
  let last = 0;
  const started = performance.now();
  return (done: number, total: number) => {
    if (!enabled) return;
    const now = performance.now();
    if (now - last < 200 && done < total) return;
    last = now;
    const fraction = total === 0 ? 1 : done / total;
    const width = 30;
    const filled = Math.round(fraction * width);
    const rate = done / 1024 / 1024 / Math.max(0.001, (now - started) / 1000);
    process.stderr.write(
      `\r[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${formatSize(done)} ${rate.toFixed(0)} MiB/s `,
    );
    if (done >= total) process.stderr.write("\n");
  };
}

export default defineCommand({
  meta: {
    name: "copy",
    description:
      "Copy between a local file/device and an export, or between exports: dst://HOST[:PORT]/EXPORT, dst+unix:///EXPORT?socket=PATH, nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT?socket=PATH",
  },
  args: {
    ...commonArgs,
    source: { type: "positional", description: "local path or URL to read", required: true },
    target: { type: "positional", description: "local path or URL to write", required: true },
    inflight: { type: "string", description: "requests in flight (default 32)", valueHint: "N" },
    chunk: { type: "string", description: "bytes per request (default 1MiB)", valueHint: "SIZE" },
    progress: { type: "boolean", description: "show a progress bar (default: when stderr is a terminal)" },
    "key-file": { type: "string", description: "identity key file to authenticate with (dstd keygen)", valueHint: "FILE" },
  },
  async run({ args }) {
    const { raw, source: configSource, baseDir } = readRawConfig(args.config);
    const config = validateMerged(raw, configSource, baseDir);
    const log = logFromArgs(args["log-level"], "warn", "copy");
    const reliability = config.client.reliability;
    const keyFile = args["key-file"] ?? config.client.keyFile ?? undefined;
    const auth = keyFile ? { key: loadKeyFile(keyFile), suites: config.client.suites } : null;
    const engine = { ...reliability, inflight: reliability.inflightMax, auth, checksums: config.client.checksums };
    const chunk = args.chunk === undefined ? 1024 * 1024 : parseSize(args.chunk);
    if (typeof chunk === "string") throw new DstdError("E_USAGE", `--chunk: ${chunk}`);
    const inflight = args.inflight === undefined ? 32 : Number(args.inflight);
    if (!Number.isInteger(inflight) || inflight < 1 || inflight > 1024) {
      throw new DstdError("E_USAGE", `--inflight: '${args.inflight}' is not a whole number from 1 to 1024`);
    }
    const sourceSpec = parseEndpoint(args.source, "source");
    const targetSpec = parseEndpoint(args.target, "target");
    if ("path" in sourceSpec && "path" in targetSpec) {
      throw new DstdError("E_USAGE", "one of SOURCE and TARGET must be an export URL (dst://, dst+unix://, nbd:// or nbd+unix://)");
    }
    if ("path" in sourceSpec && !existsSync(sourceSpec.path)) {
      throw new DstdError("E_USAGE", `source ${sourceSpec.path} does not exist`);
    }
    const endpoints: CopyEndpoint[] = [];
    try {
      const source = await openEndpoint(sourceSpec, { log, engine, writable: false });
      endpoints.push(source);
      const target = await openEndpoint(targetSpec, { log, engine, writable: true, createSize: source.size });
      endpoints.push(target);
      const show = args.progress ?? process.stderr.isTTY === true;
      const result = await copyData(source, target, { chunk, inflight, progress: progressBar(show) });
      const rate = result.bytes / 1024 / 1024 / Math.max(result.seconds, 0.001);
      if (show || args["log-level"]) {
        process.stderr.write(
          `copied ${formatSize(result.bytes)} (${formatSize(result.zeroBytes)} zero, not sent as data) in ${result.seconds.toFixed(2)} s, ${rate.toFixed(0)} MiB/s\n`,
        );
      }
    } finally {
      for (const endpoint of endpoints) {
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

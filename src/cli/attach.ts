/**
 * @module cli/attach — `dstd attach URL`: make a remote export usable locally, with dstd in
 * the data path. `--nbd-listen ADDR` serves it as a standard NBD endpoint (for machines
 * without the kernel NBD driver). Runs in the foreground until SIGTERM/SIGINT, then flushes
 * and stops cleanly.
 */
import { defineCommand } from "citty";
import { loadKeyFile } from "../crypto/keys.ts";
import { startNbdAttach } from "../daemon/attach-node.ts";
import { defaultStateDir } from "../daemon/attach-state.ts";
import { parseExportUrl, parseListenAddress } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import { commonArgs, logFromArgs, readRawConfig, validateMerged } from "./args.ts";
import { waitForSignal } from "./signals.ts";

export default defineCommand({
  meta: { name: "attach", description: "Attach a remote export: serve it locally over NBD (--nbd-listen)" },
  args: {
    ...commonArgs,
    url: { type: "positional", description: "dst://HOST[:PORT]/EXPORT or dst+unix:///EXPORT?socket=PATH", required: true },
    "nbd-listen": { type: "string", description: "serve the disk as NBD here: unix:PATH or 127.0.0.1:PORT", valueHint: "ADDR" },
    device: { type: "string", description: "kernel NBD device to attach (/dev/nbdN)", valueHint: "DEV" },
    "key-file": { type: "string", description: "identity key file to authenticate with", valueHint: "FILE" },
    "state-dir": { type: "string", description: "attachment state directory (default /var/lib/dstd or $DSTD_STATE_DIR)", valueHint: "DIR" },
  },
  async run({ args }) {
    const url = parseExportUrl(args.url);
    if (typeof url === "string") throw new DstdError("E_USAGE", `${args.url}: ${url}`);
    const { raw, source, baseDir } = readRawConfig(args.config);
    const config = validateMerged(raw, source, baseDir);
    const log = logFromArgs(args["log-level"], config.logLevel, "attach");
    if (args["nbd-listen"] === undefined) {
      throw new DstdError("E_USAGE", "this build attaches with --nbd-listen ADDR; the kernel /dev/nbdN path is not wired yet");
    }
    const nbdListen = parseListenAddress(args["nbd-listen"], 10809);
    if (typeof nbdListen === "string") throw new DstdError("E_USAGE", `--nbd-listen: ${nbdListen}`);
    const client = config.client;
    const keyFile = args["key-file"] ?? client.keyFile ?? undefined;
    const engine = {
      ...client.reliability,
      inflight: client.reliability.inflightMax,
      checksums: client.checksums,
      auth: keyFile ? { key: loadKeyFile(keyFile), suites: client.suites } : null,
    };
    const stateDir = args["state-dir"] ?? defaultStateDir(config.stateDir);
    const node = await startNbdAttach({ url, engine, log, nbdListen, stateDir });
    const signal = await waitForSignal();
    log.info(`${signal}: flushing and detaching`);
    await node.stop();
  },
});

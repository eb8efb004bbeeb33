/**
 * @module cli/export — `dstd export`: flags (and --config) → validated config → running
 * export node; stops cleanly on SIGINT/SIGTERM.
 */
import { resolve } from "node:path";
import { loadKeyFile } from "../crypto/keys.ts";
import { startExportNode } from "../daemon/export-node.ts";
import { acceptNbdForExports } from "../daemon/nbd-front.ts";
import { commonArgs, logFromArgs, readRawConfig, repeated, validateMerged } from "./args.ts";
import { defineDstdCommand } from "./command.ts";
import { UsageError } from "./parse.ts";
import { waitForSignal } from "./signals.ts";

export default defineDstdCommand({
  meta: {
    name: "export",
    description:
      "Serve a sparse file, a block device or a memory disk to remote clients over DST (and standard NBD with --nbd-listen). Runs in the foreground until SIGINT or SIGTERM. dstd fails closed: without --allow every client is refused.",
  },
  repeatable: ["listen", "nbd-listen", "allow", "key-file"],
  habits: { p: "--listen HOST:PORT", port: "--listen HOST:PORT", bind: "--listen HOST:PORT", x: "--name NAME", "export-name": "--name NAME" },
  examples: [
    "dstd export --file disk.img --size 10GiB --allow 10.0.0.0/8:rw --listen 0.0.0.0:10810",
    "dstd export --memory 512MiB --listen unix:/run/dstd.sock --allow unix:rw",
    "dstd export --config /etc/dstd.toml",
  ],
  args: {
    ...commonArgs,
    name: { type: "string", description: "export name (default: disk)", valueHint: "NAME" },
    listen: { type: "string", description: "DST address: HOST:PORT, [V6]:PORT, unix:PATH (default 127.0.0.1:10810)", valueHint: "ADDR" },
    "nbd-listen": { type: "string", description: "also serve standard NBD here (default port 10809)", valueHint: "ADDR" },
    file: { type: "string", description: "serve this sparse file (created with --size when missing)", valueHint: "PATH" },
    size: { type: "string", description: "size of a new --file, e.g. 10GiB", valueHint: "SIZE" },
    device: { type: "string", description: "serve this block device", valueHint: "PATH" },
    memory: { type: "string", description: "serve a memory disk of this size, e.g. 512MiB", valueHint: "SIZE" },
    "read-only": { type: "boolean", alias: "r", description: "refuse every write, whatever the client's grant" },
    allow: { type: "string", description: "who may connect: [IDENTITY@]CIDR|unix[:ro|:rw]", valueHint: "RULE" },
    description: { type: "string", description: "free-form description shown to NBD clients", valueHint: "TEXT" },
    "key-file": { type: "string", description: "identity key file (dstd keygen)", valueHint: "FILE" },
  },
  async run({ args, rawArgs }) {
    const { raw, source, baseDir } = readRawConfig(args.config);
    const flagged = args.file !== undefined || args.device !== undefined || args.memory !== undefined;
    let cliIndex = -1;
    if (flagged || repeated(rawArgs, "listen").length || repeated(rawArgs, "allow").length) {
      const exports = Array.isArray(raw.export) ? [...(raw.export as Record<string, unknown>[])] : [];
      const name = args.name ?? "disk";
      cliIndex = exports.findIndex((e) => (e.name ?? "disk") === name);
      const base: Record<string, unknown> = cliIndex >= 0 ? { ...exports[cliIndex]! } : { name };
      if (flagged) for (const key of ["file", "device", "memory", "size"]) delete base[key];
      const set = (key: string, value: unknown) => {
        if (value !== undefined && !(Array.isArray(value) && value.length === 0)) base[key] = value;
      };
      set("file", args.file);
      set("size", args.size);
      set("device", args.device);
      set("memory", args.memory);
      set("listen", repeated(rawArgs, "listen"));
      set("nbd_listen", repeated(rawArgs, "nbd-listen"));
      set("allow", repeated(rawArgs, "allow"));
      set("description", args.description);
      if (args["read-only"]) base.read_only = true;
      if (cliIndex >= 0) exports[cliIndex] = base;
      else cliIndex = exports.push(base) - 1;
      raw.export = exports;
    }
    const keyFiles = repeated(rawArgs, "key-file");
    if (keyFiles.length > 0) {
      const keys = Array.isArray(raw.key) ? [...(raw.key as unknown[])] : [];
      for (const path of keyFiles) keys.push({ identity: loadKeyFile(path).identity, file: resolve(path) });
      raw.key = keys;
    }
    const config = validateMerged(raw, source, baseDir, cliIndex);
    if (config.exports.length === 0) {
      throw new UsageError("nothing to export: give --file PATH [--size SIZE], --device PATH or --memory SIZE (or [[export]] in --config)");
    }
    const log = logFromArgs(args["log-level"], config.logLevel, "export");
    // Listen for SIGTERM before anything is announced: a supervisor may stop us the moment
    // "listening" is logged, and that must be the clean stop, not the default kill.
    const signalled = waitForSignal();
    const node = await startExportNode({ exports: config.exports, keys: config.keys, log, nbdAccept: acceptNbdForExports, limits: config.limits });
    const signal = await signalled;
    log.info(`${signal}: stopping`);
    await node.stop();
  },
});

/**
 * @module cli/export — `dstd export`: flags (and --config) → validated config → running
 * export node; stops cleanly on SIGINT/SIGTERM.
 */
import { resolve } from "node:path";
import { loadKeyFile } from "../crypto/keys.ts";
import { isUrl, parseExportUrl } from "../lib/address.ts";
import { RBD_LEG_PREFIX } from "../config/tree.ts";
import { startExportControl } from "../daemon/export-control.ts";
import { startExportNode, treeHasLayout, treeHasMirror, type ExportNode } from "../daemon/export-node.ts";
import { acceptNbdForExports } from "../daemon/nbd-front.ts";
import { commonArgs, cryptoArgs, logFromArgs, mergeCryptoThreads, readRawConfig, repeated, startCryptoThreads, validateMerged } from "./args.ts";
import { defineDstdCommand } from "./command.ts";
import { UsageError } from "./parse.ts";
import { waitForSignal } from "./signals.ts";

export default defineDstdCommand({
  meta: {
    name: "export",
    description:
      "Serve a sparse file, a block device, a memory disk or a Ceph RBD image to remote clients over DST (and standard NBD with --nbd-listen). Runs in the foreground until SIGINT or SIGTERM. dstd fails closed: without --allow every client is refused.",
  },
  repeatable: ["listen", "nbd-listen", "allow", "key-file", "mirror", "linear", "stripe"],
  habits: { p: "--listen HOST:PORT", port: "--listen HOST:PORT", bind: "--listen HOST:PORT", x: "--name NAME", "export-name": "--name NAME" },
  examples: [
    "dstd export --file disk.img --size 10GiB --allow 10.0.0.0/8:rw --listen 0.0.0.0:10810",
    "dstd export --memory 512MiB --listen unix:/run/dstd.sock --allow unix:rw",
    "dstd export --mirror dst://10.0.0.1/disk --mirror dst://10.0.0.2/disk --key-file node.key --allow 10.0.0.0/8:rw",
    "dstd export --rbd rbd/vm1 --ceph-conf /etc/ceph/ceph.conf --ceph-id dstd --nbd-listen 127.0.0.1:10809 --allow 127.0.0.1/32:rw",
    "dstd export --file disk.img --size 10GiB --allow 10.0.0.0/8:rw --allow site-b@192.0.2.0/24:replica --log-dir /var/lib/dstd/disk.log",
    "dstd export --file disk.img --size 10GiB --log-dir /var/lib/dstd/disk.log --replica-of dst://site-a:10810/disk --key-file site-b.key --allow 10.1.0.0/16:ro --state-dir /run/dstd-b",
    "dstd export --config /etc/dstd.toml",
  ],
  args: {
    ...commonArgs,
    ...cryptoArgs,
    name: { type: "string", description: "export name (default: disk); with --config, the [[export]] the other export flags change (default: the file's only one)", valueHint: "NAME" },
    listen: { type: "string", description: "DST address: HOST:PORT, [V6]:PORT, unix:PATH (default 127.0.0.1:10810)", valueHint: "ADDR" },
    "nbd-listen": { type: "string", description: "also serve standard NBD here (default port 10809)", valueHint: "ADDR" },
    file: { type: "string", description: "serve this sparse file (created with --size when missing)", valueHint: "PATH" },
    size: { type: "string", description: "size of a new --file, e.g. 10GiB", valueHint: "SIZE" },
    device: { type: "string", description: "serve this block device", valueHint: "PATH" },
    memory: { type: "string", description: "serve a memory disk of this size, e.g. 512MiB", valueHint: "SIZE" },
    rbd: { type: "string", description: "serve this Ceph RBD image: POOL/IMAGE, POOL/NAMESPACE/IMAGE, @SNAP for a snapshot (read-only); docs/rbd.md", valueHint: "POOL/IMAGE[@SNAP]" },
    "ceph-conf": { type: "string", description: "ceph.conf for --rbd (default: librados's search, /etc/ceph/ceph.conf)", valueHint: "FILE" },
    "ceph-id": { type: "string", description: "Ceph client id for --rbd, without client. (default admin)", valueHint: "NAME" },
    "ceph-keyring": { type: "string", description: "keyring for --rbd (default: from ceph.conf)", valueHint: "FILE" },
    "read-only": { type: "boolean", alias: "r", description: "refuse every write, whatever the client's grant" },
    allow: { type: "string", description: "who may connect: [IDENTITY@]CIDR|unix[:ro|:rw]", valueHint: "RULE" },
    description: { type: "string", description: "free-form description shown to NBD clients", valueHint: "TEXT" },
    "key-file": { type: "string", description: "identity key file (dstd keygen); remote tree legs authenticate with the first", valueHint: "FILE" },
    mirror: { type: "string", description: "serve a mirror of these legs, in order: dst://HOST[:PORT]/NAME, dst+unix://…, rbd:POOL/IMAGE, or a path (docs/tree.md)", valueHint: "URL_OR_PATH" },
    linear: { type: "string", description: "serve the concatenation of these legs, in order", valueHint: "URL_OR_PATH" },
    stripe: { type: "string", description: "serve a stripe (RAID-0) over these legs, in order", valueHint: "URL_OR_PATH" },
    "stripe-chunk": { type: "string", description: "stripe chunk size (default 512KiB)", valueHint: "SIZE" },
    "assume-clean": { type: "boolean", description: "a NEW mirror's legs are blank and identical: skip its initial resync" },
    "log-dir": { type: "string", description: "replicate: keep the replication log here (a primary, or with --replica-of a secondary; docs/replication.md)", valueHint: "DIR" },
    "log-size": { type: "string", description: "primary: most bytes the replication log holds (default 1GiB)", valueHint: "SIZE" },
    "replica-of": { type: "string", description: "be a secondary of this primary export, fetching its log with the first --key-file: dst://HOST[:PORT]/NAME", valueHint: "URL" },
    peer: { type: "string", description: "primary: its secondary's export, asked at start (with the first --key-file) so that after a failover this node never serves writes as a second primary: dst://HOST[:PORT]/NAME", valueHint: "URL" },
    "replay-delay": { type: "string", description: "secondary: apply each record this long after the primary wrote it (an undo window)", valueHint: "DURATION" },
    "state-dir": { type: "string", description: "replicated or mirrored exports: open the control socket in DIR, for dstd replica (status, promote, pause…) and dstd leg (suspend, resume) with --state-dir DIR; linear and striped exports: keep their layout record in DIR/layout", valueHint: "DIR" },
    compress: { type: "boolean", description: "secondary: ask the primary for zstd-compressed log answers (docs/replication.md §10)" },
    bandwidth: { type: "string", description: "secondary: most bytes per second the log shipping takes on the wire, e.g. 20MiB/s", valueHint: "RATE" },
  },
  async run({ args, rawArgs }) {
    const { raw, source, baseDir } = readRawConfig(args.config);
    const tree = treeFromFlags(rawArgs, args);
    const merged = mergeExportFlags(raw, args.config === undefined ? null : source, rawArgs, args, tree);
    const keyFiles = repeated(rawArgs, "key-file");
    if (keyFiles.length > 0) {
      const keys = Array.isArray(raw.key) ? [...(raw.key as unknown[])] : [];
      for (const path of keyFiles) keys.push({ identity: loadKeyFile(path).identity, file: resolve(path) });
      raw.key = keys;
      // Remote legs authenticate with the first key file unless [client] names another.
      if (tree !== null) {
        const client = typeof raw.client === "object" && raw.client !== null ? { ...(raw.client as Record<string, unknown>) } : {};
        client.key_file ??= resolve(keyFiles[0]!);
        raw.client = client;
      }
    }
    mergeCryptoThreads(raw, args["crypto-threads"]);
    const config = validateMerged(raw, source, baseDir, merged.index, merged.keys);
    if (config.exports.length === 0) throw new UsageError(NOTHING_TO_EXPORT);
    if (args["state-dir"] !== undefined && !config.exports.some((e) => e.replication || (e.backend.kind === "tree" && (treeHasMirror(e.backend.root) || treeHasLayout(e.backend.root))))) {
      throw new UsageError("--state-dir keeps the control socket of a replicated or mirrored export and the layout record of a linear or striped one: give --log-dir DIR (or [export.replication] in --config), or --mirror, --linear or --stripe legs");
    }
    const log = logFromArgs(args["log-level"], config.logLevel, "export");
    await startCryptoThreads(config.cryptoThreads, log);
    // Listen for SIGTERM before anything is announced: a supervisor may stop us the moment
    // "listening" is logged, and that must be the clean stop, not the default kill.
    const signalled = waitForSignal();
    let node: ExportNode | null = null;
    const control = args["state-dir"] === undefined ? null : await startExportControl(resolve(args["state-dir"]), () => node, log);
    if (control !== null) log.info(`control socket ${control.path} (dstd replica|leg … --state-dir ${args["state-dir"]})`);
    const stateDir = args["state-dir"] === undefined ? null : resolve(args["state-dir"]);
    node = await startExportNode({ exports: config.exports, keys: config.keys, log, nbdAccept: acceptNbdForExports, limits: config.limits, stateDir }).catch(async (error: unknown) => {
      await control?.close();
      throw error;
    });
    const signal = await signalled;
    log.info(`${signal}: stopping`);
    await control?.close();
    await node.stop();
  },
});

const NOTHING_TO_EXPORT =
  "nothing to export: give --file PATH [--size SIZE], --device PATH, --memory SIZE, --rbd POOL/IMAGE, --mirror/--linear/--stripe legs (or [[export]] in --config)";

/** The [[export]] keys that name a backend (one of them set by a flag means a backend flag was given). */
const BACKEND_KINDS = ["tree", "file", "device", "memory", "rbd"];
/** The [[export]] keys a backend flag sets; a backend flag replaces all of them. */
const BACKEND_KEYS = [...BACKEND_KINDS, "size", "ceph_conf", "ceph_id", "ceph_keyring"];

/**
 * Put the export flags into `raw` (the --config file's table, or {}): returns the index of the
 * [[export]] they set, -1 for none, and `keys`, the keys they set there when that export came
 * from the file (null: the flags made it), so that only issues with those keys name a flag.
 *
 * Which export: the one --name names, or a new one when a backend flag (--file, --device,
 * --memory, --rbd, tree legs) is given; without --name, a backend flag describes the export
 * named "disk" (replacing its backend when the file has one), and other export flags change
 * the file's only [[export]]. Every flag given applies, or this throws a UsageError that says
 * why it cannot (several exports and no --name, a --name the file does not have, --name
 * alone): flags that were silently dropped when no backend flag came with them (--read-only
 * on a config's export while clients wrote to it) must not happen again.
 */
function mergeExportFlags(
  raw: Record<string, unknown>,
  configPath: string | null,
  rawArgs: readonly string[],
  args: { name?: string; file?: string; size?: string; device?: string; memory?: string; rbd?: string; "ceph-conf"?: string; "ceph-id"?: string; "ceph-keyring"?: string; description?: string; "read-only"?: boolean; "log-dir"?: string; "log-size"?: string; "replica-of"?: string; peer?: string; "replay-delay"?: string; compress?: boolean; bandwidth?: string },
  tree: Record<string, unknown> | null,
): { index: number; keys: ReadonlySet<string> | null } {
  const table: Record<string, unknown> = {};
  const flags: string[] = [];
  const set = (key: string, flag: string, value: unknown) => {
    if (value === undefined || (Array.isArray(value) && value.length === 0)) return;
    table[key] = value;
    flags.push(flag);
  };
  set("tree", `--${Object.keys(tree ?? {}).find((k) => k === "mirror" || k === "linear" || k === "stripe")}`, tree ?? undefined);
  set("file", "--file", args.file);
  if (tree === null) set("size", "--size", args.size);
  set("device", "--device", args.device);
  set("memory", "--memory", args.memory);
  set("rbd", "--rbd", args.rbd);
  set("ceph_conf", "--ceph-conf", args["ceph-conf"] === undefined ? undefined : resolve(args["ceph-conf"]));
  set("ceph_id", "--ceph-id", args["ceph-id"]);
  set("ceph_keyring", "--ceph-keyring", args["ceph-keyring"] === undefined ? undefined : resolve(args["ceph-keyring"]));
  set("listen", "--listen", repeated(rawArgs, "listen"));
  set("nbd_listen", "--nbd-listen", repeated(rawArgs, "nbd-listen"));
  set("allow", "--allow", repeated(rawArgs, "allow"));
  set("description", "--description", args.description);
  // --no-read-only too: it overrides read_only = true of the file.
  set("read_only", args["read-only"] === false ? "--no-read-only" : "--read-only", args["read-only"]);
  set("replication", "--log-dir", replicationFromFlags(args, repeated(rawArgs, "key-file")) ?? undefined);
  const backend = BACKEND_KINDS.some((key) => key in table);
  const exports = Array.isArray(raw.export) ? [...(raw.export as Record<string, unknown>[])] : [];
  const named = args.name;
  if (flags.length === 0 && named === undefined) return { index: -1, keys: null };
  if (exports.length === 0 && !backend) throw new UsageError(NOTHING_TO_EXPORT);
  const names = () => {
    const all = exports.map((e) => `'${String(e.name ?? "disk")}'`);
    return all.length > 4 ? `${all.slice(0, 4).join(", ")}, …` : all.join(", ");
  };
  let index: number;
  if (named !== undefined) {
    if (flags.length === 0) {
      throw new UsageError(`--name ${named} alone changes nothing: with --config it names the [[export]] of ${configPath} that the other export flags (--read-only, --listen, …) change, and dstd export serves every [[export]] of the file`);
    }
    index = exports.findIndex((e) => (e.name ?? "disk") === named);
    if (index < 0 && !backend) {
      throw new UsageError(`--name ${named}: ${configPath} has no [[export]] named '${named}' (it has ${names()}); to add one, give its backend too (--file, --device, --memory, --rbd or tree legs)`);
    }
  } else if (backend) {
    index = exports.findIndex((e) => (e.name ?? "disk") === "disk");
  } else if (exports.length === 1) {
    index = 0;
  } else {
    const which = flags.length === 1 ? "it applies" : "they apply";
    throw new UsageError(`${flags.join(", ")}: ${configPath} has ${exports.length} exports (${names()}): give --name NAME to say which one ${which} to`);
  }
  const base: Record<string, unknown> = index >= 0 ? { ...exports[index]! } : { name: named ?? "disk" };
  if (backend) for (const key of BACKEND_KEYS) delete base[key];
  Object.assign(base, table);
  if (index >= 0) exports[index] = base;
  raw.export = exports;
  return index >= 0 ? { index, keys: new Set(Object.keys(table)) } : { index: exports.push(base) - 1, keys: null };
}

/** `--log-dir DIR [--log-size SIZE] [--peer URL]` (primary) or `--log-dir DIR --replica-of URL` (secondary) as an [export.replication] table. */
function replicationFromFlags(
  args: { "log-dir"?: string; "log-size"?: string; "replica-of"?: string; peer?: string; "replay-delay"?: string; compress?: boolean; bandwidth?: string },
  keyFiles: readonly string[],
): Record<string, unknown> | null {
  const dir = args["log-dir"];
  if (dir === undefined) {
    for (const flag of ["log-size", "replica-of", "peer", "replay-delay", "compress", "bandwidth"] as const) {
      if (args[flag] !== undefined && args[flag] !== false) throw new UsageError(`--${flag} needs --log-dir DIR (where the replication log is kept)`);
    }
    return null;
  }
  const table: Record<string, unknown> = { log_dir: resolve(dir) };
  const peer = args["replica-of"];
  if (peer === undefined) {
    for (const flag of ["replay-delay", "compress", "bandwidth"] as const) {
      if (args[flag] !== undefined && args[flag] !== false) throw new UsageError(`--${flag} is for a secondary (--replica-of URL)`);
    }
    if (args["log-size"] !== undefined) table.log_size = args["log-size"];
    if (args.peer !== undefined) {
      table.peer = args.peer;
      if (keyFiles.length > 0) table.key_file = resolve(keyFiles[0]!);
    }
    return table;
  }
  if (args.peer !== undefined) throw new UsageError("--peer names a primary's secondary; a secondary's peer is its primary, given by --replica-of");
  if (args["log-size"] !== undefined) throw new UsageError("--log-size is for a primary; a secondary keeps only what it has not applied");
  table.role = "secondary";
  table.peer = peer;
  if (keyFiles.length > 0) table.key_file = resolve(keyFiles[0]!);
  if (args["replay-delay"] !== undefined) table.replay_delay = args["replay-delay"];
  if (args.compress === true) table.compress = true;
  if (args.bandwidth !== undefined) table.bandwidth = args.bandwidth;
  return table;
}

/**
 * `--mirror A --mirror B` (or --linear, --stripe [--stripe-chunk]) as an `[export.tree]`
 * table (config/tree.ts), or null when no tree flag is given. Legs are URLs or paths, in
 * order; with --size, path legs are files created with that size.
 */
function treeFromFlags(rawArgs: readonly string[], args: { size?: string; "stripe-chunk"?: string; "assume-clean"?: boolean; file?: string; device?: string; memory?: string; rbd?: string }): Record<string, unknown> | null {
  const given = (["mirror", "linear", "stripe"] as const).map((kind) => [kind, repeated(rawArgs, kind)] as const).filter(([, legs]) => legs.length > 0);
  if (given.length === 0) {
    if (args["stripe-chunk"] !== undefined) throw new UsageError("--stripe-chunk needs --stripe legs");
    if (args["assume-clean"]) throw new UsageError("--assume-clean needs --mirror legs");
    return null;
  }
  if (given.length > 1) throw new UsageError(`give one of --mirror, --linear or --stripe (got ${given.map(([k]) => `--${k}`).join(" and ")}); nest them in [export.tree] of --config`);
  if (args.file !== undefined || args.device !== undefined || args.memory !== undefined || args.rbd !== undefined) throw new UsageError("--file, --device, --memory and --rbd cannot be combined with tree legs; give the file as a leg");
  const [kind, legs] = given[0]!;
  if (args["stripe-chunk"] !== undefined && kind !== "stripe") throw new UsageError("--stripe-chunk is only for --stripe");
  if (args["assume-clean"] && kind !== "mirror") throw new UsageError("--assume-clean is only for --mirror");
  const table: Record<string, unknown> = {
    [kind]: legs.map((leg) => {
      // rbd:POOL/IMAGE: config/tree.ts checks the spec; --ceph-conf/--ceph-id/--ceph-keyring apply.
      if (leg.startsWith(RBD_LEG_PREFIX)) return leg;
      if (isUrl(leg)) {
        const url = parseExportUrl(leg);
        if (typeof url === "string") throw new UsageError(`--${kind} ${url}`);
        if (url.protocol !== "dst") throw new UsageError(`--${kind} ${leg}: a leg is a DST export (dst:// or dst+unix://)`);
        return leg;
      }
      return args.size !== undefined && !leg.startsWith("/dev/") ? { file: resolve(leg), size: args.size } : resolve(leg);
    }),
  };
  if (args["stripe-chunk"] !== undefined) table.chunk = args["stripe-chunk"];
  if (args["assume-clean"]) table.assume_clean = true;
  return table;
}

/**
 * @module daemon/export-node — composition root of `dstd export`: resolved config in,
 * running listeners out. Opens every backend, starts the DST listeners (and the NBD
 * listeners where configured), and stops them cleanly. No argument parsing here (cli/).
 *
 * Every listener runs behind a ConnectionGuard (transport/guard.ts) with the `[limits]` of
 * the config; one ConnectionBudget, sized to stay below the file-descriptor limit
 * (transport/fd-budget.ts), is shared by all of them.
 */
import { AssertionError } from "../lib/assert.ts";
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { openBackend, openPort } from "../storage/open.ts";
import { createLocalPort } from "../storage/local/port.ts";
import type { StoragePort } from "../storage/port.ts";
import { ShrinkGate } from "../storage/layers/shrink-gate.ts";
import { openTree, type TreeLog } from "../storage/tree/open.ts";
import { HeldRecords, LayoutBook, type LayoutRecords } from "../storage/tree/layout-book.ts";
import { layoutProblems } from "../storage/tree/tree-layout.ts";
import type { ExportConfig, KeyConfig, TreeNodeSpec } from "../config/types.ts";
import { exportWarnings } from "../config/warnings.ts";
import type { KeyTable } from "../crypto/dst-auth.ts";
import { loadKeyFile } from "../crypto/keys.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import type { ListenAddress } from "../lib/address.ts";
import { formatSize } from "../lib/size.ts";
import type { Log } from "../lib/log.ts";
import { grantsReplica } from "../lib/acl.ts";
import { LogShipServer } from "../replication/ship-server.ts";
import { DstServer, type RequestObserver } from "../export/server.ts";
import type { Budget } from "../export/budget.ts";
import type { Export } from "../export/exports.ts";
import { DEFAULT_CONNECTION_LIMITS } from "../config/defaults.ts";
import { ConnectionGuard, type ConnectionLimits, type GuardedAcceptHandler } from "../transport/guard.ts";
import { startConnectionBudget, type ConnectionBudget } from "../transport/fd-budget.ts";
import { describeListenAddress, listen, type Listener } from "../transport/tcp.ts";
import { openReplica, type ReplicaHandle } from "./replica-node.ts";
import { prepareTreeChanges, type OpenNode, type PreparedTreeChanges } from "./export-tree-changes.ts";
import { treeChanges } from "./tree-changes.ts";
import { holdMirrorLeg } from "../storage/tree/mirror-legs.ts";

/** What `dstd leg` does to a mirror leg. */
export type LegAction = "suspend" | "resume";

/** The control method `leg`'s params (docs/status.md), or the error naming what is wrong. */
export function legParams(params: Record<string, unknown>): { name: string; leg: string; action: LegAction } {
  const { name, leg, action } = params;
  if (typeof name !== "string" || typeof leg !== "string" || (action !== "suspend" && action !== "resume")) {
    throw new DstdError("E_REQUEST", 'leg needs { name: string, leg: string, action: "suspend" | "resume" }');
  }
  return { name, leg, action };
}

/** Does this tree hold a mirror (something `dstd leg` can act on)? */
export function treeHasMirror(node: TreeNodeSpec): boolean {
  return "legs" in node && (node.kind === "mirror" || node.legs.some((leg) => treeHasMirror(leg.node)));
}

/**
 * What export `config`'s layout record under `stateDir` refuses in its configured tree, one
 * line each naming the export (storage/tree/tree-layout.ts layoutProblems), and why the record
 * cannot be read (`unreadable`: the export would not start either); nothing for an export that
 * is not a tree or has no record.
 */
export function treeLayoutProblems(config: ExportConfig, stateDir: string): { problems: string[]; unreadable: string | null } {
  if (config.backend.kind !== "tree") return { problems: [], unreadable: null };
  let book: LayoutBook;
  try {
    book = LayoutBook.open(stateDir, config.name);
  } catch (error) {
    return { problems: [], unreadable: `export '${config.name}': ${errorMessage(error)}` };
  }
  const problems = layoutProblems(config.backend.root, (at) => book.get(at)).map((problem) => `export '${config.name}': ${problem} (layout record ${book.path})`);
  return { problems, unreadable: null };
}

/** Why `dstd resize` leaves an export of this replication role alone (a primary only while a role change runs). */
const READ_ONLY_ROLES: Partial<Record<string, string>> = {
  secondary: "a replication secondary: its disk changes only through its primary's log (resize the primary; its RESIZE record reaches this node)",
  diverged: "a diverged old primary, served read-only until dstd replica resync repairs it",
};

/** Longest a checked shrink waits, its tail fenced, for the mutations under way (storage/layers/shrink-gate.ts). */
const SHRINK_PATIENCE_MS = 30_000;

/** The DST epochs of the export groups this process runs (one per startExportNode, until it closes). */
const LOCAL_EPOCHS = new Set<number>();

/**
 * How a reload opens new tree nodes (daemon/export-tree-changes.ts OpenNode): as an export
 * opens them, locked, with the export's layout record — held back (HeldRecords) for a new
 * mirror leg until the mirror's record of it is durable.
 */
export function reloadOpener(log: TreeLog, bookOf: (name: string) => LayoutBook | null): OpenNode {
  return (name, node, grown, at, held) => {
    const book = bookOf(name);
    let layout: LayoutRecords | null = book;
    if (book !== null && held !== undefined) {
      const records = new HeldRecords(book);
      held.push(() => records.release());
      layout = records;
    }
    return openTree(node, { log, lock: true, grown, layout, at, localEpochs: LOCAL_EPOCHS });
  };
}

/** A tree with a linear or stripe node: its layout record needs a state directory (storage/tree/layout-book.ts). */
export function treeHasLayout(node: TreeNodeSpec): boolean {
  return "legs" in node && (node.kind === "linear" || node.kind === "stripe" || node.legs.some((leg) => treeHasLayout(leg.node)));
}


export interface ExportNode {
  server: DstServer;
  exports: Export[];
  /** The replicated exports ([export.replication]), by export name. */
  replicas: Map<string, ReplicaHandle>;
  /** DST listeners' bound addresses (real ports). */
  dstAddresses: ListenAddress[];
  nbdAddresses: ListenAddress[];
  /**
   * Apply a reload's new allow lists and keys to the running exports, at once: new
   * connections see them, live DST and NBD sessions that lost their grant are closed or
   * downgraded to read-only (returns one line per change). Only these policy fields may
   * differ from what the node was started with (daemon/reload-plan.ts decides).
   */
  updatePolicy(configs: readonly ExportConfig[], keys: readonly KeyConfig[]): string[];
  /**
   * A reload's change, prepared: legs appended to a linear root, and mirror legs replaced or
   * added at any mirror of the tree, are opened now (a failure rejects, nothing changed:
   * daemon/export-tree-changes.ts); `commit` applies them, announces new sizes and applies the
   * policy (updatePolicy). Only policy and those legs may differ from the running
   * configuration (daemon/tree-changes.ts decides).
   */
  prepareUpdate(configs: readonly ExportConfig[], keys: readonly KeyConfig[]): Promise<PreparedTreeChanges>;
  /**
   * Grow (or, with allowShrink, shrink) export `name` while clients stay connected; DST clients
   * hear the new size in band. A shrink is refused while data lies past the new end, unless
   * forced. Resolves with a one-line report.
   */
  resize(name: string, size: number, options: { allowShrink: boolean; force: boolean }): Promise<string>;
  /** Suspend a mirror leg of export `name` for maintenance, or resume it (docs/tree.md); a one-line report. */
  holdLeg(name: string, leg: string, action: LegAction): Promise<string>;
  stop(): Promise<void>;
}

export interface ExportNodeOptions {
  exports: readonly ExportConfig[];
  /** Identities and their pre-shared keys ([[key]] / --key-file). */
  keys?: readonly KeyConfig[];
  log: Log;
  /** Factory for the NBD front end (nbd/connection.ts); null when NBD is not built in. */
  nbdAccept?: ((exports: Export[], log: Log, memory?: Budget) => GuardedAcceptHandler & { recheck?(): string[]; rebind?(name: string): string[] }) | null;
  /** Deadlines and connection caps (config `[limits]`); defaults from config/defaults.ts. */
  limits?: ConnectionLimits;
  /** The process-wide connection budget (`dstd up` shares one among its units); default: made here. */
  budget?: ConnectionBudget;
  /** Per-request metrics (dstd up). */
  observer?: RequestObserver;
  /** Observe accepted connections (`dstd up` counts bytes and lists peers: status/connections.ts). */
  wrapAccept?: (accept: GuardedAcceptHandler, protocol: "dst" | "nbd") => GuardedAcceptHandler;
  /**
   * Where the trees' layout records live (`<stateDir>/layout/`, storage/tree/layout-book.ts):
   * `dstd up`'s state_dir, `dstd export --state-dir`. None: linear nodes are placed by their
   * legs' sizes and warn that nothing records where their data lies.
   */
  stateDir?: string | null;
}

/** "1 GiB sparse file /srv/disk.img", "512 MiB memory disk", "10 GiB block device /dev/sdb". */
function describePort(port: StoragePort): string {
  const size = formatSize(port.size);
  if (port.kind === "memory") return `${size} memory disk`;
  if (port.kind === "file") return `${size} sparse file ${port.description}`;
  if (port.kind === "device") return `${size} block device ${port.description}`;
  return `${size} ${port.kind} ${port.description}`;
}

/** Group exports by listen address: one listener may serve several exports. */
function byAddress(configs: readonly ExportConfig[], pick: (c: ExportConfig) => readonly ListenAddress[]) {
  const groups = new Map<string, ListenAddress>();
  for (const config of configs) for (const address of pick(config)) groups.set(describeListenAddress(address), address);
  return [...groups.values()];
}

/** Load every key; a key file naming another identity than its entry is a config error. */
export function loadKeyTable(keys: readonly KeyConfig[]): KeyTable {
  const table = new Map<string, Uint8Array[]>();
  for (const key of keys) {
    let secret: Uint8Array;
    if (key.kind === "file") {
      const material = loadKeyFile(key.path);
      if (material.identity !== key.identity) {
        throw new DstdError("E_KEY", `key file ${key.path} is for identity '${material.identity}', not '${key.identity}'`);
      }
      secret = material.secret;
    } else {
      secret = key.secret;
    }
    table.set(key.identity, [...(table.get(key.identity) ?? []), secret]);
  }
  return table;
}

export async function startExportNode(options: ExportNodeOptions): Promise<ExportNode> {
  const { log } = options;
  const exports: Export[] = [];
  /** Tells the server's admitted sessions about a replica's role change (DstServer.rebind); none before it is up. */
  let rebind = (_name: string): void => {};
  const listeners: Listener[] = [];
  const fronts: Array<{ recheck?(): string[]; rebind?(name: string): string[] }> = [];
  const guards: ConnectionGuard[] = [];
  /** Files this start created (a missing --file with --size): removed again if the start fails. */
  const created: string[] = [];
  let stopTicker = () => {};
  const replicas = new Map<string, ReplicaHandle>();
  const disks: StoragePort[] = [];
  /** Per tree export: its layout record (one instance, shared by the opens and reloads). */
  const books = new Map<string, LayoutBook | null>();
  const bookOf = (name: string): LayoutBook | null => {
    if (!books.has(name)) books.set(name, options.stateDir == null ? null : LayoutBook.open(options.stateDir, name));
    return books.get(name)!;
  };
  // The DST epoch this group's server will answer with, known before its trees open: a tree
  // leg that reaches any export of this process is refused (storage/remote/remote-port.ts).
  const epoch = randomBytes(6).readUIntBE(0, 6);
  LOCAL_EPOCHS.add(epoch);
  const closeAll = async () => {
    LOCAL_EPOCHS.delete(epoch);
    stopTicker();
    for (const guard of guards) guard.close();
    for (const listener of listeners) await listener.close();
    for (const replica of replicas.values()) await replica.close();
    for (const disk of disks) await disk.close();
  };
  try {
    for (const config of options.exports) {
      const disk = await openExportPort(config, log, created, bookOf);
      disks.push(disk);
      const entry: Export = {
        name: config.name,
        description: config.description,
        port: new ShrinkGate(disk),
        readOnly: config.readOnly,
        allow: [...config.allow],
        suites: config.suites,
        checksums: config.checksums,
      };
      if (config.replication) {
        // A secondary (or a diverged old primary) serves its disk read-only; roles may change while running.
        const bind = (port: StoragePort, source: Export["log"], readOnly: boolean) => {
          // Rebinding the same port keeps its gate (and the NBD connections on it: nbd-front.ts rebind).
          if (!(entry.port instanceof ShrinkGate && entry.port.below === port)) entry.port = new ShrinkGate(port);
          entry.log = source;
          entry.readOnly = readOnly;
          rebind(entry.name);
        };
        replicas.set(config.name, await openReplica(config, disk, log, bind));
      }
      exports.push(entry);
      if (config.allow.length === 0) {
        log.warn(`export '${config.name}' has no allow entries: every client will be refused (add --allow CIDR[:ro|:rw])`);
      }
      for (const warning of exportWarnings(config)) log.warn(warning);
    }
    const server = new DstServer({ exports, log, keys: loadKeyTable(options.keys ?? []), defer: setImmediate, observer: options.observer, epoch });
    rebind = (name) => {
      server.rebind(name);
      for (const front of fronts) front.rebind?.(name);
    };
    const limits = options.limits ?? DEFAULT_CONNECTION_LIMITS;
    const budget = options.budget ?? startConnectionBudget(limits.maxConnections, log);
    const wrap = options.wrapAccept ?? ((accept: GuardedAcceptHandler) => accept);
    const guard = (protocol: string, accept: GuardedAcceptHandler) => {
      // NBD connections gather WRITEs in the same memory as their replies (nbd-front.ts).
      const receive = protocol === "DST" ? server.receiveBudget : server.replyBudget;
      const made = new ConnectionGuard(accept, { protocol, limits, budget, log, replyStarved: () => server.replyBudget.starved, receiveStarved: () => receive.starved });
      guards.push(made);
      return made.accept;
    };
    const dstListener = await listen(byAddress(options.exports, (c) => c.listen), guard("DST", wrap(server.accept, "dst")));
    listeners.push(dstListener);
    const nbdAddresses: ListenAddress[] = [];
    const nbdWanted = byAddress(options.exports, (c) => c.nbdListen);
    if (nbdWanted.length > 0 && !options.nbdAccept) throw new Error("NBD front end not available in this build");
    for (const address of nbdWanted) {
      // Only the exports that asked for this NBD address are reachable through it.
      const key = describeListenAddress(address);
      const names = new Set(options.exports.filter((c) => c.nbdListen.some((a) => describeListenAddress(a) === key)).map((c) => c.name));
      const front = options.nbdAccept!(exports.filter((e) => names.has(e.name)), log, server.replyBudget);
      fronts.push(front);
      const nbdListener = await listen([address], guard("NBD", wrap(front, "nbd")));
      listeners.push(nbdListener);
      nbdAddresses.push(...nbdListener.bound);
    }
    for (const e of exports) {
      log.info(`export '${e.name}': ${describePort(e.port)}${e.readOnly ? " (read-only)" : ""}`);
    }
    for (const address of dstListener.bound) log.info(`listening for DST on ${describeListenAddress(address)}`);
    const ticker = setInterval(() => server.tick(), 1000);
    stopTicker = () => clearInterval(ticker);
    for (const address of nbdAddresses) log.info(`listening for NBD on ${describeListenAddress(address)}`);
    const updatePolicy = (configs: readonly ExportConfig[], keys: readonly KeyConfig[]): string[] => {
      const changes: string[] = [];
      for (const config of configs) {
        const e = exports.find((x) => x.name === config.name);
        if (e === undefined) continue;
        const before = e.allow.map((r) => r.source).join(",");
        e.allow = [...config.allow];
        e.suites = config.suites;
        e.checksums = config.checksums;
        if (before !== e.allow.map((r) => r.source).join(",")) changes.push(`export '${e.name}': allow list now ${e.allow.map((r) => r.source).join(", ") || "(empty: refuses everyone)"}`);
        const ship = replicas.get(e.name)?.log;
        if (ship instanceof LogShipServer) changes.push(...ship.forgetUngranted((secondary) => grantsReplica(e.allow, secondary)).map((line) => `export '${e.name}': ${line}`));
      }
      changes.push(...server.revalidate(loadKeyTable(keys)));
      for (const front of fronts) changes.push(...(front.recheck?.() ?? []));
      return changes;
    };
    let running = options.exports;
    const prepareUpdate = async (configs: readonly ExportConfig[], keys: readonly KeyConfig[]): Promise<PreparedTreeChanges> => {
      const changes = treeChanges(running, configs);
      if (changes === null) throw new DstdError("E_CONFIG", "this reload changes more than allow lists, keys, appended linear legs and replaced or added mirror legs: the export group must restart");
      const targets = [...changes].map(([name, change]) => ({ name, change, port: exports.find((e) => e.name === name)!.port }));
      const prepared = await prepareTreeChanges(targets, reloadOpener(treeLog(log), bookOf), (name) => server.announceSize(name), (message) => log.warn(message));
      return {
        commit: (failures?: string[]) => {
          const changes = prepared.commit(failures);
          changes.push(...updatePolicy(configs, keys));
          running = configs;
          return changes;
        },
        abort: () => prepared.abort(),
      };
    };
    const resize = async (name: string, size: number, resizeOptions: { allowShrink: boolean; force: boolean }): Promise<string> => {
      const e = exports.find((x) => x.name === name);
      if (e === undefined) throw new DstdError("E_USAGE", `no export named '${name}'`);
      if (e.readOnly) {
        // A secondary's (or a diverged node's) disk changes only through its primary's log: a
        // size of its own would cut what the log writes later, or outgrow the primary's.
        const role = replicas.get(name)?.role;
        throw new DstdError("E_USAGE", `export '${name}' is not resized: it is ${role === undefined ? "read-only (read_only = true)" : (READ_ONLY_ROLES[role] ?? `a replication ${role} served read-only now`)}`);
      }
      const before = e.port.size;
      const resized = () => `export '${name}' resized from ${formatSize(before)} to ${formatSize(e.port.size)}`;
      if (size < before && !resizeOptions.allowShrink) {
        throw new DstdError("E_USAGE", `export '${name}' is ${formatSize(before)}; shrinking it to ${formatSize(size)} loses what lies past the new end: add --allow-shrink`);
      }
      if (size >= before || resizeOptions.force) {
        await server.resize(name, size);
        return resized();
      }
      const gate = e.port;
      if (!(gate instanceof ShrinkGate)) throw new AssertionError(`export '${name}' is served without its shrink gate`);
      // Checked with nothing left that could still put data past the new end, and cut before
      // anything can (storage/layers/shrink-gate.ts).
      // The tail stays fenced at most SHRINK_PATIENCE_MS waiting for mutations under way (one that never completes).
      let timer: ReturnType<typeof setTimeout> | undefined;
      const patience = new Promise<void>((resolve) => (timer = setTimeout(resolve, SHRINK_PATIENCE_MS)));
      const data = await gate
        .shrinkIfEmpty(
          size,
          async () => {
            // A role change while it was checked (a demote binds the bare disk, read-only) would leave this gate's fence behind.
            if (e.port !== gate || e.readOnly) throw new DstdError("E_STATE", `export '${name}' changed role while its shrink was checked: not resized`);
            await server.resize(name, size);
          },
          patience,
        )
        .finally(() => clearTimeout(timer));
      if (data !== null) throw new DstdError("E_USAGE", `export '${name}' holds data past ${formatSize(size)} (${data}): shrinking would lose it; add --force to shrink anyway`);
      return resized();
    };
    const holdLeg = async (name: string, selector: string, action: LegAction): Promise<string> => {
      const e = exports.find((x) => x.name === name);
      if (e === undefined) throw new DstdError("E_USAGE", `no export named '${name}'`);
      return holdMirrorLeg(e.port, name, selector, action);
    };
    return { server, exports, replicas, dstAddresses: dstListener.bound, nbdAddresses, updatePolicy, prepareUpdate, resize, holdLeg, stop: closeAll };
  } catch (error) {
    await closeAll();
    // A failed start leaves nothing behind: not even the sparse file it just created.
    for (const path of created) rmSync(path, { force: true });
    throw error;
  }
}

/**
 * The port an export serves: a local backend, or a storage tree (storage/tree/open.ts; legs
 * are opened writable, since a mirror writes its metadata — a read-only export refuses
 * writes itself).
 */
async function openExportPort(config: ExportConfig, log: Log, created: string[], bookOf: (name: string) => LayoutBook | null): Promise<StoragePort> {
  const b = config.backend;
  if (b.kind === "tree") {
    return openTree(b.root, { log: treeLog(log), lock: true, layout: bookOf(config.name), localEpochs: LOCAL_EPOCHS });
  }
  if (b.kind === "rbd") return openPort(b, config.readOnly, { log });
  const spec =
    b.kind === "file" ? { kind: "file" as const, path: b.path, size: b.sizeBytes ?? undefined } : b.kind === "device" ? { kind: "device" as const, path: b.path } : { kind: "memory" as const, size: b.sizeBytes };
  const isNew = spec.kind === "file" && !existsSync(spec.path);
  // One export per backing file: a second one is refused, naming the holder (storage/local/lock.ts).
  // A file `dstd resize` grew is served at its size, whatever size it was created with.
  const backend = openBackend(spec, config.readOnly, { lock: true, grown: true });
  if (isNew) created.push(spec.path);
  return createLocalPort(backend, { readOnly: config.readOnly, description: backend.description, log });
}

function treeLog(log: Log) {
  return { info: (m: string) => log.info(m), warn: (m: string) => log.warn(m), debug: (m: string) => log.debug(m) };
}


/**
 * @module daemon/export-node — composition root of `dstd export`: resolved config in,
 * running listeners out. Opens every backend, starts the DST listeners (and the NBD
 * listeners where configured), and stops them cleanly. No argument parsing here (cli/).
 *
 * Every listener runs behind a ConnectionGuard (transport/guard.ts) with the `[limits]` of
 * the config; one ConnectionBudget, sized to stay below the file-descriptor limit
 * (transport/fd-budget.ts), is shared by all of them.
 */
import { openBackend } from "../storage/open.ts";
import { createLocalPort } from "../storage/local/port.ts";
import type { StoragePort } from "../storage/port.ts";
import { openTree } from "../storage/tree/open.ts";
import type { ExportConfig, KeyConfig } from "../config/schema.ts";
import type { KeyTable } from "../crypto/dst-auth.ts";
import { loadKeyFile } from "../crypto/keys.ts";
import { DstdError } from "../lib/errors.ts";
import type { ListenAddress } from "../lib/address.ts";
import { formatSize } from "../lib/size.ts";
import type { Log } from "../lib/log.ts";
import { DstServer } from "../export/server.ts";
import type { Export } from "../export/exports.ts";
import { DEFAULT_CONNECTION_LIMITS } from "../config/defaults.ts";
import { ConnectionGuard, type ConnectionLimits, type GuardedAcceptHandler } from "../transport/guard.ts";
import { ConnectionBudget, connectionCapacity } from "../transport/fd-budget.ts";
import { describeListenAddress, listen, type Listener } from "../transport/tcp.ts";


export interface ExportNode {
  server: DstServer;
  exports: Export[];
  /** DST listeners' bound addresses (real ports). */
  dstAddresses: ListenAddress[];
  nbdAddresses: ListenAddress[];
  stop(): Promise<void>;
}

export interface ExportNodeOptions {
  exports: readonly ExportConfig[];
  /** Identities and their pre-shared keys ([[key]] / --key-file). */
  keys?: readonly KeyConfig[];
  log: Log;
  /** Factory for the NBD front end (nbd/connection.ts); null when NBD is not built in. */
  nbdAccept?: ((exports: Export[], log: Log) => GuardedAcceptHandler) | null;
  /** Deadlines and connection caps (config `[limits]`); defaults from config/defaults.ts. */
  limits?: ConnectionLimits;
  /** Observe accepted connections (`dstd up` counts bytes and lists peers: status/connections.ts). */
  wrapAccept?: (accept: GuardedAcceptHandler, protocol: "dst" | "nbd") => GuardedAcceptHandler;
}

function describePort(port: StoragePort): string {
  return `${formatSize(port.size)} ${port.kind} ${port.description}`;
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
  const listeners: Listener[] = [];
  const guards: ConnectionGuard[] = [];
  let stopTicker = () => {};
  const closeAll = async () => {
    stopTicker();
    for (const guard of guards) guard.close();
    for (const listener of listeners) await listener.close();
    for (const e of exports) await e.port.close();
  };
  try {
    for (const config of options.exports) {
      exports.push({
        name: config.name,
        description: config.description,
        port: await openExportPort(config, log),
        readOnly: config.readOnly,
        allow: [...config.allow],
        suites: config.suites,
        checksums: config.checksums,
      });
      if (config.allow.length === 0) {
        log.warn(`export '${config.name}' has no allow entries: every client will be refused (add --allow CIDR[:ro|:rw])`);
      }
    }
    const server = new DstServer({ exports, log, keys: loadKeyTable(options.keys ?? []), defer: setImmediate });
    const limits = options.limits ?? DEFAULT_CONNECTION_LIMITS;
    const budget = startBudget(limits, log);
    const wrap = options.wrapAccept ?? ((accept: GuardedAcceptHandler) => accept);
    const guard = (protocol: string, accept: GuardedAcceptHandler) => {
      const made = new ConnectionGuard(accept, { protocol, limits, budget, log });
      guards.push(made);
      return made.accept;
    };
    const dstListener = await listen(byAddress(options.exports, (c) => c.listen), guard("DST", wrap(server.accept, "dst")));
    listeners.push(dstListener);
    let nbdAddresses: ListenAddress[] = [];
    const nbdWanted = byAddress(options.exports, (c) => c.nbdListen);
    if (nbdWanted.length > 0) {
      if (!options.nbdAccept) throw new Error("NBD front end not available in this build");
      const nbdListener = await listen(nbdWanted, guard("NBD", wrap(options.nbdAccept(exports, log), "nbd")));
      listeners.push(nbdListener);
      nbdAddresses = nbdListener.bound;
    }
    for (const e of exports) {
      log.info(`export '${e.name}': ${describePort(e.port)}${e.readOnly ? " (read-only)" : ""}`);
    }
    for (const address of dstListener.bound) log.info(`listening for DST on ${describeListenAddress(address)}`);
    const ticker = setInterval(() => server.tick(), 1000);
    stopTicker = () => clearInterval(ticker);
    for (const address of nbdAddresses) log.info(`listening for NBD on ${describeListenAddress(address)}`);
    return { server, exports, dstAddresses: dstListener.bound, nbdAddresses, stop: closeAll };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/**
 * The port an export serves: a local backend, or a storage tree (storage/tree/open.ts; legs
 * are opened writable, since a mirror writes its metadata — a read-only export refuses
 * writes itself).
 */
async function openExportPort(config: ExportConfig, log: Log): Promise<StoragePort> {
  const b = config.backend;
  if (b.kind === "tree") {
    return openTree(b.root, { log: { info: (m) => log.info(m), warn: (m) => log.warn(m), debug: (m) => log.debug(m) }, lock: true });
  }
  const spec =
    b.kind === "file" ? { kind: "file" as const, path: b.path, size: b.sizeBytes ?? undefined } : b.kind === "device" ? { kind: "device" as const, path: b.path } : { kind: "memory" as const, size: b.sizeBytes };
  // One export per backing file: a second one is refused, naming the holder (storage/local/lock.ts).
  const backend = openBackend(spec, config.readOnly, { lock: true });
  return createLocalPort(backend, { readOnly: config.readOnly, description: backend.description, log });
}

/** Raise the descriptor limit and size the process-wide connection budget to fit below it. */
function startBudget(limits: ConnectionLimits, log: Log): ConnectionBudget {
  const capacity = connectionCapacity(limits.maxConnections);
  const files = Number.isFinite(capacity.fileLimit) ? `${capacity.fileLimit}` : "unlimited";
  if (capacity.raisedFrom !== null) log.debug(`file-descriptor limit raised from ${capacity.raisedFrom} to ${files}`);
  if (capacity.limitedByFiles) {
    log.warn(
      `at most ${capacity.max} connections (not max_connections = ${limits.maxConnections}): the file-descriptor ` +
        `limit is ${files} and ${capacity.openFds} are in use; raise it (ulimit -n, systemd LimitNOFILE=) for more`,
    );
  }
  return new ConnectionBudget(capacity.max);
}

/**
 * @module cli/preflight — what `dstd check-config` checks beyond the schema: the things
 * `dstd export` and `dstd attach` would refuse at start, looked up on this machine without
 * starting anything.
 *
 * Problems (export/attach would refuse to start): key files that are missing, unreadable,
 * readable by others or for another identity (crypto/keys.ts loadKeyFile is the same check
 * the daemons run); one file, device or log_dir under two names (a symlink, a hard link,
 * /dev/disk/by-id/…) used as config/storage-uses.ts refuses one name used twice; export
 * files and devices that cannot be opened as configured; for RBD
 * images (the export's, or a tree's rbd legs) a missing librbd, and a ceph_conf or
 * ceph_keyring that is missing, unreadable by this user or not a regular file.
 * Warnings (it may work elsewhere, or as another user): listen addresses this user cannot
 * bind now (tried for real on TCP, and released at once; checked on the folder for Unix
 * sockets), a state_dir or replication log_dir this user cannot create or write, and allow
 * rules that can never match (config/warnings.ts).
 */
import { accessSync, constants, mkdtempSync, rmdirSync, statSync, type Stats } from "node:fs";
import { dirname, join } from "node:path";
import { Issues } from "../config/fields.ts";
import { checkStorageAliases } from "../config/storage-uses.ts";
import type { Config, TreeNodeSpec } from "../config/types.ts";
import { exportWarnings } from "../config/warnings.ts";
import { loadKeyFile } from "../crypto/keys.ts";
import type { ListenAddress } from "../lib/address.ts";
import { errorMessage } from "../lib/errors.ts";
import { rbdPreflight } from "../storage/rbd/open.ts";
import { treeLayoutProblems } from "../daemon/export-node.ts";
import { describeListenAddress, listen, type Listener, ownListenerOverlapping } from "../transport/tcp.ts";

export interface Preflight {
  problems: string[];
  warnings: string[];
}

function statOrNull(path: string): Stats | null {
  try {
    return statSync(path);
  } catch {
    return null;
  }
}

function checkKeyFile(path: string, where: string, identity: string | null, problems: string[]): void {
  try {
    const material = loadKeyFile(path);
    if (identity !== null && material.identity !== identity) {
      problems.push(`${where}: key file ${path} is for identity '${material.identity}', not '${identity}'`);
    }
  } catch (error) {
    problems.push(`${where}: ${errorMessage(error)}`);
  }
}

function checkBackend(config: Config["exports"][number], where: string, problems: string[]): void {
  const backend = config.backend;
  if (backend.kind === "memory") return;
  if (backend.kind === "tree") {
    // Other legs are checked when opened; an rbd leg's library and files are cheap to check here.
    checkRbdLegs(backend.root, `${where}.tree`, problems);
    return;
  }
  if (backend.kind === "rbd") {
    for (const problem of rbdPreflight(backend.rbd)) problems.push(`${where}.rbd: ${problem}`);
    return;
  }
  const stats = statOrNull(backend.path);
  if (backend.kind === "device") {
    if (stats === null) problems.push(`${where}.device: ${backend.path} does not exist`);
    else if (!stats.isBlockDevice()) problems.push(`${where}.device: ${backend.path} is not a block device${stats.isFile() ? " (use file = for a regular file)" : ""}`);
    return;
  }
  if (stats === null) {
    if (backend.sizeBytes === null) problems.push(`${where}.file: ${backend.path} does not exist; give size to create it`);
    else if (config.readOnly) problems.push(`${where}.file: ${backend.path} does not exist; a read-only export needs an existing file`);
    else if (statOrNull(dirname(backend.path))?.isDirectory() !== true) problems.push(`${where}.file: folder ${dirname(backend.path)} does not exist`);
    return;
  }
  if (!stats.isFile()) {
    problems.push(`${where}.file: ${backend.path} is not a regular file${stats.isBlockDevice() ? " (use device = for a block device)" : ""}`);
  } else if (backend.sizeBytes !== null && stats.size < backend.sizeBytes) {
    // Larger is served at its own size, as `dstd export` opens it (a file `dstd resize` grew: storage/local/file.ts `grown`).
    problems.push(`${where}.size: ${backend.path} exists with ${stats.size} bytes, less than ${backend.sizeBytes}; an existing file is never resized (remove size to use it as it is)`);
  }
}

function checkRbdLegs(node: TreeNodeSpec, where: string, problems: string[]): void {
  if (node.kind === "rbd") {
    for (const problem of rbdPreflight(node.rbd)) problems.push(`${where}: ${problem}`);
    return;
  }
  if (node.kind === "mirror" || node.kind === "linear" || node.kind === "stripe") {
    node.legs.forEach((leg, i) => checkRbdLegs(leg.node, `${where}.${node.kind}[${i}]`, problems));
  }
}

/** Listeners the check holds until it ends, so that two of the config's addresses that are one on this machine collide here too. */
interface Held {
  listener: Listener;
  where: string;
}

async function checkListen(address: ListenAddress, where: string, held: Held[], problems: string[], warnings: string[]): Promise<void> {
  const text = describeListenAddress(address);
  if (address.transport === "unix") {
    const dir = dirname(address.path);
    const existing = statOrNull(address.path);
    if (statOrNull(dir)?.isDirectory() !== true) {
      warnings.push(`${where}: cannot listen on ${text}: folder ${dir} does not exist`);
    } else if (existing !== null && !existing.isSocket()) {
      warnings.push(`${where}: cannot listen on ${text}: a file that is not a socket is in the way`);
    } else {
      try {
        accessSync(dir, constants.W_OK | constants.X_OK);
      } catch {
        warnings.push(`${where}: cannot listen on ${text}: this user cannot create a socket in ${dir}`);
      }
    }
    return;
  }
  if (address.port === 0) return;
  const mine = ownListenerOverlapping(address);
  try {
    held.push({ listener: await bind(address), where });
  } catch (error) {
    const other = mine === null ? undefined : held.find((h) => h.listener.bound.includes(mine));
    if (other === undefined || !(await takenBy(other, address))) return void warnings.push(`${where}: ${errorMessage(error)} (as this user, now)`);
    problems.push(`${where}: ${text} and ${other.where} (${describeListenAddress(mine!)}) are one address on this machine and cannot both be listened on; name it once, the same way everywhere`);
  }
}

function bind(address: ListenAddress): Promise<Listener> {
  return listen([address], () => ({ onData() {}, onDrain() {}, onClose() {} }));
}

/** Whether `address` binds once `other` lets go (so `other` holds it, not another process); `other` is bound again after. */
async function takenBy(other: Held, address: ListenAddress): Promise<boolean> {
  const again = other.listener.bound[0]!;
  await other.listener.close();
  let free = false;
  try {
    await (await bind(address)).close();
    free = true;
  } catch {
    // still taken: by another process
  }
  try {
    other.listener = await bind(again);
  } catch {
    // taken meanwhile by another process: the check goes on without it
  }
  return free;
}

/**
 * A directory dstd creates when missing (state_dir, a replication log_dir): it, or the nearest
 * folder above it that exists, must take a new entry — tried for real (a folder made and
 * removed at once, as the listen check binds and releases), since permission bits say nothing
 * for root or for /proc. A warning: the node may run as another user.
 */
function checkWritableDir(path: string, where: string, warnings: string[]): void {
  let at = path;
  while (statOrNull(at) === null && dirname(at) !== at) at = dirname(at);
  const what = at === path ? path : `${path} cannot be created: ${at}`;
  if (statOrNull(at)?.isDirectory() !== true) return void warnings.push(`${where}: ${what} is not a folder (as this user, now)`);
  try {
    rmdirSync(mkdtempSync(join(at, ".dstd-check-")));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? errorMessage(error);
    warnings.push(`${where}: ${what} takes no new entry (${code}) (as this user, now)`);
  }
}

/** What a path is on this machine: a block device by its device number, anything else by device and inode (null: nothing there yet). */
function identity(path: string): string | null {
  const stats = statOrNull(path);
  if (stats === null) return null;
  return stats.isBlockDevice() ? `block:${stats.rdev}` : `inode:${stats.dev}:${stats.ino}`;
}

export async function preflight(config: Config): Promise<Preflight> {
  const problems: string[] = [];
  const warnings: string[] = [];
  // One file, device or log_dir under two names (the config check compares names as written).
  const aliases = new Issues(null);
  checkStorageAliases(config.exports, identity, aliases);
  for (const issue of aliases.list) problems.push(`${issue.path}: ${issue.message}`);
  checkWritableDir(process.env.DSTD_STATE_DIR || config.stateDir, "state_dir", warnings); // as dstd up picks it
  config.exports.forEach((e, i) => {
    if (e.replication) checkWritableDir(e.replication.logDir, `export[${i}].replication.log_dir`, warnings);
  });
  config.keys.forEach((key, i) => {
    if (key.kind === "file") checkKeyFile(key.path, `key[${i}]`, key.identity, problems);
  });
  if (config.client.keyFile !== null) checkKeyFile(config.client.keyFile, "client.key_file", null, problems);
  config.attaches.forEach((attach, i) => {
    if (attach.keyFile !== null && attach.keyFile !== config.client.keyFile) checkKeyFile(attach.keyFile, `attach[${i}].key_file`, null, problems);
  });
  const seen = new Set<string>();
  const held: Held[] = [];
  const tryListen = async (address: ListenAddress, where: string) => {
    const key = describeListenAddress(address);
    if (seen.has(key)) return;
    seen.add(key);
    await checkListen(address, where, held, problems, warnings);
  };
  for (const [i, e] of config.exports.entries()) {
    checkBackend(e, `export[${i}]`, problems);
    for (const address of e.listen) await tryListen(address, `export[${i}].listen`);
    for (const address of e.nbdListen) await tryListen(address, `export[${i}].nbd_listen`);
    warnings.push(...exportWarnings(e));
    // A tree the layout record under state_dir refuses would not start (docs/tree.md "The layout record").
    const layout = treeLayoutProblems(e, process.env.DSTD_STATE_DIR || config.stateDir); // as dstd up picks it (an empty variable counts as unset)
    problems.push(...layout.problems);
    if (layout.unreadable !== null) warnings.push(layout.unreadable);
  }
  for (const [i, a] of config.attaches.entries()) if (a.nbdListen !== null) await tryListen(a.nbdListen, `attach[${i}].nbd_listen`);
  for (const h of held) await h.listener.close();
  return { problems, warnings };
}

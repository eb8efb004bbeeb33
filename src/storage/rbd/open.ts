/**
 * @module storage/rbd/open — opens a configured Ceph RBD image (config/types.ts RbdSpec) as a
 * StoragePort: connect to the cluster, open the pool, open the image (at its snapshot, if
 * any, read-only). Failures are DstdError E_OPEN naming the image and what failed; whatever
 * was opened is closed again.
 */
import { closeSync, constants, fstatSync, openSync } from "node:fs";
import type { RbdSpec } from "../../config/types.ts";
import { DstdError, errorMessage } from "../../lib/errors.ts";
import { RbdError, RbdImage, rbdLibraryProblem } from "../../sys/librbd.ts";
import type { StoragePort } from "../port.ts";
import { RbdPort } from "./port.ts";

/** rados_connect and monitor commands give up after this (client_mount_timeout, rados_mon_op_timeout); ceph.conf may override. */
export const RBD_CONNECT_TIMEOUT_SECONDS = 30;

/**
 * An OSD operation (a request's I/O, a header refresh, a close) fails with ETIMEDOUT after this
 * (rados_osd_op_timeout; librados's own default waits for ever); ceph.conf may override.
 * docs/rbd.md "What blocks": half the client engine's default deadline (engine/options.ts,
 * 120 s), so the export answers with the error before a client gives up on its own and a
 * mirror degrades an RBD leg before its writes time out at the client; and longer than an OSD
 * takes to be marked down and its placement groups to move (about 20-30 s), so an OSD restart
 * or failover is ridden out without an error.
 */
export const RBD_OSD_OP_TIMEOUT_SECONDS = 60;

/** `rbd:POOL/[NAMESPACE/]IMAGE[@SNAP]`, as status and logs show it. */
export function describeRbd(spec: RbdSpec): string {
  const ns = spec.namespace === null ? "" : `${spec.namespace}/`;
  return `rbd:${spec.pool}/${ns}${spec.image}${spec.snapshot === null ? "" : `@${spec.snapshot}`}`;
}

/** What would stop the image from being opened on this machine, checked without a cluster. */
export function rbdPreflight(spec: RbdSpec): string[] {
  const problems: string[] = [];
  const library = rbdLibraryProblem();
  if (library !== null) problems.push(library);
  for (const [key, path] of [["ceph_conf", spec.conf], ["ceph_keyring", spec.keyring]] as const) {
    const problem = path === null ? null : unreadable(path);
    if (problem !== null) problems.push(`${key}: ${problem}`);
  }
  return problems;
}

/**
 * Why librados could not read `path` as this user (null: it can). Opened for real, as the key
 * file check does: mode bits say nothing for root, and a file that exists but cannot be read
 * fails the open just the same (an unreadable ceph.conf at rados_conf_read_file, a keyring at
 * rados_connect). Non-blocking, so that a FIFO named by mistake cannot hang the check.
 */
function unreadable(path: string): string | null {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? errorMessage(error);
    if (code === "ENOENT") return `${path} does not exist`;
    if (code === "EACCES") return `${path} is not readable by this user (EACCES)`;
    return `${path} cannot be opened (${code})`;
  }
  try {
    return fstatSync(fd).isFile() ? null : `${path} is not a regular file`;
  } finally {
    closeSync(fd);
  }
}

export async function openRbdPort(spec: RbdSpec, options: { readOnly: boolean; log?: { warn(message: string): void } }): Promise<StoragePort> {
  const description = describeRbd(spec);
  const readOnly = options.readOnly || spec.snapshot !== null;
  let image: RbdImage;
  try {
    // On the librbd opening worker: this thread serves on while rados_connect waits.
    image = await RbdImage.open(
      { conf: spec.conf, id: spec.id, keyring: spec.keyring, connectTimeoutSeconds: RBD_CONNECT_TIMEOUT_SECONDS, osdOpTimeoutSeconds: RBD_OSD_OP_TIMEOUT_SECONDS },
      { pool: spec.pool, namespace: spec.namespace, image: spec.image, snapshot: spec.snapshot, readOnly },
    );
  } catch (error) {
    throw openError(description, error);
  }
  return new RbdPort(image, { description, readOnly, log: options.log });
}

function openError(description: string, error: unknown): DstdError {
  const errno = error instanceof RbdError ? error.errno : 5;
  const hint = errno === 2 && error instanceof RbdError && error.call === "opening the image" ? " (create it with rbd create --size SIZE POOL/IMAGE)" : "";
  return new DstdError("E_OPEN", `cannot open ${description}: ${errorMessage(error)}${hint}`, { errno, cause: error });
}

/**
 * @module storage/open — turns a parsed export source (`--file`, `--device`, `--memory`) into
 * an open Backend, and any source (those, or `--rbd`: storage/rbd/) into an open StoragePort.
 * The one entry point the daemon and CLI use, so every source gets the same read-only handling.
 *
 * Must not: parse command lines or sizes (config does) or keep a registry of open backends.
 */
import { assertNever } from "../lib/assert.ts";
import { openBlockDevice } from "./local/block-device.ts";
import { openFileBackend } from "./local/file.ts";
import { createMemoryBackend } from "./local/memory.ts";
import type { Backend } from "./local/backend.ts";
import { createLocalPort } from "./local/port.ts";
import type { StoragePort } from "./port.ts";
import { openRbdPort } from "./rbd/open.ts";
import type { RbdSpec } from "../config/types.ts";

export type BackendSpec =
  | { kind: "file"; path: string; size?: number }
  | { kind: "device"; path: string }
  | { kind: "memory"; size: number };

/**
 * Open the backend; throws DstdError (E_CONFIG, E_OPEN, E_SIZE_MISMATCH, E_LOCKED) naming the
 * problem. `lock`: take the export lock on a file or device (storage/local/lock.ts).
 */
export function openBackend(spec: BackendSpec, readOnly: boolean, options: { lock?: boolean; grown?: boolean } = {}): Backend {
  const lock = options.lock === true;
  switch (spec.kind) {
    case "file":
      return openFileBackend(spec.path, { size: spec.size, readOnly, lock, grown: options.grown === true });
    case "device":
      return openBlockDevice(spec.path, { readOnly, lock });
    case "memory":
      return createMemoryBackend(spec.size, { readOnly });
    default:
      return assertNever(spec);
  }
}

/** A source served through its own asynchronous port rather than a local Backend. */
export type PortSpec = BackendSpec | { kind: "rbd"; rbd: RbdSpec };

/**
 * Open any source as a StoragePort: a local backend wrapped by storage/local/port.ts, or a Ceph
 * RBD image (storage/rbd/open.ts). Throws DstdError naming the problem.
 */
export async function openPort(
  spec: PortSpec,
  readOnly: boolean,
  options: { lock?: boolean; log?: { warn(message: string): void } } = {},
): Promise<StoragePort> {
  if (spec.kind === "rbd") return openRbdPort(spec.rbd, { readOnly, log: options.log });
  const backend = openBackend(spec, readOnly, options);
  return createLocalPort(backend, { readOnly, description: backend.description, log: options.log });
}

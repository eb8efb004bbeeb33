/**
 * @module storage/open — turns a parsed export source (`--file`, `--device`, `--memory`) into
 * an open Backend. The one entry point the daemon and CLI use, so every source gets the
 * same read-only handling.
 *
 * Must not: parse command lines or sizes (config does) or keep a registry of open backends.
 */
import { assertNever } from "../lib/assert.ts";
import { openBlockDevice } from "./local/block-device.ts";
import { openFileBackend } from "./local/file.ts";
import { createMemoryBackend } from "./local/memory.ts";
import type { Backend } from "./local/backend.ts";

export type BackendSpec =
  | { kind: "file"; path: string; size?: number }
  | { kind: "device"; path: string }
  | { kind: "memory"; size: number };

/**
 * Open the backend; throws DstdError (E_CONFIG, E_OPEN, E_SIZE_MISMATCH, E_LOCKED) naming the
 * problem. `lock`: take the export lock on a file or device (storage/local/lock.ts).
 */
export function openBackend(spec: BackendSpec, readOnly: boolean, options: { lock?: boolean } = {}): Backend {
  const lock = options.lock === true;
  switch (spec.kind) {
    case "file":
      return openFileBackend(spec.path, { size: spec.size, readOnly, lock });
    case "device":
      return openBlockDevice(spec.path, { readOnly, lock });
    case "memory":
      return createMemoryBackend(spec.size, { readOnly });
    default:
      return assertNever(spec);
  }
}

/**
 * @module crypto/keys — pre-shared key files and identities: generate, parse, load (with the
 * permission check) and write them, and wipe secret bytes. docs/security.md §Key files is the
 * prose specification of the format.
 *
 * Must not: put secret bytes (raw, base64 or hex) into any error message or log string, accept
 * a key file that group or others can read or write, or throw on malformed file contents
 * (parseKeyFile returns a reason; loadKeyFile wraps it in DstdError("E_KEY")).
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  constants,
  fstatSync,
  fsyncSync,
  openSync,
  readSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { DstdError } from "../lib/errors.ts";

/** Bytes of a pre-shared secret: 256 bits, the key size of every suite and of HKDF-SHA256. */
export const SECRET_SIZE = 32;
/** A key file is two short lines; anything bigger is the wrong file. */
export const KEY_FILE_MAX_BYTES = 64 * 1024;

const IDENTITY_RE = /^[A-Za-z0-9._-]{1,64}$/;
/** Standard base64 (RFC 4648 §4) with padding: what generateKeyFile writes. */
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/** `name = "value"` with an optional trailing comment: the TOML subset a key file uses. */
const FIELD_RE = /^([A-Za-z0-9_-]+)\s*=\s*"([^"\\]*)"\s*(?:#.*)?$/;

export interface KeyMaterial {
  identity: string;
  /** SECRET_SIZE bytes. The owner zeroes it (zero()) once the session keys are derived. */
  secret: Uint8Array;
}

/** Overwrites secret bytes in place. Strings cannot be wiped in JS; keep secrets in bytes. */
export function zero(bytes: Uint8Array): void {
  bytes.fill(0);
}

/** Why `identity` is not a valid identity, or null when it is. Never echoes the value. */
export function identityProblem(identity: string): string | null {
  if (IDENTITY_RE.test(identity)) return null;
  if (identity.length === 0) return "identity is empty";
  if (identity.length > 64)
    return `identity is ${identity.length} characters long; the limit is 64`;
  return "identity may only contain the characters A-Z a-z 0-9 . _ -";
}

/** A new key file for `identity`: TOML text holding 32 fresh random bytes in base64. */
export function generateKeyFile(identity: string): string {
  const problem = identityProblem(identity);
  if (problem !== null) throw new DstdError("E_KEY", `cannot generate a key: ${problem}`);
  const secret = randomBytes(SECRET_SIZE);
  const encoded = secret.toString("base64");
  zero(secret);
  return (
    "# dstd key: keep it secret (mode 0600). Both ends of a connection need the same file.\n" +
    `identity = "${identity}"\n` +
    `secret = "${encoded}"\n`
  );
}

/**
 * Parses key file text. `source` names the file in messages. Returns the key material or the
 * reason it was refused; reasons name a line number or a field, never the value.
 */
export function parseKeyFile(text: string, source: string): KeyMaterial | string {
  const fields = new Map<string, string>();
  const lines = text.replace(/^\uFEFF/, "").split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? "").replace(/\r$/, "").trim();
    if (line === "" || line.startsWith("#")) continue;
    const match = FIELD_RE.exec(line);
    const where = `${source} line ${i + 1}`;
    if (match === null) return `${where}: expected name = "value"`;
    const name = match[1] ?? "";
    if (name !== "identity" && name !== "secret") {
      return `${where}: unknown field (a key file holds only identity and secret)`;
    }
    if (fields.has(name)) return `${where}: duplicate field ${name}`;
    fields.set(name, match[2] ?? "");
  }
  const identity = fields.get("identity");
  const encoded = fields.get("secret");
  if (identity === undefined) return `${source}: missing field identity`;
  if (encoded === undefined) return `${source}: missing field secret`;
  const problem = identityProblem(identity);
  if (problem !== null) return `${source}: ${problem}`;
  const secret = decodeSecret(encoded);
  if (typeof secret === "string") return `${source}: ${secret}`;
  return { identity, secret };
}

function decodeSecret(encoded: string): Uint8Array | string {
  if (!BASE64_RE.test(encoded)) return "secret is not valid base64";
  const decoded = Buffer.from(encoded, "base64");
  if (decoded.length !== SECRET_SIZE) {
    const size = decoded.length;
    zero(decoded);
    const hint = "base64 of 32 random bytes, see dstd keygen";
    return `secret is ${size} bytes; it must be ${SECRET_SIZE} (${hint})`;
  }
  // Copy out of Buffer's shared pool so zero() on the result wipes only this secret.
  const secret = new Uint8Array(decoded);
  zero(decoded);
  if (secret.every((b) => b === 0))
    return "secret is all zero bytes; generate one with dstd keygen";
  return secret;
}

/**
 * Reads and parses a key file. Refuses (DstdError "E_KEY") a missing, unreadable, oversized or
 * malformed file and one whose mode grants group or others any access.
 */
export function loadKeyFile(path: string): KeyMaterial {
  const fd = openKeyFile(path);
  let bytes: Uint8Array | undefined;
  try {
    // fstat the open fd, not the path: the file checked is the file read.
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new DstdError("E_KEY", `key file ${path} is not a regular file`);
    const mode = stat.mode & 0o7777;
    if ((mode & 0o077) !== 0) {
      const what = (mode & 0o044) !== 0 ? "readable" : "writable";
      const octal = mode.toString(8).padStart(4, "0");
      throw new DstdError(
        "E_KEY",
        `key file ${path} is ${what} by others (mode ${octal}); run: chmod 600 ${path}`,
      );
    }
    if (stat.size > KEY_FILE_MAX_BYTES) {
      throw new DstdError(
        "E_KEY",
        `key file ${path} is ${stat.size} bytes; a key file is under 1 KiB`,
      );
    }
    bytes = readAll(fd, path);
  } finally {
    closeSync(fd);
  }
  const text = new TextDecoder("utf-8", { fatal: false }).decode(bytes);
  zero(bytes);
  const parsed = parseKeyFile(text, `key file ${path}`);
  if (typeof parsed === "string") throw new DstdError("E_KEY", parsed);
  return parsed;
}

function openKeyFile(path: string): number {
  try {
    return openSync(path, constants.O_RDONLY);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unknown error";
    if (code === "ENOENT") {
      throw new DstdError(
        "E_KEY",
        `key file ${path} does not exist ` +
          `(create one with: dstd keygen --identity NAME --out ${path})`,
      );
    }
    if (code === "EACCES")
      throw new DstdError("E_KEY", `key file ${path} is not readable by this user (EACCES)`);
    throw new DstdError("E_KEY", `cannot open key file ${path} (${code})`);
  }
}

function readAll(fd: number, path: string): Uint8Array {
  const buf = new Uint8Array(KEY_FILE_MAX_BYTES + 1);
  let filled = 0;
  try {
    for (;;) {
      const n = readSync(fd, buf, filled, buf.length - filled, null);
      if (n === 0) break;
      filled += n;
      if (filled > KEY_FILE_MAX_BYTES)
        throw new DstdError("E_KEY", `key file ${path} is too large to be a key file`);
    }
  } catch (error) {
    zero(buf);
    if (error instanceof DstdError) throw error;
    const code = (error as NodeJS.ErrnoException).code ?? "unknown error";
    throw new DstdError("E_KEY", `cannot read key file ${path} (${code})`);
  }
  const out = buf.slice(0, filled);
  zero(buf);
  return out;
}

/**
 * Writes key file text with mode 0600. Without `force` it creates the file exclusively and
 * refuses an existing one; with `force` it writes a fresh 0600 file next to it and renames it
 * over the old one, so the secret never sits in a file with looser permissions.
 */
export function writeKeyFile(path: string, text: string, options: { force?: boolean } = {}): void {
  const target =
    options.force === true ? `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp` : path;
  let fd: number;
  try {
    fd = openSync(target, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL, 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? "unknown error";
    if (code === "EEXIST" && target === path) {
      throw new DstdError(
        "E_KEY",
        `key file ${path} already exists; refusing to overwrite it (use --force to replace it)`,
      );
    }
    throw new DstdError("E_KEY", `cannot create key file ${path} (${code})`);
  }
  const bytes = new TextEncoder().encode(text);
  let open = true;
  try {
    let written = 0;
    while (written < bytes.length) written += writeSync(fd, bytes, written, bytes.length - written);
    fsyncSync(fd);
    open = false;
    closeSync(fd);
    if (target !== path) renameSync(target, path);
  } catch (error) {
    if (open) closeSync(fd);
    unlinkQuietly(target);
    const code = (error as NodeJS.ErrnoException).code ?? "unknown error";
    throw new DstdError("E_KEY", `cannot write key file ${path} (${code})`);
  } finally {
    zero(bytes);
  }
}

function unlinkQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Best effort: the file may never have been created.
  }
}

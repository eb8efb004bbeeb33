/**
 * @module sys/libcrypto — AES-256-GCM from the system's OpenSSL (libcrypto.so.3) through
 * bun:ffi, writing into buffers the caller owns.
 *
 * Why: node:crypto's cipher.update() returns every output in a fresh buffer, so a sealed
 * `dstd copy` made a gigabyte of dead 1 MiB buffers per gigabyte copied (page faults, and a
 * peak RSS over 300 MiB before the collector caught up: docs/performance.md). EVP's update
 * writes where it is told: records are sealed in place or straight into one pooled record
 * buffer, and opened in place, with nothing allocated per record.
 *
 * Loaded lazily; `loadNativeGcm()` returns null when libcrypto.so.3 is missing (the package
 * libssl3 on Debian), and callers keep node:crypto then. One EVP context per direction, the
 * key expanded once; per record: set IV, AAD, update, final, tag (SP 800-38D, 12-byte IV).
 */
import { dlopen, FFIType as T, ptr, type Pointer } from "bun:ffi";

const EVP_CTRL_GCM_GET_TAG = 0x10;
const EVP_CTRL_GCM_SET_TAG = 0x11;

type Lib = ReturnType<typeof open>;

function open() {
  return dlopen("libcrypto.so.3", {
    EVP_CIPHER_CTX_new: { args: [], returns: T.ptr },
    EVP_CIPHER_CTX_free: { args: [T.ptr], returns: T.void },
    EVP_aes_256_gcm: { args: [], returns: T.ptr },
    EVP_EncryptInit_ex: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
    EVP_DecryptInit_ex: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.ptr], returns: T.i32 },
    EVP_EncryptUpdate: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.i32], returns: T.i32 },
    EVP_DecryptUpdate: { args: [T.ptr, T.ptr, T.ptr, T.ptr, T.i32], returns: T.i32 },
    EVP_EncryptFinal_ex: { args: [T.ptr, T.ptr, T.ptr], returns: T.i32 },
    EVP_DecryptFinal_ex: { args: [T.ptr, T.ptr, T.ptr], returns: T.i32 },
    EVP_CIPHER_CTX_ctrl: { args: [T.ptr, T.i32, T.i32, T.ptr], returns: T.i32 },
  });
}

let lib: Lib | null | undefined;

/** One direction of AES-256-GCM with a fixed key; every buffer is the caller's. */
export interface NativeGcm {
  /** Start a record: nonce (12 bytes) and additional data. */
  begin(nonce: Uint8Array, aad: Uint8Array): void;
  /** Encrypt (or decrypt) `input` into `output` (same length; may be the same bytes). */
  update(input: Uint8Array, output: Uint8Array): void;
  /** Seal: finish and write the 16-byte tag into `tag`. */
  finishSeal(tag: Uint8Array): void;
  /** Open: finish against `tag`; false when it does not verify. */
  finishOpen(tag: Uint8Array): boolean;
  destroy(): void;
}

/** An AES-256-GCM context for `key` (sealing or opening), or null without libcrypto. */
export function loadNativeGcm(key: Uint8Array, direction: "seal" | "open"): NativeGcm | null {
  if (lib === undefined) {
    try {
      lib = open();
    } catch {
      lib = null;
    }
  }
  if (lib === null) return null;
  return new Gcm(lib.symbols, key, direction === "seal");
}

/**
 * Contexts of channels nobody destroyed (a connection's records are simply dropped when it
 * closes) are freed when their object is collected, so reconnects do not leak native memory.
 */
const contexts = new FinalizationRegistry<{ free: (ctx: Pointer) => void; ctx: Pointer }>(({ free, ctx }) => free(ctx));

class Gcm implements NativeGcm {
  private ctx: Pointer | null;
  /** Scratch for EVP's out-length argument (and final's empty output). */
  private readonly scratch = new Int32Array(4);
  private readonly scratchPtr: Pointer;

  constructor(
    private readonly c: Lib["symbols"],
    key: Uint8Array,
    private readonly sealing: boolean,
  ) {
    const ctx = c.EVP_CIPHER_CTX_new() as Pointer | null;
    if (ctx === null) throw new Error("EVP_CIPHER_CTX_new failed");
    this.ctx = ctx;
    contexts.register(this, { free: (p) => c.EVP_CIPHER_CTX_free(p), ctx }, this);
    this.scratchPtr = ptr(this.scratch);
    const init = sealing ? c.EVP_EncryptInit_ex : c.EVP_DecryptInit_ex;
    if (init(ctx, c.EVP_aes_256_gcm(), null, ptr(key), null) !== 1) throw new Error("EVP init (AES-256-GCM key) failed");
  }

  begin(nonce: Uint8Array, aad: Uint8Array): void {
    const c = this.c;
    const init = this.sealing ? c.EVP_EncryptInit_ex : c.EVP_DecryptInit_ex;
    if (init(this.ctx, null, null, null, ptr(nonce)) !== 1) throw new Error("EVP init (nonce) failed");
    if (aad.length > 0) this.step(null, aad);
  }

  update(input: Uint8Array, output: Uint8Array): void {
    if (input.length === 0) return;
    if (output.length < input.length) throw new Error("GCM output shorter than its input");
    this.step(output, input);
  }

  finishSeal(tag: Uint8Array): void {
    const c = this.c;
    if (c.EVP_EncryptFinal_ex(this.ctx, this.scratchPtr, this.scratchPtr) !== 1) throw new Error("EVP_EncryptFinal_ex failed");
    if (c.EVP_CIPHER_CTX_ctrl(this.ctx, EVP_CTRL_GCM_GET_TAG, 16, ptr(tag)) !== 1) throw new Error("GCM get tag failed");
  }

  finishOpen(tag: Uint8Array): boolean {
    const c = this.c;
    if (c.EVP_CIPHER_CTX_ctrl(this.ctx, EVP_CTRL_GCM_SET_TAG, 16, ptr(tag)) !== 1) return false;
    return c.EVP_DecryptFinal_ex(this.ctx, this.scratchPtr, this.scratchPtr) === 1;
  }

  destroy(): void {
    if (this.ctx === null) return;
    contexts.unregister(this);
    this.c.EVP_CIPHER_CTX_free(this.ctx);
    this.ctx = null;
  }

  /** One EVP update: `output` null feeds additional data. */
  private step(output: Uint8Array | null, input: Uint8Array): void {
    const c = this.c;
    const update = this.sealing ? c.EVP_EncryptUpdate : c.EVP_DecryptUpdate;
    const ok = update(this.ctx, output === null ? null : ptr(output), this.scratchPtr, ptr(input), input.length);
    if (ok !== 1) throw new Error("EVP update failed");
  }
}

/**
 * @module lib/zstd — zstd (RFC 8878) through Bun's node:zlib, for compressed FETCH replies
 * (docs/protocol.md §11.1). Decompression is bounded: `maxOutputLength` stops it once the
 * output would pass the length the caller expects, whatever the frame claims, so a hostile
 * frame cannot make us allocate more than that (plus one internal chunk).
 */
import { zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { errorMessage } from "./errors.ts";

/** One zstd frame of `bytes` at the default level (3: fast, most of the gain on log records). */
export function zstdCompress(bytes: Uint8Array): Uint8Array {
  const out = zstdCompressSync(bytes);
  return new Uint8Array(out.buffer, out.byteOffset, out.length);
}

/** The content of one frame if it is at most `length` bytes, else why not (never throws). */
export function zstdDecompress(frame: Uint8Array, length: number): Uint8Array | string {
  try {
    const out = zstdDecompressSync(frame, { maxOutputLength: length });
    return new Uint8Array(out.buffer, out.byteOffset, out.length);
  } catch (error) {
    return errorMessage(error);
  }
}

/**
 * @module crypto/record — the protected channel's unit: one AEAD record per socket write,
 * holding any number of DST frames back to back (docs/security.md §5).
 *
 * Why records and not a seal per frame: node:crypto needs a fresh cipher object per nonce,
 * and that setup (~3–6 µs) paid four times per 4 KiB request (seal and open, both directions)
 * cost more than the I/O. Frames are produced in batches anyway — the export answers every
 * request of one socket read in one write, the client sends everything one event produced in
 * one write — so sealing the batch amortises the setup over all its frames.
 *
 * Record layout: u32 BE length L of the ciphertext | 16-byte tag | L bytes of ciphertext.
 * The 4 length bytes are the additional data; the plaintext is whole DST frames (their own
 * authTag fields stay zero). Nonce = direction (u32 BE) || record counter (u64 BE), padded to
 * 24 bytes for xchacha; both ends count records, so a replayed, dropped, reordered,
 * cross-direction or cross-session record fails authentication, and the opener then refuses
 * everything after it.
 */
import { assert } from "../lib/assert.ts";
import { takeBuffer } from "../lib/buffer-pool.ts";
import { DstdError } from "../lib/errors.ts";
import { createAead, TAG_SIZE, type Aead } from "./aead.ts";
import { SUITES, type SuiteName } from "./suites.ts";

export const RECORD_HEADER_SIZE = 4 + TAG_SIZE;
/** Records one key may protect per direction: the counter can never wrap. */
export const MAX_RECORDS = 2 ** 48;
/**
 * Bytes one AES-GCM key may protect per direction: 2^46 (64 TiB) is 2^42 AES blocks, which
 * keeps the birthday distinguishing advantage near σ²/2^128 = 2^-44 (SP 800-38D;
 * draft-irtf-cfrg-aead-limits). About 6 hours at 3 GB/s: `rekeyDue` says when to reconnect.
 */
export const AES_GCM_MAX_BYTES = 2 ** 46;
/** Largest ciphertext one record may carry: a max-size frame plus room for small ones. */
export const RECORD_MAX = 33 * 1024 * 1024;
export const RECORD_AUTH_FAILED = "record authentication failed (tampered, replayed or out of order)";

type ProtectedSuite = Exclude<SuiteName, "none">;

abstract class RecordChannel {
  protected readonly aead: Aead;
  protected counter = 0;
  protected bytes = 0;
  private readonly nonce: Uint8Array;
  private readonly nonceView: DataView;
  protected readonly maxBytes: number;

  constructor(suite: ProtectedSuite, key: Uint8Array, direction: 0 | 1) {
    assert(key.length === 32, "session key must be 32 bytes");
    this.aead = createAead(suite, key);
    this.nonce = new Uint8Array(SUITES[suite].nonceLength);
    this.nonceView = new DataView(this.nonce.buffer);
    this.nonceView.setUint32(0, direction);
    this.maxBytes = suite === "aes-256-gcm" || suite === "integrity" ? AES_GCM_MAX_BYTES : Number.MAX_SAFE_INTEGER;
  }

  /** Half the key's budget is used: reconnect (new nonces, new keys) at a quiet moment. */
  get rekeyDue(): boolean {
    return this.counter >= MAX_RECORDS / 2 || this.bytes >= this.maxBytes / 2;
  }

  protected nextNonce(): Uint8Array {
    this.nonceView.setUint32(4, Math.floor(this.counter / 2 ** 32));
    this.nonceView.setUint32(8, this.counter >>> 0);
    return this.nonce;
  }

  destroy(): void {
    this.aead.destroy();
  }
}

export class RecordSealer extends RecordChannel {
  /** One record holding `parts` back to back (`total` = their summed length). */
  seal(parts: readonly Uint8Array[], total: number): Uint8Array {
    const record = new Uint8Array(RECORD_HEADER_SIZE + total);
    let at = RECORD_HEADER_SIZE;
    for (const part of parts) {
      record.set(part, at);
      at += part.length;
    }
    assert(at === record.length, "record parts do not add up to their total");
    return this.sealInPlace(record);
  }

  /**
   * One record holding `parts` back to back, as buffers to write in order: a 20-byte record
   * header, then the ciphertext pieces. Ciphers that can (aes-256-gcm) encrypt the parts where
   * they are, into their own output, without assembling the plaintext first: the large WRITE
   * path then costs the cipher's pass and nothing else. The parts are not changed.
   */
  sealParts(parts: readonly Uint8Array[], total: number): Uint8Array[] {
    if (this.aead.sealParts === undefined) return [this.seal(parts, total)];
    assert(total <= RECORD_MAX, `record of ${total} bytes`);
    if (this.counter >= MAX_RECORDS || this.bytes + total > this.maxBytes) {
      throw new DstdError("E_CRYPTO", "this session's key has protected all it may; reconnect to rekey");
    }
    const head = new Uint8Array(RECORD_HEADER_SIZE);
    new DataView(head.buffer).setUint32(0, total);
    const { pieces, tag } = this.aead.sealParts(head.subarray(0, 4), parts, this.nextNonce());
    head.set(tag, 4);
    this.counter++;
    this.bytes += total;
    return [head, ...pieces];
  }

  /**
   * One record holding `parts` back to back, sealed straight into a buffer of the process
   * pool (lib/buffer-pool.ts): header, tag and ciphertext, with the cipher writing each part's
   * ciphertext where it belongs (one pass, no assembly, nothing allocated). The caller gives
   * it back (giveBuffer) once the socket took it. Null when the cipher cannot write into a
   * buffer (node:crypto): use sealParts then. The parts are not changed.
   */
  sealPooled(parts: readonly Uint8Array[], total: number): Uint8Array | null {
    if (this.aead.sealInto === undefined) return null;
    assert(total <= RECORD_MAX, `record of ${total} bytes`);
    if (this.counter >= MAX_RECORDS || this.bytes + total > this.maxBytes) {
      throw new DstdError("E_CRYPTO", "this session's key has protected all it may; reconnect to rekey");
    }
    const record = takeBuffer(RECORD_HEADER_SIZE + total);
    new DataView(record.buffer, record.byteOffset, 4).setUint32(0, total);
    const tag = this.aead.sealInto(record.subarray(0, 4), parts, this.nextNonce(), record.subarray(RECORD_HEADER_SIZE));
    record.set(tag, 4);
    this.counter++;
    this.bytes += total;
    return record;
  }

  /** `record` already holds the plaintext after RECORD_HEADER_SIZE reserved bytes. */
  sealInPlace(record: Uint8Array): Uint8Array {
    const length = record.length - RECORD_HEADER_SIZE;
    assert(length >= 0 && length <= RECORD_MAX, `record of ${length} bytes`);
    if (this.counter >= MAX_RECORDS || this.bytes + length > this.maxBytes) {
      throw new DstdError("E_CRYPTO", "this session's key has protected all it may; reconnect to rekey");
    }
    new DataView(record.buffer, record.byteOffset, 4).setUint32(0, length);
    const tag = this.aead.seal(record.subarray(0, 4), record.subarray(RECORD_HEADER_SIZE), this.nextNonce());
    record.set(tag, 4);
    this.counter++;
    this.bytes += length;
    return record;
  }
}

/** Called with each opened record's plaintext, in order; `false` stops (see RecordOpener.stoppedAt). */
export type RecordHandler = (plaintext: Uint8Array, owner: unknown) => unknown;
/** Supplies a body buffer for a record spanning chunks, with an owner handed back; null refuses for now. */
export type RecordAllocator = (size: number) => { bytes: Uint8Array; owner: unknown } | null;

/**
 * Incremental: push socket chunks, get whole decrypted records' plaintexts. Never throws on
 * input; a bad length or a failed tag kills the opener with a reason.
 */
export class RecordOpener extends RecordChannel {
  /**
   * When true (and no allocator is set), a record that spans chunks is gathered into one
   * buffer reused for every such record, so the consumer must be done with each plaintext
   * when its handler returns.
   */
  reuseBuffers = false;
  /** Where spanning records' bodies come from (the export accounts them against its budget). */
  allocate: RecordAllocator | null = null;
  private gather: Uint8Array | null = null;
  private failed: string | null = null;
  private readonly head = new Uint8Array(RECORD_HEADER_SIZE);
  private headFill = 0;
  private body: Uint8Array | null = null;
  private bodyOwner: unknown = null;
  private bodyFill = 0;
  private readonly tag = new Uint8Array(TAG_SIZE);
  private stopped = -1;

  /** Bytes of an unfinished record held back. */
  get bufferedBytes(): number {
    return this.body === null ? this.headFill : RECORD_HEADER_SIZE + this.bodyFill;
  }

  /** After push(): index in the chunk where it stopped early, or -1 when all was consumed. */
  get stoppedAt(): number {
    return this.stopped;
  }

  /** Plaintexts of the records completed by `chunk` (in order), or the reason the stream is bad. */
  push(chunk: Uint8Array): Uint8Array[] | string {
    const out: Uint8Array[] = [];
    const problem = this.feed(chunk, (plain) => void out.push(plain));
    return problem ?? out;
  }

  /**
   * Opens the records completed by `chunk` and hands each plaintext to `onRecord` in order.
   * Returns null, or the reason the stream is bad (and from then on, that reason again).
   * Stops early when `onRecord` returns false or the allocator refuses: see stoppedAt.
   */
  feed(chunk: Uint8Array, onRecord: RecordHandler): string | null {
    this.stopped = -1;
    if (this.failed !== null) return this.failed;
    let pos = 0;
    while (pos < chunk.length || (this.body === null && this.headFill === RECORD_HEADER_SIZE)) {
      if (this.body === null) {
        // Fast path: a whole record inside the chunk is opened where it lies.
        if (this.headFill === 0 && chunk.length - pos >= RECORD_HEADER_SIZE) {
          const length = readLength(chunk, pos);
          const problem = this.checkLength(length);
          if (problem !== null) return this.fail(problem);
          const end = pos + RECORD_HEADER_SIZE + length;
          if (end <= chunk.length) {
            const plain = this.open(chunk.subarray(pos, pos + 4), chunk.subarray(pos + 4, pos + RECORD_HEADER_SIZE), chunk.subarray(pos + RECORD_HEADER_SIZE, end));
            if (typeof plain === "string") return this.fail(plain);
            pos = end;
            if (onRecord(plain, null) === false) return this.stop(pos);
            continue;
          }
        }
        if (this.headFill < RECORD_HEADER_SIZE) {
          const n = Math.min(RECORD_HEADER_SIZE - this.headFill, chunk.length - pos);
          this.head.set(chunk.subarray(pos, pos + n), this.headFill);
          this.headFill += n;
          pos += n;
          if (this.headFill < RECORD_HEADER_SIZE) break;
        }
        const length = readLength(this.head, 0);
        const problem = this.checkLength(length);
        if (problem !== null) return this.fail(problem);
        if (this.allocate !== null) {
          const given = this.allocate(length);
          if (given === null) return this.stop(pos); // the header stays; the next push asks again
          this.body = given.bytes.subarray(0, length);
          this.bodyOwner = given.owner;
        } else if (this.reuseBuffers) {
          if (this.gather === null || this.gather.length < length) this.gather = new Uint8Array(length);
          this.body = this.gather.subarray(0, length);
        } else {
          this.body = new Uint8Array(length);
        }
        this.bodyFill = 0;
      }
      const body = this.body;
      const n = Math.min(body.length - this.bodyFill, chunk.length - pos);
      body.set(chunk.subarray(pos, pos + n), this.bodyFill);
      this.bodyFill += n;
      pos += n;
      if (this.bodyFill < body.length) break;
      const plain = this.open(this.head.subarray(0, 4), this.head.subarray(4), body);
      const owner = this.bodyOwner;
      this.body = null;
      this.bodyOwner = null;
      this.headFill = 0;
      if (typeof plain === "string") return this.fail(plain);
      if (onRecord(plain, owner) === false) return this.stop(pos);
    }
    return null;
  }

  private stop(pos: number): null {
    this.stopped = pos;
    return null;
  }

  private checkLength(length: number): string | null {
    return length > RECORD_MAX ? `record length ${length} exceeds ${RECORD_MAX}` : null;
  }

  private open(lengthBytes: Uint8Array, tag: Uint8Array, body: Uint8Array): Uint8Array | string {
    this.tag.set(tag);
    let plain: Uint8Array | null = body;
    if (this.aead.openDetached) plain = this.aead.openDetached(lengthBytes, body, this.nextNonce(), this.tag);
    else if (!this.aead.open(lengthBytes, body, this.nextNonce(), this.tag)) plain = null;
    if (plain === null) return RECORD_AUTH_FAILED;
    this.counter++;
    this.bytes += body.length;
    return plain;
  }

  private fail(reason: string): string {
    this.failed = reason;
    return reason;
  }
}

function readLength(bytes: Uint8Array, at: number): number {
  return ((bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!) >>> 0;
}

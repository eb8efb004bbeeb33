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
import { giveBuffer, takeBuffer } from "../lib/buffer-pool.ts";
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

/**
 * Where records are sealed or opened off the event loop, as DST did ("a configurable pool of
 * threads to perform crypto processing"): transport/crypto-pool.ts, worker threads over
 * shared memory (docs/performance.md "Crypto off the event loop"). One lane per channel
 * direction. Records go through it in the order they are submitted and come back in that
 * order, whichever thread took each one, so a connection's record counter (its nonces) and
 * its byte stream stay in step. Records that find no free slot are processed inline and wait
 * in the same order behind those in the pool.
 */
export interface RecordLane {
  /** A shared buffer of `size` bytes for one whole record, or null (no slot free, or too large). */
  reserve(size: number): Uint8Array | null;
  /** Seal or open (the lane's role) the record in `buffer` under nonce `counter`; `done` runs in submission order. */
  submit(buffer: Uint8Array, counter: number, done: (ok: boolean) => void): void;
  /** Run `then` once everything submitted before it is done (at once when nothing is pending). */
  after(then: () => void): void;
  /** Give a buffer from reserve() back. */
  release(buffer: Uint8Array): void;
  /** Records submitted or queued behind them, not delivered yet. */
  readonly pending: number;
  /** Why the lane stopped (a worker died): records submitted are lost, nothing more is taken. */
  readonly failure: string | null;
  /** Called once when the lane fails with records still in it (the connection cannot go on). */
  onFailure: ((reason: string) => void) | null;
}

/** Makes a lane for one direction of a channel, or null (no pool: inline). */
export type RecordLaneFactory = (key: Uint8Array, role: "seal" | "open", direction: 0 | 1, owner: object) => RecordLane | null;

/**
 * Installed by the composition root (cli/ with `crypto_threads` ≥ 1); null (the default, tests
 * and the simulation): every record is sealed and opened inline, synchronously.
 */
let laneFactory: RecordLaneFactory | null = null;

export function useRecordLanes(factory: RecordLaneFactory | null): void {
  laneFactory = factory;
}

/** How a sealed record reaches the socket: `release` gives its buffer back once written. */
export type RecordDeliver = (bytes: Uint8Array, release?: () => void) => void;

abstract class RecordChannel {
  protected readonly aead: Aead;
  protected counter = 0;
  protected bytes = 0;
  private readonly nonce: Uint8Array;
  private readonly nonceView: DataView;
  protected readonly maxBytes: number;
  protected lane: RecordLane | null = null;
  protected readonly suite: ProtectedSuite;
  protected readonly direction: 0 | 1;

  constructor(suite: ProtectedSuite, key: Uint8Array, direction: 0 | 1) {
    assert(key.length === 32, "session key must be 32 bytes");
    this.aead = createAead(suite, key);
    this.nonce = new Uint8Array(SUITES[suite].nonceLength);
    this.nonceView = new DataView(this.nonce.buffer);
    this.nonceView.setUint32(0, direction);
    this.maxBytes = suite === "aes-256-gcm" || suite === "integrity" ? AES_GCM_MAX_BYTES : Number.MAX_SAFE_INTEGER;
    this.suite = suite;
    this.direction = direction;
  }

  /** A lane of the installed pool for this channel (AES-256-GCM only: the workers run OpenSSL's). */
  protected makeLane(key: Uint8Array, role: "seal" | "open"): RecordLane | null {
    if (laneFactory === null || this.suite !== "aes-256-gcm") return null;
    return laneFactory(key, role, this.direction, this);
  }

  /** Records of this channel still in the pool. */
  get pendingRecords(): number {
    return this.lane?.pending ?? 0;
  }

  /** Run `then` once every record handed over so far was delivered (at once when none waits). */
  afterRecords(then: () => void): void {
    if (this.lane === null || this.lane.pending === 0) then();
    else this.lane.after(then);
  }

  protected checkBudget(length: number): void {
    if (this.counter >= MAX_RECORDS || this.bytes + length > this.maxBytes) {
      throw new DstdError("E_CRYPTO", "this session's key has protected all it may; reconnect to rekey");
    }
  }

  /** The lane's workers died with records of ours in it: nothing more may go through this channel. */
  protected laneLost(): never {
    throw new DstdError("E_CRYPTO", `crypto worker failed: ${this.lane!.failure}; this connection's records were lost`);
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
  /** Records of this channel were lost in the pool (a dead worker): it may seal no more. */
  private lost = false;
  /** Called once when records of this channel were lost in the pool (close the connection). */
  onLaneFailure: ((reason: string) => void) | null = null;

  constructor(suite: ProtectedSuite, key: Uint8Array, direction: 0 | 1) {
    super(suite, key, direction);
    this.lane = this.makeLane(key, "seal");
    if (this.lane !== null) {
      this.lane.onFailure = (reason) => {
        this.lost = true;
        this.onLaneFailure?.(reason);
      };
    }
  }

  /**
   * One record holding `parts` back to back, handed to `deliver` in sealing order: later, from
   * a crypto worker, when the channel has a lane with a free slot (the parts are copied into the
   * slot now: they are free when this returns), else sealed here (sealPooled / sealParts) and
   * delivered at once or behind the records still in the pool. The parts are not changed.
   */
  sealTo(parts: readonly Uint8Array[], total: number, deliver: RecordDeliver): void {
    const lane = this.lane;
    if (lane !== null) {
      if (this.lost || (lane.failure !== null && lane.pending > 0)) this.laneLost();
      const slot = lane.failure === null ? lane.reserve(RECORD_HEADER_SIZE + total) : null;
      if (slot !== null) {
        this.checkBudget(total);
        new DataView(slot.buffer, slot.byteOffset, 4).setUint32(0, total);
        let at = RECORD_HEADER_SIZE;
        for (const part of parts) {
          slot.set(part, at);
          at += part.length;
        }
        assert(at === slot.length, "record parts do not add up to their total");
        lane.submit(slot, this.counter, (ok) => (ok ? deliver(slot, () => lane.release(slot)) : lane.release(slot)));
        this.counter++;
        this.bytes += total;
        return;
      }
    }
    const record = this.sealPooled(parts, total);
    const send = record !== null ? () => deliver(record, () => giveBuffer(record)) : this.piecesSender(this.sealParts(parts, total), deliver);
    if (lane !== null && lane.pending > 0) lane.after(send);
    else send();
  }

  /**
   * `record` (RECORD_HEADER_SIZE reserved bytes, then the plaintext; `release` gives it back)
   * sealed and handed to `deliver` in sealing order: copied into a slot of the lane and sealed
   * by a worker (its buffer released at once), else sealed in place here.
   */
  sealRecordTo(record: Uint8Array, release: () => void, deliver: RecordDeliver): void {
    const lane = this.lane;
    if (lane !== null) {
      if (this.lost || (lane.failure !== null && lane.pending > 0)) this.laneLost();
      const slot = lane.failure === null ? lane.reserve(record.length) : null;
      if (slot !== null) {
        const length = record.length - RECORD_HEADER_SIZE;
        this.checkBudget(length);
        slot.set(record.subarray(RECORD_HEADER_SIZE), RECORD_HEADER_SIZE);
        new DataView(slot.buffer, slot.byteOffset, 4).setUint32(0, length);
        release();
        lane.submit(slot, this.counter, (ok) => (ok ? deliver(slot, () => lane.release(slot)) : lane.release(slot)));
        this.counter++;
        this.bytes += length;
        return;
      }
    }
    const sealed = this.sealInPlace(record);
    if (lane !== null && lane.pending > 0) lane.after(() => deliver(sealed, release));
    else deliver(sealed, release);
  }

  private piecesSender(pieces: Uint8Array[], deliver: RecordDeliver): () => void {
    return () => {
      for (const piece of pieces) deliver(piece);
    };
  }

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
/** Where an offloading opener's records go once the pool opened them (export/connection.ts). */
export interface LateRecords {
  /** A plaintext, in record order; `owner` as from adopt() or the allocator. */
  deliver(plaintext: Uint8Array, owner: unknown): void;
  /** A record failed (authentication, or a dead worker): the stream is bad from here. */
  fail(reason: string): void;
  /** An owner (released like an allocator's) for a plaintext in a pool slot; `free` returns the slot. */
  adopt(slot: Uint8Array, free: () => void): unknown;
  /** An opened record that will never be delivered (the stream failed first): drop its owner. */
  discard(owner: unknown): void;
}

export class RecordOpener extends RecordChannel {
  /** A copy of the key while offload() may still ask for a lane. */
  private laneKey: Uint8Array | null = null;
  private late: LateRecords | null = null;
  /** The pool slot the record being gathered lands in (null: body is ours or the allocator's). */
  private bodySlot: Uint8Array | null = null;

  constructor(suite: ProtectedSuite, key: Uint8Array, direction: 0 | 1) {
    super(suite, key, direction);
    if (laneFactory !== null && suite === "aes-256-gcm") this.laneKey = new Uint8Array(key);
  }

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

  /** Memory the unfinished record holds: its whole body once allocated. */
  get heldBytes(): number {
    return this.body === null ? this.headFill : RECORD_HEADER_SIZE + this.body.length;
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
            const slot = this.slotFor(RECORD_HEADER_SIZE + length);
            if (slot !== null) {
              slot.set(chunk.subarray(pos, end));
              this.submit(slot);
              pos = end;
              continue;
            }
            const plain = this.open(chunk.subarray(pos, pos + 4), chunk.subarray(pos + 4, pos + RECORD_HEADER_SIZE), chunk.subarray(pos + RECORD_HEADER_SIZE, end));
            if (typeof plain === "string") return this.fail(plain);
            pos = end;
            if (this.behind(plain, null)) continue;
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
        const slot = this.slotFor(RECORD_HEADER_SIZE + length);
        if (slot !== null) {
          slot.set(this.head);
          this.body = slot.subarray(RECORD_HEADER_SIZE);
          this.bodySlot = slot;
        } else if (this.allocate !== null) {
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
      if (this.bodySlot !== null) {
        const slot = this.bodySlot;
        this.bodySlot = null;
        this.body = null;
        this.headFill = 0;
        this.submit(slot);
        continue;
      }
      const plain = this.open(this.head.subarray(0, 4), this.head.subarray(4), body);
      const owner = this.bodyOwner;
      this.body = null;
      this.bodyOwner = null;
      this.headFill = 0;
      if (typeof plain === "string") return this.fail(plain);
      if (this.behind(plain, owner)) continue;
      if (onRecord(plain, owner) === false) return this.stop(pos);
    }
    return null;
  }

  /**
   * Open records in the installed pool (useRecordLanes), delivering their plaintexts through
   * `late` in order, after feed() returned; records that find no free slot are opened here and
   * delivered in the same order. Without a pool (or another suite) nothing changes.
   */
  offload(late: LateRecords): void {
    if (this.laneKey === null) return;
    this.lane = this.makeLane(this.laneKey, "open");
    this.laneKey.fill(0);
    this.laneKey = null;
    if (this.lane === null) return;
    this.late = late;
    this.lane.onFailure = (reason) => {
      if (this.failed !== null) return;
      this.fail(reason);
      late.fail(`crypto worker failed: ${reason}`);
    };
  }

  /**
   * The connection is gone: give back a slot a half-received record holds, forget the key
   * copy. Returns the allocator's owner of a half-received record's buffer (or null), for the
   * caller to release: that record never reaches onRecord, and its counted memory would
   * otherwise stay taken for good.
   */
  close(): unknown {
    if (this.bodySlot !== null) this.lane!.release(this.bodySlot);
    const owner = this.bodyOwner;
    this.bodyOwner = null;
    this.bodySlot = null;
    this.body = null;
    this.headFill = 0;
    this.laneKey?.fill(0);
    this.laneKey = null;
    return owner;
  }

  /** A pool slot for a whole record when this opener offloads and one is free. */
  private slotFor(size: number): Uint8Array | null {
    const lane = this.lane;
    if (lane === null || lane.failure !== null || size > RECORD_HEADER_SIZE + RECORD_MAX) return null;
    return lane.reserve(size);
  }

  /** Hand a whole record (in its slot) to the pool; its nonce is the next one now. */
  private submit(slot: Uint8Array): void {
    const lane = this.lane!;
    const late = this.late!;
    lane.submit(slot, this.counter, (ok) => {
      if (!ok && this.failed === null) late.fail(this.fail(lane.failure ?? RECORD_AUTH_FAILED));
      if (!ok || this.failed !== null) return lane.release(slot);
      const plain = slot.subarray(RECORD_HEADER_SIZE);
      late.deliver(plain, late.adopt(slot, () => lane.release(slot)));
    });
    this.counter++;
    this.bytes += slot.length - RECORD_HEADER_SIZE;
  }

  /** Opened here while earlier records are still in the pool: deliver it behind them. */
  private behind(plain: Uint8Array, owner: unknown): boolean {
    const lane = this.lane;
    if (lane === null || lane.pending === 0) return false;
    const late = this.late!;
    lane.after(() => {
      if (this.failed === null) late.deliver(plain, owner);
      else late.discard(owner);
    });
    return true;
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

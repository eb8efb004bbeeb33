/**
 * @module crypto/channel — per-direction frame protection after the handshake: FrameSealer on
 * the sending side, FrameOpener on the receiving side, one of each per connection direction.
 * docs/security.md §Channel specifies the nonce, the additional data and the failure rule.
 *
 * A frame is one Uint8Array: the 56-byte header (wire/dst/constants.ts HEADER) + payload. Both
 * classes work in place and return the same array, so the frame size and payloadLength never
 * change. Must not: parse frames beyond the fixed header offsets, or let any frame through
 * after one failed: the first failure poisons the opener and the caller closes the connection.
 */
import { AUTH_TAG_SIZE, HEADER, HEADER_SIZE } from "../wire/dst/constants.ts";
import { assert } from "../lib/assert.ts";
import { DstdError } from "../lib/errors.ts";
import { type Aead, createAead } from "./aead.ts";
import { SUITES, type SuiteName, isSuiteName } from "./suites.ts";

/** Frames one direction may carry under one key: the counter never wraps, nonces never repeat. */
export const MAX_FRAMES = 2 ** 48;
/**
 * Bytes one direction may encrypt under one AES-256-GCM key: 2^46 bytes = 2^42 blocks keeps the
 * birthday distinguishing advantage of a 128-bit block cipher under sigma^2 / 2^128 = 2^-44
 * (SP 800-38D; draft-irtf-cfrg-aead-limits §5.1). ChaCha20 has a 512-bit state and no such
 * bound; GMAC encrypts nothing. About 6 hours at 3 GB/s; rekeyDue warns at half of it.
 */
export const AES_GCM_MAX_BYTES = 2 ** 46;
const MAX_BYTES: Readonly<Record<SuiteName, number>> = {
  "aes-256-gcm": AES_GCM_MAX_BYTES,
  "chacha20-poly1305": Number.MAX_SAFE_INTEGER,
  "xchacha20-poly1305": Number.MAX_SAFE_INTEGER,
  integrity: Number.MAX_SAFE_INTEGER,
  none: Number.MAX_SAFE_INTEGER,
};
export const AUTH_FAILED = "frame authentication failed (tampered, replayed or out of order)";
export const CHANNEL_FAILED = "channel is closed after a frame failed authentication";

export interface ChannelOptions {
  /** Lower limit on frames for tests and cautious deployments; at most MAX_FRAMES. */
  maxFrames?: number;
  /** Lower limit on frame bytes (header + payload); at most the suite's own limit. */
  maxBytes?: number;
}

/**
 * Shared state of both ends: the suite's Aead, the direction and the frame counter. Nonce =
 * direction (u32 BE) || counter (u64 BE), zero-padded to 24 bytes for xchacha. Both ends count
 * frames themselves; the counter is never on the wire, so a replayed, dropped, reordered or
 * foreign frame is opened under the wrong nonce and fails authentication.
 */
abstract class FrameChannel {
  protected readonly aead: Aead | null;
  protected counter = 0;
  protected bytes = 0;
  private destroyed = false;
  private readonly nonce: Uint8Array;
  private readonly nonceView: DataView;
  protected readonly maxFrames: number;
  protected readonly maxBytes: number;

  constructor(suite: string, key: Uint8Array, direction: 0 | 1, options: ChannelOptions) {
    assert(isSuiteName(suite), `unknown suite ${suite}`);
    assert(direction === 0 || direction === 1, "direction must be 0 or 1");
    assert(suite === "none" || key.length === 32, "session key must be 32 bytes");
    const name: SuiteName = suite;
    this.aead = name === "none" ? null : createAead(name, key);
    this.nonce = new Uint8Array(SUITES[name].nonceLength);
    this.nonceView = new DataView(this.nonce.buffer);
    if (this.nonce.length > 0) this.nonceView.setUint32(0, direction);
    this.maxFrames = options.maxFrames ?? MAX_FRAMES;
    assert(this.maxFrames > 0 && this.maxFrames <= MAX_FRAMES, "maxFrames must be in 1..2^48");
    this.maxBytes = options.maxBytes ?? MAX_BYTES[name];
    assert(
      this.maxBytes > 0 && this.maxBytes <= MAX_BYTES[name],
      "maxBytes above the suite's limit",
    );
  }

  /** Frames handled so far in this direction (the counter of the next one). */
  get frames(): number {
    return this.counter;
  }

  /**
   * True once half the frame or byte budget of this key is used: time to open a new session
   * (new nonces, new keys) at a quiet moment, before seal() starts refusing.
   */
  get rekeyDue(): boolean {
    return this.counter >= this.maxFrames / 2 || this.bytes >= this.maxBytes / 2;
  }

  /** Why one more frame of `size` bytes would exceed this key's budget, or null. */
  protected budgetProblem(size: number): string | null {
    if (this.destroyed) return "frames after destroy() (the key is gone)";
    if (this.counter >= this.maxFrames)
      return `${this.counter} frames, the most one key may protect`;
    if (this.bytes + size > this.maxBytes)
      return `${this.bytes + size} bytes, more than one key may protect`;
    return null;
  }

  /** Wipes the key copy; the object is unusable afterwards. */
  destroy(): void {
    this.aead?.destroy();
    this.destroyed = true;
  }

  protected currentNonce(): Uint8Array {
    // u64 big-endian from a double: exact below 2^53, and the counter stops at 2^48.
    this.nonceView.setUint32(4, Math.floor(this.counter / 2 ** 32));
    this.nonceView.setUint32(8, this.counter >>> 0);
    return this.nonce;
  }
}

export class FrameSealer extends FrameChannel {
  constructor(suite: string, key: Uint8Array, direction: 0 | 1, options: ChannelOptions = {}) {
    super(suite, key, direction, options);
  }

  /** Protects `frame` in place (payload encrypted or authenticated, tag in the header). */
  seal<T extends Uint8Array>(frame: T): T {
    assert(frame.length >= HEADER_SIZE, "frame shorter than its header");
    assert(
      payloadLengthField(frame) === frame.length - HEADER_SIZE,
      "payloadLength does not match the frame",
    );
    frame.fill(0, HEADER.authTag, HEADER.authTag + AUTH_TAG_SIZE);
    if (this.aead === null) return frame;
    const over = this.budgetProblem(frame.length);
    if (over !== null)
      throw new DstdError("E_CRYPTO", `session would send ${over}; reconnect to rekey`);
    const header = frame.subarray(0, HEADER_SIZE);
    const tag = this.aead.seal(header, frame.subarray(HEADER_SIZE), this.currentNonce());
    frame.set(tag, HEADER.authTag);
    this.counter++;
    this.bytes += frame.length;
    return frame;
  }
}

export class FrameOpener extends FrameChannel {
  private failed = false;
  private readonly tag = new Uint8Array(AUTH_TAG_SIZE);

  constructor(suite: string, key: Uint8Array, direction: 0 | 1, options: ChannelOptions = {}) {
    super(suite, key, direction, options);
  }

  /**
   * Verifies and decrypts `frame` in place and returns it (authTag field zeroed), or returns
   * the reason it was refused. After a refusal every later call is refused too.
   */
  open<T extends Uint8Array>(frame: T): T | string {
    if (this.failed) return CHANNEL_FAILED;
    const problem = this.check(frame);
    if (problem !== null) return this.fail(problem);
    if (this.aead === null) return frame;
    this.tag.set(frame.subarray(HEADER.authTag, HEADER.authTag + AUTH_TAG_SIZE));
    frame.fill(0, HEADER.authTag, HEADER.authTag + AUTH_TAG_SIZE);
    const header = frame.subarray(0, HEADER_SIZE);
    if (!this.aead.open(header, frame.subarray(HEADER_SIZE), this.currentNonce(), this.tag)) {
      return this.fail(AUTH_FAILED);
    }
    this.counter++;
    this.bytes += frame.length;
    return frame;
  }

  private check(frame: Uint8Array): string | null {
    if (frame.length < HEADER_SIZE) return "frame shorter than its header";
    if (payloadLengthField(frame) !== frame.length - HEADER_SIZE)
      return "frame size does not match its payloadLength";
    if (this.aead === null) {
      for (let i = HEADER.authTag; i < HEADER.authTag + AUTH_TAG_SIZE; i++) {
        if (frame[i] !== 0) return "non-zero authTag on a channel without protection (suite none)";
      }
      return null;
    }
    const over = this.budgetProblem(frame.length);
    return over === null ? null : `session would receive ${over}`;
  }

  private fail(reason: string): string {
    this.failed = true;
    return reason;
  }
}

function payloadLengthField(frame: Uint8Array): number {
  const at = HEADER.payloadLength;
  return (
    (((frame[at] ?? 0) << 24) |
      ((frame[at + 1] ?? 0) << 16) |
      ((frame[at + 2] ?? 0) << 8) |
      (frame[at + 3] ?? 0)) >>>
    0
  );
}

/**
 * @module test/helpers/dst-raw — a hand-driven DST client for attack tests: it sends whatever
 * frames a test builds (a HELLO naming someone else's session, a resend with other data, a
 * burst of 100,000 READs) over a real socket and hands back the frames the export answers,
 * opening sealed records once the test completed an authenticated handshake. It never reads
 * unless asked, so a test can also play a client that stops reading.
 */
import type { Socket } from "bun";
import { ClientAuth, type Channel } from "../../src/crypto/dst-auth.ts";
import type { KeyMaterial } from "../../src/crypto/keys.ts";
import type { SuiteName } from "../../src/crypto/suites.ts";
import { decodeAttrs, type AttrRecord } from "../../src/wire/dst/attrs.ts";
import { Attr, Feature, HANDSHAKE_PAYLOAD_MAX, Op, PAYLOAD_MAX_DEFAULT } from "../../src/wire/dst/constants.ts";
import { FrameDecoder } from "../../src/wire/dst/decoder.ts";
import { decodeWelcome, encodeHello, type Hello, type Welcome } from "../../src/wire/dst/handshake.ts";
import type { Header } from "../../src/wire/dst/header.ts";

export interface RawFrame {
  header: Header;
  payload: Uint8Array;
}

/** The features a raw client asks for in HELLO unless told otherwise (an older client's set: no FETCH_ZSTD, no FETCH_FOLLOWS). */
export const RAW_FEATURES = Feature.FLUSH | Feature.FUA | Feature.TRIM | Feature.WRITE_ZEROES | Feature.SESSIONS;

export class RawDst {
  private readonly frames: RawFrame[] = [];
  private waiter: (() => void) | null = null;
  private readonly decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT + 64);
  private channel: Channel | null = null;
  private socket!: Socket<undefined>;
  closed = false;
  /** Bytes received in all (before opening records). */
  received = 0;
  private stopReading = false;

  static async connect(port: number, options: { paused?: boolean } = {}): Promise<RawDst> {
    const raw = new RawDst();
    raw.stopReading = options.paused === true;
    raw.socket = await Bun.connect({
      hostname: "127.0.0.1",
      port,
      socket: {
        binaryType: "uint8array",
        open: (s) => {
          if (raw.stopReading) s.pause();
        },
        data: (_s, chunk) => raw.onData(chunk),
        close: () => raw.onClose(),
        error: () => raw.onClose(),
      },
    });
    return raw;
  }

  /** Write bytes; resolves once the kernel took all of them. */
  async send(bytes: Uint8Array): Promise<void> {
    let at = 0;
    while (at < bytes.length && !this.closed) {
      const n = this.socket.write(bytes.subarray(at));
      at += Math.max(0, n);
      if (at < bytes.length) await Bun.sleep(1);
    }
  }

  /** Seal `frames` into one record when the channel is protected. */
  async sendFrames(...frames: Uint8Array[]): Promise<void> {
    const total = frames.reduce((n, f) => n + f.length, 0);
    const records = this.channel?.records;
    if (records) return this.send(records.sealer.seal(frames, total));
    const out = new Uint8Array(total);
    let at = 0;
    for (const f of frames) {
      out.set(f, at);
      at += f.length;
    }
    return this.send(out);
  }

  pause(): void {
    this.socket.pause();
  }
  resume(): void {
    this.socket.resume();
  }

  /** The next frame the export sent (waits up to `ms`). */
  async next(ms = 10_000): Promise<RawFrame> {
    const deadline = Date.now() + ms;
    while (this.frames.length === 0) {
      if (this.closed) throw new Error("connection closed before the expected frame");
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${ms} ms`);
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
        setTimeout(resolve, Math.min(left, 50));
      });
    }
    return this.frames.shift()!;
  }

  /** Frames received so far without waiting. */
  drain(): RawFrame[] {
    return this.frames.splice(0);
  }

  /** Resolves once the export closed the connection. */
  async closedByPeer(ms = 15_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!this.closed) {
      if (Date.now() > deadline) throw new Error(`connection still open after ${ms} ms`);
      await Bun.sleep(10);
    }
  }

  close(): void {
    this.socket.end();
  }

  /**
   * Handshake. Anonymous unless `key` is given; `extra` attributes go into HELLO (a session to
   * resume, a token…); `resumeKey` adds RESUME_PROOF to AUTH; `checksums` offers data
   * checksums (none offered: `none`). Returns the export's answer.
   */
  async handshake(
    hello: Partial<Hello> & { exportName: string },
    options: { key?: KeyMaterial; suites?: SuiteName[]; resumeKey?: Uint8Array | null; checksums?: string[] } = {},
  ): Promise<{ ok: true; welcome: Welcome; channel: Channel | null } | { ok: false; status: number; message: string }> {
    const auth = options.key ? new ClientAuth(options.key, options.suites ?? ["aes-256-gcm"]) : null;
    const frame = encodeHello(
      {
        version: 1,
        clientName: "raw test client",
        maxPayload: PAYLOAD_MAX_DEFAULT,
        features: RAW_FEATURES,
        sessionId: null,
        txidFloor: 0,
        ...hello,
      },
      [...(auth?.helloAttrs() ?? []), ...(options.checksums ? [[Attr.CHECKSUMS, new TextEncoder().encode(options.checksums.join(","))] as AttrRecord] : [])],
    );
    await this.send(frame);
    let reply = await this.next();
    if (auth !== null && reply.header.opcode === Op.CHALLENGE) {
      const attrs = decodeAttrs(reply.payload);
      if (typeof attrs === "string") throw new Error(attrs);
      const result = auth.onChallenge(frame, attrs, options.resumeKey ?? null);
      if (typeof result === "string") return { ok: false, status: -1, message: result };
      await this.send(result.auth);
      this.channel = result.channel;
      reply = await this.next();
    }
    const welcome = decodeWelcome(reply.header, reply.payload);
    if (typeof welcome === "string") throw new Error(welcome);
    if (!welcome.ok) return welcome;
    return { ok: true, welcome: welcome.welcome, channel: this.channel };
  }

  private onData(chunk: Uint8Array): void {
    this.received += chunk.length;
    const records = this.channel?.records;
    const plaintexts = records ? records.opener.push(chunk) : [chunk];
    if (typeof plaintexts === "string") throw new Error(`raw client: ${plaintexts}`);
    for (const plain of plaintexts) {
      const problem = this.decoder.push(plain, (header, payload) => {
        this.frames.push({ header, payload: payload.slice() });
        // Once the handshake settled, frames are no longer bounded by the handshake limit.
        this.decoder.maxPayload = PAYLOAD_MAX_DEFAULT + 64;
      });
      if (problem !== null) throw new Error(`raw client: ${problem}`);
    }
    this.waiter?.();
  }

  private onClose(): void {
    this.closed = true;
    this.waiter?.();
  }
}

/** The session id and (anonymous) token a WELCOME gave. */
export function sessionOf(welcome: Welcome): { sessionId: Uint8Array; resumeToken: Uint8Array | null } {
  return { sessionId: welcome.sessionId, resumeToken: welcome.resumeToken ?? null };
}

export { Attr, HANDSHAKE_PAYLOAD_MAX };
export type { AttrRecord };

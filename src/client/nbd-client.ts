/**
 * @module client/nbd-client — a plain NBD client over TCP or a Unix socket, for `dstd copy`
 * to and from any NBD server (dstd's own NBD front, nbdkit, qemu-nbd, nbd-server).
 *
 * Fixed newstyle handshake with OPT_GO (falling back to OPT_EXPORT_NAME on ERR_UNSUP), simple
 * replies only (structured replies are never negotiated, so a READ reply is 16 bytes then the
 * data), pipelined requests matched by 64-bit cookie. Must not: retry or reconnect (NBD has
 * no replay; a lost connection fails every outstanding request), or throw on server input.
 */
import type { EngineLog } from "../engine/client-engine.ts";
import { formatListenAddress, type ListenAddress } from "../lib/address.ts";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { connect } from "../transport/tcp.ts";
import type { Sink } from "../transport/types.ts";
import { ClientFlag, Cmd, commandName, HandshakeFlag, Info, Rep, REQUEST_HEADER_SIZE, TxFlag } from "../wire/nbd/constants.ts";
import { replyName } from "../wire/nbd/handshake.ts";
import {
  encodeClientFlags,
  encodeExportNameOption,
  encodeGoOption,
  optionErrorMessage,
  parseInfoReply,
  ServerHandshakeReader,
  SimpleReplyDecoder,
  writeRequestHeader,
  type ServerHandshakeExpect,
} from "../wire/nbd/client.ts";

export interface NbdClientOptions {
  address: ListenAddress;
  exportName: string;
  log: EngineLog;
  /** Give up on a server that does not finish the handshake (default 30 s). */
  handshakeTimeoutMs?: number;
  /**
   * Fail the connection when a request has had no reply for this long (default 2 min, `dstd
   * copy --deadline`): NBD has no keepalive, and a server that stops answering (or a host
   * gone behind a half-open connection) would otherwise hold the copy for ever.
   */
  requestTimeoutMs?: number;
}

interface Pending {
  type: number;
  offset: number;
  length: number;
  /** READ target buffer; null for commands without reply data. */
  buffer: Uint8Array | null;
  /** performance.now() when it was sent (the watchdog's deadline counts from here). */
  sentAt: number;
  resolve(data: Uint8Array | null): void;
  reject(error: unknown): void;
}

/** Largest request length on the wire (u32), and the zero-fill chunk without WRITE_ZEROES. */
const U32_MAX = 0xffffffff;
/** Largest 4 KiB-aligned u32, for splitting huge WRITE_ZEROES ranges. */
const ZERO_REQUEST_MAX = 0xfffff000;
const ZERO_FILL_CHUNK = 1024 * 1024;
const ZEROES = new Uint8Array(ZERO_FILL_CHUNK);

export class NbdClient {
  size = 0;
  /** Transmission flags (proto.md "Transmission flags"). */
  flags = 0;
  /** Max payload from INFO_BLOCK_SIZE, or null when the server did not say. */
  maxPayload: number | null = null;
  private sink: Sink | null = null;
  private readonly pending = new Map<number, Pending>();
  private nextCookie = 1;
  private closedReason: string | null = null;
  private closing = false;
  private readonly header = new Uint8Array(REQUEST_HEADER_SIZE);
  private readonly decoder = new SimpleReplyDecoder((cookie) => {
    const p = this.pending.get(cookie);
    return p === undefined ? undefined : p.buffer;
  });
  private onClosed: (() => void) | null = null;
  private flushWarned = false;
  private watchdog: ReturnType<typeof setInterval> | null = null;

  private constructor(private readonly options: NbdClientOptions) {}

  get where(): string {
    return `NBD export '${this.options.exportName}' at ${formatListenAddress(this.options.address)}`;
  }

  get readOnly(): boolean {
    return (this.flags & TxFlag.READ_ONLY) !== 0;
  }

  /** Connect and negotiate; rejects with a DstdError naming the server's refusal. */
  static async open(options: NbdClientOptions): Promise<NbdClient> {
    const client = new NbdClient(options);
    await client.negotiate();
    const limit = options.requestTimeoutMs ?? 120_000;
    // Requests are answered in any order, but the oldest one outstanding is the first in the
    // map (insertion order): one look per tick finds a request past its deadline.
    client.watchdog = setInterval(() => {
      const oldest = client.pending.values().next().value;
      if (oldest !== undefined && performance.now() - oldest.sentAt >= limit) {
        client.broken(`no reply to ${commandName(oldest.type)} of ${oldest.length} bytes at offset ${oldest.offset} within ${limit} ms`);
      }
    }, Math.max(10, Math.min(1000, limit / 4)));
    client.watchdog.unref?.();
    return client;
  }

  /** Give up now (a second Ctrl-C): close the socket; every outstanding request fails. */
  abort(): void {
    this.broken("aborted");
  }

  read(offset: number, length: number): Promise<Uint8Array> {
    return this.submit(Cmd.READ, offset, length, new Uint8Array(length), null) as Promise<Uint8Array>;
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.checkWritable("write");
    await this.submit(Cmd.WRITE, offset, data.length, null, data);
  }

  /** WRITE_ZEROES when the server offers it (it may punch a hole), else zero-filled WRITEs. */
  async zero(offset: number, length: number): Promise<void> {
    this.checkWritable("zero");
    if (this.flags & TxFlag.SEND_WRITE_ZEROES) {
      const parts: Promise<unknown>[] = [];
      for (let at = 0; at < length; at += ZERO_REQUEST_MAX) {
        parts.push(this.submit(Cmd.WRITE_ZEROES, offset + at, Math.min(ZERO_REQUEST_MAX, length - at), null, null));
      }
      await Promise.all(parts);
      return;
    }
    const step = Math.min(ZERO_FILL_CHUNK, this.maxPayload ?? ZERO_FILL_CHUNK);
    const parts: Promise<unknown>[] = [];
    for (let at = 0; at < length; at += step) {
      const n = Math.min(step, length - at);
      parts.push(this.submit(Cmd.WRITE, offset + at, n, null, ZEROES.subarray(0, n)));
    }
    await Promise.all(parts);
  }

  async flush(): Promise<void> {
    if (this.flags & TxFlag.SEND_FLUSH) {
      await this.submit(Cmd.FLUSH, 0, 0, null, null);
      return;
    }
    if (!this.flushWarned) {
      this.flushWarned = true;
      // A warning: the copy "ends with a FLUSH" (README) and here it cannot; the user must know.
      this.options.log.warn(`${this.where} does not offer FLUSH; the data is not known to be durable (the server decides when it is)`);
    }
  }

  /** Wait for outstanding replies, send DISC (proto.md "NBD_CMD_DISC"), close. */
  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    const outstanding = [...this.pending.values()].map(
      (p) => new Promise<void>((done) => {
        const { resolve, reject } = p;
        p.resolve = (v) => (resolve(v), done());
        p.reject = (e) => (reject(e), done());
      }),
    );
    await Promise.all(outstanding);
    const sink = this.sink;
    if (sink === null || this.closedReason !== null) return;
    const closed = new Promise<void>((resolve) => (this.onClosed = resolve));
    writeRequestHeader(this.header, 0, 0, Cmd.DISC, this.nextCookie++, 0, 0);
    sink.write(this.header.slice());
    sink.end();
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
    if (this.closedReason === null) sink.destroy();
  }

  private checkWritable(what: string): void {
    if (this.readOnly) throw new DstdError("E_READ_ONLY", `${this.where} is read-only (the server set NBD_FLAG_READ_ONLY); cannot ${what}`, { errno: Errno.EPERM });
  }

  private submit(type: number, offset: number, length: number, buffer: Uint8Array | null, data: Uint8Array | null): Promise<Uint8Array | null> {
    const sink = this.sink;
    if (sink === null || this.closedReason !== null) {
      return Promise.reject(new DstdError("E_CONNECTION", `${this.where}: connection is closed${this.closedReason ? ` (${this.closedReason})` : ""}`));
    }
    if (type !== Cmd.FLUSH && (length > U32_MAX || offset + length > this.size || offset < 0)) {
      return Promise.reject(new DstdError("E_RANGE", `${commandName(type)} of ${length} bytes at offset ${offset} is outside ${this.where} (${this.size} bytes)`, { errno: Errno.EINVAL }));
    }
    const cookie = this.nextCookie++;
    const promise = new Promise<Uint8Array | null>((resolve, reject) => {
      this.pending.set(cookie, { type, offset, length, buffer, sentAt: performance.now(), resolve, reject });
    });
    writeRequestHeader(this.header, 0, 0, type, cookie, offset, length);
    // The sink may queue: hand it its own copy of the 28-byte header, the payload as is.
    sink.write(this.header.slice());
    if (data !== null && data.length > 0) sink.write(data);
    return promise;
  }

  private onData(chunk: Uint8Array): void {
    this.decoder.push(chunk);
    for (;;) {
      const reply = this.decoder.next();
      if (reply === null) return;
      if (typeof reply === "string") return this.broken(`protocol error from the server: ${reply}`);
      const p = this.pending.get(reply.cookie)!;
      this.pending.delete(reply.cookie);
      if (reply.error === 0) p.resolve(reply.data);
      else {
        p.reject(
          new DstdError(
            "E_NBD_REPLY",
            `${this.where} failed ${commandName(p.type)} of ${p.length} bytes at offset ${p.offset}: ${errnoMessage(reply.error)}`,
            { errno: reply.error },
          ),
        );
      }
    }
  }

  /** A broken stream or a lost connection: every outstanding request fails, nothing retries. */
  private broken(reason: string): void {
    if (this.closedReason === null) this.closedReason = reason;
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
    this.sink?.destroy();
    this.failPending();
  }

  private failPending(): void {
    const count = this.pending.size;
    const error = new DstdError(
      "E_CONNECTION",
      `${this.where}: connection lost (${this.closedReason ?? "closed"}) with ${count} request(s) outstanding`,
      { errno: Errno.ECONNRESET },
    );
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) p.reject(error);
  }

  private onClose(reason: string | null): void {
    if (this.closedReason === null) this.closedReason = reason ?? (this.closing ? "closed by us" : "the server closed the connection");
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
    this.failPending();
    this.onClosed?.();
  }

  /**
   * proto.md "Fixed newstyle negotiation": greeting → client flags + OPT_GO (no info
   * requests; INFO_EXPORT is sent regardless) → REP_INFO* then ACK. ERR_UNSUP to GO means an
   * older server: retry with OPT_EXPORT_NAME, whose refusal is a dropped connection.
   */
  private negotiate(): Promise<void> {
    const { address, exportName, log } = this.options;
    const reader = new ServerHandshakeReader();
    let expect: ServerHandshakeExpect = "greeting";
    let noZeroes = false;
    let gotExport = false;
    let done = false;
    return new Promise<void>((resolve, reject) => {
      const fail = (message: string, code = "E_NBD_HANDSHAKE") => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        this.closedReason = message;
        this.sink?.destroy();
        reject(new DstdError(code, `${this.where}: ${message}`));
      };
      const timer = setTimeout(() => fail(`no handshake within ${this.options.handshakeTimeoutMs ?? 30000} ms`), this.options.handshakeTimeoutMs ?? 30000);
      const finish = () => {
        done = true;
        clearTimeout(timer);
        log.info(`${this.where}: ${this.size} bytes, transmission flags 0x${this.flags.toString(16)}`);
        resolve();
        const rest = reader.remainder();
        if (rest.length > 0) this.onData(rest.slice());
      };
      const step = () => {
        for (;;) {
          const event = reader.next(expect, noZeroes);
          if (event === null) return;
          if (event.kind === "error") return fail(event.reason);
          if (event.kind === "greeting") {
            if (!(event.flags & HandshakeFlag.FIXED_NEWSTYLE)) return fail("server does not offer fixed newstyle negotiation");
            noZeroes = (event.flags & HandshakeFlag.NO_ZEROES) !== 0;
            this.sink!.write(encodeClientFlags(ClientFlag.FIXED_NEWSTYLE | (noZeroes ? ClientFlag.NO_ZEROES : 0)));
            this.sink!.write(encodeGoOption(exportName));
            expect = "option-reply";
          } else if (event.kind === "export") {
            this.size = event.size;
            this.flags = event.flags;
            return finish();
          } else if (event.type === Rep.INFO) {
            const info = parseInfoReply(event.data);
            if (typeof info === "string") return fail(info);
            if (info.info === Info.EXPORT && "size" in info) {
              this.size = info.size;
              this.flags = info.flags;
              gotExport = true;
            } else if (info.info === Info.BLOCK_SIZE && "maximum" in info) {
              this.maxPayload = info.maximum > 0 ? info.maximum : null;
            }
          } else if (event.type === Rep.ACK) {
            if (!gotExport) return fail("server ended OPT_GO without sending INFO_EXPORT");
            return finish();
          } else if (event.type === Rep.ERR_UNSUP) {
            log.info(`${this.where}: server does not support OPT_GO; using OPT_EXPORT_NAME`);
            this.sink!.write(encodeExportNameOption(exportName));
            expect = "export-name-reply";
          } else if (event.type & 0x80000000) {
            const message = optionErrorMessage(event.data);
            return fail(`server refused the export (${replyName(event.type)})${message ? `: ${message}` : ""}`, "E_REFUSED");
          } else {
            return fail(`unexpected option reply ${replyName(event.type)} to OPT_GO`);
          }
        }
      };
      const handler = {
        onData: (chunk: Uint8Array) => {
          if (done) return this.onData(chunk);
          reader.push(chunk);
          step();
        },
        onDrain: () => {},
        onClose: (reason: string | null) => {
          if (!done) {
            const why = expect === "export-name-reply" ? ` (after OPT_EXPORT_NAME this means export '${exportName}' does not exist or is refused)` : "";
            return fail(`server closed the connection during the handshake${reason ? `: ${reason}` : ""}${why}`, expect === "export-name-reply" ? "E_REFUSED" : "E_NBD_HANDSHAKE");
          }
          this.onClose(reason);
        },
      };
      connect(address, (sink) => {
        this.sink = sink; // set before any data can arrive
        return handler;
      }).then(
        (sink) => {
          if (done) sink.destroy();
          else step();
        },
        (error) => fail(errorMessage(error), "E_CONNECT"),
      );
    });
  }
}

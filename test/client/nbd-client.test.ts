/**
 * NbdClient (src/client/nbd-client.ts) against a scripted NBD server on loopback: the OPT_GO →
 * OPT_EXPORT_NAME fallback, refusals, error replies, a dropped connection failing every
 * outstanding request, the read-only flag, WRITE_ZEROES vs zero-filled WRITEs, and DISC.
 */
import { afterEach, describe, expect, test } from "bun:test";
import { openEndpoint } from "../../src/client/copy.ts";
import { NbdClient } from "../../src/client/nbd-client.ts";
import { parseExportUrl, type ExportUrl } from "../../src/lib/address.ts";
import { DstdError } from "../../src/lib/errors.ts";
import { listen, type Listener } from "../../src/transport/tcp.ts";
import type { Sink } from "../../src/transport/types.ts";
import { Cmd, HandshakeFlag, Opt, Rep, TxFlag } from "../../src/wire/nbd/constants.ts";
import {
  encodeExportNameReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerGreeting,
  HandshakeReader,
  infoBlockSize,
  infoExport,
  parseInfoRequest,
} from "../../src/wire/nbd/handshake.ts";
import { RequestDecoder, writeSimpleReply, type NbdRequest } from "../../src/wire/nbd/transmission.ts";
import { recordingLog } from "../helpers/log.ts";
import { until } from "../helpers/wait.ts";

const SIZE = 1024 * 1024;

interface Script {
  flags: number;
  /** NBD_INFO_BLOCK_SIZE to send with OPT_GO: minimum, preferred, maximum. */
  blockSize?: [number, number, number];
  goUnsupported?: boolean;
  /** Return false to fall through to the default memory-disk behaviour. */
  onRequest?: (request: NbdRequest, sink: Sink) => boolean;
}

function reply(sink: Sink, request: NbdRequest, error: number, data?: Uint8Array) {
  const header = new Uint8Array(16);
  writeSimpleReply(header, 0, error, request.cookieHi, request.cookieLo);
  sink.write(header);
  if (data) sink.write(data);
}

let listener: Listener | null = null;
afterEach(async () => {
  await listener?.close();
  listener = null;
});

/** A one-export NBD server speaking exactly what a test scripts; records the commands it saw. */
async function serve(script: Script) {
  const disk = new Uint8Array(SIZE);
  const commands: number[] = [];
  listener = await listen([{ transport: "tcp", host: "127.0.0.1", port: 0 }], (sink) => {
    const reader = new HandshakeReader();
    const decoder = new RequestDecoder({ maxPayload: 1 << 25, discardLimit: 1 << 25 });
    let noZeroes = false;
    let transmitting = false;
    sink.write(encodeServerGreeting(HandshakeFlag.FIXED_NEWSTYLE | HandshakeFlag.NO_ZEROES));
    const transmit = () => {
      for (let r = decoder.next(); r !== null; r = decoder.next()) {
        if (typeof r === "string") throw new Error(r);
        commands.push(r.type);
        if (script.onRequest?.(r, sink)) continue;
        if (r.type === Cmd.READ) {
          const header = new Uint8Array(16);
          writeSimpleReply(header, 0, 0, r.cookieHi, r.cookieLo);
          // Dribble the reply a byte at a time: the client must reassemble it.
          const bytes = new Uint8Array([...header, ...disk.subarray(r.offset, r.offset + r.length)]);
          for (let i = 0; i < bytes.length; i += 1 + (i % 97)) sink.write(bytes.subarray(i, i + 1 + (i % 97)));
        } else if (r.type === Cmd.WRITE) {
          disk.set(r.payload!, r.offset);
          reply(sink, r, 0);
        } else if (r.type === Cmd.WRITE_ZEROES) {
          disk.fill(0, r.offset, r.offset + r.length);
          reply(sink, r, 0);
        } else if (r.type === Cmd.DISC) {
          sink.end();
        } else reply(sink, r, 0);
      }
    };
    return {
      onData(chunk) {
        if (transmitting) return (decoder.push(chunk), transmit());
        reader.push(chunk);
        for (let e = reader.next(); e !== null; e = reader.next()) {
          if (e.kind === "client-flags") noZeroes = (e.flags & 2) !== 0;
          else if (e.kind === "option" && e.option === Opt.GO) {
            const request = parseInfoRequest(e.data);
            if (script.goUnsupported) sink.write(encodeOptionReply(Opt.GO, Rep.ERR_UNSUP));
            else if (typeof request === "string" || request.name !== "disk") {
              sink.write(encodeOptionError(Opt.GO, Rep.ERR_UNKNOWN, "no export by that name"));
            } else {
              sink.write(encodeOptionReply(Opt.GO, Rep.INFO, infoExport(SIZE, script.flags)));
              if (script.blockSize) sink.write(encodeOptionReply(Opt.GO, Rep.INFO, infoBlockSize(...script.blockSize)));
              sink.write(encodeOptionReply(Opt.GO, Rep.ACK));
              transmitting = true;
            }
          } else if (e.kind === "option" && e.option === Opt.EXPORT_NAME) {
            if (new TextDecoder().decode(e.data) !== "disk") return sink.destroy();
            sink.write(encodeExportNameReply(SIZE, script.flags, noZeroes));
            transmitting = true;
          } else throw new Error(`unexpected ${JSON.stringify(e)}`);
          if (transmitting) {
            decoder.push(reader.remainder());
            return transmit();
          }
        }
      },
      onDrain() {},
      onClose() {},
    };
  });
  const port = (listener.bound[0] as { port: number }).port;
  const log = recordingLog();
  const open = (exportName = "disk", requestTimeoutMs?: number) =>
    NbdClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName, log, handshakeTimeoutMs: 5000, requestTimeoutMs });
  return { disk, commands, open, log, port };
}

const ALL = TxFlag.HAS_FLAGS | TxFlag.SEND_FLUSH | TxFlag.SEND_WRITE_ZEROES;

async function rejection(promise: Promise<unknown>): Promise<DstdError> {
  const error = await promise.then(() => null, (e: unknown) => e);
  expect(error).toBeInstanceOf(DstdError);
  return error as DstdError;
}

describe("NbdClient", () => {
  test("OPT_GO: pipelined writes and dribbled reads round-trip; WRITE_ZEROES, FLUSH and DISC are sent", async () => {
    const server = await serve({ flags: ALL });
    const client = await server.open();
    expect(client.size).toBe(SIZE);
    const data = crypto.getRandomValues(new Uint8Array(64 * 1024));
    await Promise.all(Array.from({ length: 8 }, (_, i) => client.write(i * 65536, data)));
    const reads = await Promise.all(Array.from({ length: 8 }, (_, i) => client.read(i * 65536, 65536)));
    for (const r of reads) expect(r).toEqual(data);
    await client.zero(0, 4096);
    expect(server.disk.subarray(0, 4096).every((b) => b === 0)).toBe(true);
    await client.flush();
    await client.close();
    await until(() => server.commands.includes(Cmd.DISC), "DISC at the server");
    expect(server.commands.filter((c) => c !== Cmd.WRITE && c !== Cmd.READ)).toEqual([Cmd.WRITE_ZEROES, Cmd.FLUSH, Cmd.DISC]);
  });

  test("ERR_UNSUP to OPT_GO falls back to OPT_EXPORT_NAME; no WRITE_ZEROES/FLUSH flags → zero-filled WRITEs, flush skipped", async () => {
    const server = await serve({ flags: TxFlag.HAS_FLAGS, goUnsupported: true });
    const client = await server.open();
    expect(client.size).toBe(SIZE);
    server.disk.fill(7);
    await client.zero(4096, 8192);
    expect(server.disk.subarray(4096, 12288).every((b) => b === 0)).toBe(true);
    expect(server.disk[12288]).toBe(7);
    await client.flush();
    expect(server.commands).toEqual([Cmd.WRITE]);
    expect(server.log.lines.join("\n")).toContain("does not offer FLUSH");
    await client.close();
  });

  test("a server that stops answering fails the request at the deadline (no keepalive in NBD); abort() fails at once", async () => {
    const server = await serve({ flags: ALL, onRequest: (request) => request.type === Cmd.READ }); // READs go unanswered
    const client = await server.open("disk", 300);
    await client.write(0, new Uint8Array(4096).fill(1)); // answered
    const started = performance.now();
    const error = await rejection(client.read(0, 4096));
    expect(error.message).toContain("no reply to READ of 4096 bytes at offset 0 within 300 ms");
    expect(performance.now() - started).toBeLessThan(5000);
    await client.close(); // nothing outstanding: returns
    const other = await server.open("disk", 60_000);
    const pending = rejection(other.read(0, 4096));
    other.abort();
    expect((await pending).message).toContain("aborted");
    await other.close();
  });

  test("dstd copy refuses a server whose largest request is below the 4 KiB a copy sends, instead of sending them", async () => {
    const server = await serve({ flags: ALL, blockSize: [1, 1, 512] });
    const url = parseExportUrl(`nbd://127.0.0.1:${server.port}/disk`) as ExportUrl;
    const error = await rejection(openEndpoint({ url }, { log: server.log, writable: true }));
    expect(error.message).toContain("takes requests of at most 512 bytes (NBD_INFO_BLOCK_SIZE); dstd copy needs 4096");
    expect(server.commands.filter((c) => c !== Cmd.DISC)).toEqual([]); // nothing sent but the goodbye
  });

  test("a wrong export name is refused with the server's message; with EXPORT_NAME, the dropped connection is explained", async () => {
    const go = await serve({ flags: ALL });
    const error = await rejection(go.open("nope"));
    expect(error.code).toBe("E_REFUSED");
    expect(error.message).toContain("ERR_UNKNOWN");
    expect(error.message).toContain("no export by that name");
    await listener!.close();
    const old = await serve({ flags: ALL, goUnsupported: true });
    const closed = await rejection(old.open("nope"));
    expect(closed.code).toBe("E_REFUSED");
    expect(closed.message).toContain("export 'nope' does not exist");
  });

  test("an error reply rejects that request with the errno named; others are unaffected", async () => {
    const server = await serve({
      flags: ALL,
      onRequest: (r, sink) => (r.type === Cmd.READ && r.offset === 4096 ? (reply(sink, r, 5), true) : false),
    });
    const client = await server.open();
    const [bad, good] = [client.read(4096, 512), client.read(0, 512)];
    const error = await rejection(bad);
    expect(error.errno).toBe(5);
    expect(error.message).toContain("READ of 512 bytes at offset 4096");
    expect(error.message).toContain("EIO");
    expect((await good).length).toBe(512);
    await client.close();
  });

  test("a dropped connection rejects every outstanding request, and later ones", async () => {
    let held = 0;
    const server = await serve({
      flags: ALL,
      onRequest: (r, sink) => {
        if (r.type !== Cmd.READ) return false;
        if (++held === 3) sink.destroy();
        return true; // never answer
      },
    });
    const client = await server.open();
    const outcomes = [client.read(0, 512), client.read(512, 512), client.read(1024, 512)].map(rejection);
    for (const error of await Promise.all(outcomes)) {
      expect(error.code).toBe("E_CONNECTION");
      expect(error.message).toContain("connection lost");
    }
    expect((await rejection(client.write(0, new Uint8Array(512)))).code).toBe("E_CONNECTION");
    await client.close();
  });

  test("the read-only flag refuses writes and zeroes before sending anything", async () => {
    const server = await serve({ flags: ALL | TxFlag.READ_ONLY });
    const client = await server.open();
    expect(client.readOnly).toBe(true);
    expect((await rejection(client.write(0, new Uint8Array(512)))).code).toBe("E_READ_ONLY");
    expect((await rejection(client.zero(0, 512))).message).toContain("read-only");
    expect((await rejection(client.read(SIZE - 100, 512))).code).toBe("E_RANGE");
    await client.close();
    await until(() => server.commands.length === 1, "DISC");
    expect(server.commands.filter((c) => c !== Cmd.DISC)).toEqual([]); // nothing sent but the goodbye
  });
});

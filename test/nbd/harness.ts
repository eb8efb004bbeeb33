/**
 * @module test/server/nbd-harness — drives an NbdConnection byte by byte through a FakeSink:
 * builds client handshake bytes and requests, and parses what the server sent (option
 * replies, simple replies, structured chunks). Shared by the connection and fuzz tests.
 */
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import type { Backend } from "../../src/storage/local/backend.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { NbdConnection, type NbdConnectionOptions } from "../../src/nbd/connection.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import type { Peer } from "../../src/transport/types.ts";
import { IHAVEOPT, OPTION_REPLY_MAGIC, Opt, SIMPLE_REPLY_MAGIC, STRUCTURED_REPLY_MAGIC } from "../../src/wire/nbd/constants.ts";
import { FakeSink } from "../helpers/fake-sink.ts";

export const PEER: Peer = { transport: "tcp", address: "192.0.2.7", port: 40000 };
const utf8 = new TextEncoder();

export interface Harness {
  sink: FakeSink;
  connection: NbdConnection;
  backend: Backend;
  target: StoragePort;
  logs: string[];
  send(bytes: Uint8Array): void;
}

export interface HarnessOptions {
  mode?: "newstyle" | "kernel";
  size?: number;
  access?: "ro" | "rw";
  backend?: Backend;
  target?: StoragePort;
  room?: number;
  /** Export names that exist; "secret" is refused by policy. Default: "disk" and "". */
  names?: string[];
  limits?: NbdConnectionOptions["limits"];
}

export function harness(options: HarnessOptions = {}): Harness {
  const backend = options.backend ?? createMemoryBackend(options.size ?? 1 << 20);
  const target = options.target ?? createLocalPort(backend, { description: "test export" });
  const names = options.names ?? ["disk", ""];
  const logs: string[] = [];
  const sink = new FakeSink(options.room);
  const connectionOptions: NbdConnectionOptions = {
    mode: options.mode ?? "newstyle",
    resolve(name) {
      if (name === "secret") return { refuse: "192.0.2.7 is not on the allow list", code: "policy" };
      if (!names.includes(name)) return { refuse: `no export named ${JSON.stringify(name)}` };
      return { target, access: options.access ?? "rw" };
    },
    list: () => [{ name: "disk", description: "the test disk" }],
    log: { info: (m) => logs.push(`info: ${m}`), warn: (m) => logs.push(`warn: ${m}`) },
    limits: options.limits,
  };
  const connection = new NbdConnection(sink, PEER, connectionOptions);
  sink.handler = connection;
  return { sink, connection, backend, target, logs, send: (bytes) => connection.onData(bytes) };
}

export function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

export function u32(value: number): Uint8Array {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value);
  return out;
}

export function u16(value: number): Uint8Array {
  const out = new Uint8Array(2);
  new DataView(out.buffer).setUint16(0, value);
  return out;
}

/** C: IHAVEOPT, u32 option, u32 length, data. */
export function option(opt: number, data: Uint8Array = new Uint8Array(0), lengthOverride?: number): Uint8Array {
  const out = new Uint8Array(16 + data.length);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, IHAVEOPT);
  view.setUint32(8, opt);
  view.setUint32(12, lengthOverride ?? data.length);
  out.set(data, 16);
  return out;
}

export function infoData(name: string, requests: number[] = []): Uint8Array {
  const nameBytes = utf8.encode(name);
  return concat(u32(nameBytes.length), nameBytes, u16(requests.length), ...requests.map(u16));
}

export function metaData(name: string, queries: string[]): Uint8Array {
  const nameBytes = utf8.encode(name);
  const parts = queries.map((q) => {
    const b = utf8.encode(q);
    return concat(u32(b.length), b);
  });
  return concat(u32(nameBytes.length), nameBytes, u32(queries.length), ...parts);
}

export interface OptionReply {
  option: number;
  type: number;
  data: Uint8Array;
}

/** Split server bytes into option replies; throws if they are not well formed (a test failure). */
export function parseOptionReplies(bytes: Uint8Array): OptionReply[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const replies: OptionReply[] = [];
  let at = 0;
  while (at < bytes.length) {
    if (view.getBigUint64(at) !== OPTION_REPLY_MAGIC) throw new Error(`bad option reply magic at ${at}`);
    const length = view.getUint32(at + 16);
    replies.push({ option: view.getUint32(at + 8), type: view.getUint32(at + 12), data: bytes.slice(at + 20, at + 20 + length) });
    at += 20 + length;
  }
  return replies;
}

export type Reply =
  | { kind: "simple"; error: number; cookie: bigint; data: Uint8Array | null }
  | { kind: "chunk"; flags: number; type: number; cookie: bigint; payload: Uint8Array };

/**
 * Parse transmission replies. Simple replies to READs carry data whose length only the
 * client knows: `readLengths` maps cookie → length for reads sent.
 */
export function parseReplies(bytes: Uint8Array, readLengths: Map<bigint, number> = new Map()): Reply[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
  const replies: Reply[] = [];
  let at = 0;
  while (at < bytes.length) {
    const magic = view.getUint32(at);
    if (magic === SIMPLE_REPLY_MAGIC) {
      const error = view.getUint32(at + 4);
      const cookie = view.getBigUint64(at + 8);
      at += 16;
      let data: Uint8Array | null = null;
      const length = readLengths.get(cookie);
      if (error === 0 && length !== undefined) {
        data = bytes.slice(at, at + length);
        at += length;
      }
      replies.push({ kind: "simple", error, cookie, data });
    } else if (magic === STRUCTURED_REPLY_MAGIC) {
      const length = view.getUint32(at + 16);
      replies.push({
        kind: "chunk",
        flags: view.getUint16(at + 4),
        type: view.getUint16(at + 6),
        cookie: view.getBigUint64(at + 8),
        payload: bytes.slice(at + 20, at + 20 + length),
      });
      at += 20 + length;
    } else {
      throw new Error(`bad reply magic 0x${magic.toString(16)} at ${at}`);
    }
  }
  return replies;
}

/**
 * Newstyle handshake up to transmission with OPT_GO: client flags (fixed newstyle + no
 * zeroes), optionally STRUCTURED_REPLY and SET_META_CONTEXT base:allocation. Returns the
 * option replies; the sink is left empty.
 */
export function negotiate(h: Harness, options: { structured?: boolean; meta?: boolean; name?: string } = {}): OptionReply[] {
  const name = options.name ?? "disk";
  h.sink.read(); // greeting
  const parts = [u32(3)];
  if (options.structured) parts.push(option(Opt.STRUCTURED_REPLY));
  if (options.meta) parts.push(option(Opt.SET_META_CONTEXT, metaData(name, ["base:allocation"])));
  parts.push(option(Opt.GO, infoData(name)));
  h.send(concat(...parts));
  return parseOptionReplies(h.sink.read());
}

export function view(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.length);
}

export function randomBytes(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

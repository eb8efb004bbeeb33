/**
 * Compression is negotiated (docs/protocol.md §11.1): a secondary that does not ask for
 * FETCH_ZSTD in HELLO (an older dstd, here a hand-driven client) is not granted it and gets
 * plain FETCH replies; one that asks is granted it, and a FETCH carrying Flag.ZSTD gets its
 * compressible records as one zstd frame with the reply flag set, which decode to the very
 * records of the plain reply. Against a real `dstd export --log-dir` primary.
 */
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { writeFileSync } from "node:fs";
import { startExport, type RunningExport } from "../helpers/binary.ts";
import { RAW_FEATURES, RawDst } from "../helpers/dst-raw.ts";
import { scratchDir } from "../helpers/files.ts";
import { copyInto, MiB } from "./pair.ts";
import { zstdDecompress } from "../../src/lib/zstd.ts";
import { encodeFrame } from "../../src/wire/dst/header.ts";
import { Feature, Flag, Op, Perm, REPLY_BIT } from "../../src/wire/dst/constants.ts";
import { decodeFetchReply, encodeFetchRequest } from "../../src/wire/dst/fetch.ts";

const dir = scratchDir("replication-zstd-negotiation");
let primary: RunningExport | null = null;
afterAll(async () => {
  await primary?.stop();
  dir.remove();
});


async function fetchFrom(port: number, features: number, flags: number) {
  const raw = await RawDst.connect(port);
  try {
    const hello = await raw.handshake({ exportName: "disk", features });
    if (!hello.ok) throw new Error(hello.message);
    const request = encodeFetchRequest({ segment: 0, offset: 0, applied: 0, prevChain: 0n, prevLamport: 0, prevGeneration: 0 });
    await raw.sendFrames(encodeFrame({ opcode: Op.FETCH, txid: 1, flags, offset: 1, length: 4 * MiB }, request));
    const reply = await raw.next();
    expect(reply.header.opcode).toBe(Op.FETCH | REPLY_BIT);
    expect(reply.header.status).toBe(0);
    return { welcome: hello.welcome, header: reply.header, payload: reply.payload };
  } finally {
    raw.close();
  }
}

test("an old secondary gets plain replies; a new one asking for zstd gets compressed ones with the same records", async () => {
  const image = join(dir.path, "a.img");
  primary = await startExport(["--file", image, "--size", "8MiB", "--allow", "127.0.0.1:rw", "--allow", "127.0.0.1:replica", "--log-dir", join(dir.path, "a.log")]);
  const text = join(dir.path, "text.bin");
  writeFileSync(text, "a compressible line of a log\n".repeat(40_000).slice(0, MiB));
  expect((await copyInto(text, primary.port)).exitCode).toBe(0);

  const old = await fetchFrom(primary.port, RAW_FEATURES, 0);
  expect(old.welcome.permissions & Perm.REPLICA).toBe(Perm.REPLICA);
  expect(old.welcome.features & Feature.FETCH_ZSTD).toBe(0);
  expect(old.header.flags).toBe(0);
  const plain = decodeFetchReply(old.payload);
  if (typeof plain === "string") throw new Error(plain);
  expect(plain.records.length).toBeGreaterThan(MiB);
  expect(old.header.length).toBe(plain.records.length);

  const fresh = await fetchFrom(primary.port, RAW_FEATURES | Feature.FETCH_ZSTD, Flag.ZSTD);
  expect(fresh.welcome.features & Feature.FETCH_ZSTD).toBe(Feature.FETCH_ZSTD);
  expect(fresh.header.flags).toBe(Flag.ZSTD);
  // The header's length is the record bytes uncompressed; the payload is far smaller.
  expect(fresh.header.length).toBe(plain.records.length);
  expect(fresh.payload.length).toBeLessThan(old.payload.length / 10);
  const packed = decodeFetchReply(fresh.payload, fresh.header.flags, 4 * MiB, zstdDecompress);
  if (typeof packed === "string") throw new Error(packed);
  expect(Buffer.compare(packed.records, plain.records)).toBe(0);
  expect(packed.nextSeq).toBe(plain.nextSeq);
}, 60_000);

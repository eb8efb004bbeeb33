/**
 * Compression on the wire between real processes (docs/protocol.md §11.1, docs/replication.md
 * §10): a secondary with `compress = true` fetches through the fault proxy; compressible data
 * travels as a fraction of its log bytes, random data stays about its size (the primary sends
 * plain answers when compressing does not help), and the images are identical at lag 0.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";
import { copyInto, hashPrefix, MiB, ReplicaPair } from "./pair.ts";

const dir = scratchDir("replication-compress");
afterAll(() => dir.remove());
let pair: ReplicaPair | null = null;
afterEach(async () => {
  await pair?.close();
  pair = null;
});

const SIZE = 32 * MiB;

test(
  "compress = true: compressible records cross the link compressed, random ones plain; images identical",
  async () => {
    const where = join(dir.path, "zstd");
    mkdirSync(where);
    pair = await ReplicaPair.create(where, { size: SIZE, secondaryExtra: "compress = true" });
    await pair.start(pair.a);
    await pair.start(pair.b);
    // 16 MiB of text-like data: repeating lines with a counter (compresses well, not to nothing).
    const text = join(where, "text.bin");
    const lines: string[] = [];
    for (let i = 0; lines.length * 48 < 16 * MiB; i++) lines.push(`block ${i.toString().padStart(10, "0")} of a compressible log\n`.padEnd(48, "."));
    writeFileSync(text, lines.join("").slice(0, 16 * MiB));
    expect((await copyInto(text, pair.a.port)).exitCode).toBe(0);
    const first = await pair.caughtUp(120_000);
    console.log(`compressible: ${first.received_bytes} log bytes in ${first.wire_bytes} wire bytes`);
    expect(first.received_bytes).toBeGreaterThan(16 * MiB);
    expect(first.wire_bytes).toBeLessThan(first.received_bytes / 4);
    // Random data: compressing does not help, so it crosses plain (about its own size).
    const random = join(where, "random.bin");
    writeRandomFile(random, 8 * MiB);
    expect((await copyInto(random, pair.a.port)).exitCode).toBe(0);
    const second = await pair.caughtUp(120_000);
    const log = second.received_bytes - first.received_bytes;
    const wire = second.wire_bytes - first.wire_bytes;
    console.log(`random: ${log} log bytes in ${wire} wire bytes`);
    expect(wire).toBeGreaterThan(log * 0.99);
    expect(hashPrefix(pair.b.image, SIZE)).toBe(hashPrefix(pair.a.image, SIZE));
  },
  240_000,
);

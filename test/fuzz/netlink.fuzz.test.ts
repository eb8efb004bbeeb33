/**
 * @module test/fuzz/netlink.fuzz — feeds random and mutated datagrams to every netlink and
 * nbd-genl decoder: none may throw, loop forever, or return a view outside its input.
 * Default 20,000 inputs from a fresh random seed; the seed is printed on failure.
 *   FUZZ_ITERATIONS=1000000 bun test test/fuzz/netlink.fuzz.test.ts   # long run
 *   FUZZ_SEED=1234 bun test test/fuzz/netlink.fuzz.test.ts             # replay a failure
 */
import { expect, test } from "bun:test";
import {
  NBD_DEVICE_ITEM,
  NbdAttr,
  buildConnect,
  buildReconfigure,
  parseConnectReply,
  parseFamilyReply,
  parseLinkDead,
  parseStatusReply,
} from "../../src/kernel/nbd-genl.ts";
import {
  NLMSG_ERROR,
  NetlinkBuilder,
  attributeString,
  attributeU16,
  attributeU32,
  attributeU64,
  attributeU8,
  parseAck,
  parseAttributes,
  parseGenl,
  parseMessages,
  type Attribute,
} from "../../src/kernel/netlink.ts";
import { Prng } from "../../src/lib/prng.ts";

const iterations = Number(process.env.FUZZ_ITERATIONS ?? 20_000);
const seed = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));

function hex(text: string): Uint8Array {
  return Uint8Array.from(text.replace(/\s+/g, "").match(/../g)!.map((b) => parseInt(b, 16)));
}

/** Valid datagrams to mutate: kernel captures and messages in the shapes nbd.c sends. */
const SEEDS: Uint8Array[] = [
  hex(
    "88000000 10000000 01000000 36200000 01020000 0b000200 6e6c6374 726c0000 06000100 10000000 08000300 02000000 " +
      "08000400 00000000 08000500 00000000 2c000600 14000100 08000100 03000000 08000200 0e000000 14000200 08000100 " +
      "0a000000 08000200 0c000000 1c000700 18000100 08000200 10000000 0b000100 6e6f7469 66790000",
  ),
  hex("24000000 02000001 01000000 36200000 00000000 20000000 10000500 01000000 00000000"),
  hex("30000000 02000000 02000000 36200000 feffffff 1c000000 10000500 02000000 00000000 03010000 08000200 6e626400"),
  hex("34000000 02000003 05000000 63000000 eaffffff 1c000000 20000500 05000000 00000000 0d000100 62616420 61747472 00000000"),
  hex("40000000 20000000 05000000 63000000 05010000 2c000900 14000100 08000100 00000000 05000200 01000000 14000100 08000100 01000000 05000200 00000000"),
  hex("1c000000 20000000 00000000 00000000 04010000 08000100 03000000"),
  hex("1c000000 20000000 05000000 63000000 01010000 08000100 02000000"),
  hex("14000000 03000200 07000000 00000000 00000000"),
  buildConnect(0x20, { index: 1, sizeBytes: 1 << 20, serverFlags: 1, backendId: "x", socketFds: [3, 4] }),
  buildReconfigure(0x20, { index: 1, backendId: "x", socketFds: [5] }),
];

interface Stats {
  messages: number;
  malformed: number;
  acks: number;
  families: number;
  statuses: number;
  indexes: number;
}

function mutate(rng: Prng): Uint8Array {
  const choice = rng.int(10);
  if (choice === 0) return rng.bytes(rng.int(96));
  if (choice === 1) {
    // Several seeds back to back (multi-message datagrams), then mutated.
    const parts = Array.from({ length: 1 + rng.int(3) }, () => rng.pick(SEEDS));
    return mutateBytes(rng, Uint8Array.from(parts.flatMap((p) => [...p])));
  }
  if (choice === 2) return randomTree(rng);
  return mutateBytes(rng, rng.pick(SEEDS).slice());
}

function mutateBytes(rng: Prng, bytes: Uint8Array): Uint8Array {
  const edits = 1 + rng.int(4);
  for (let e = 0; e < edits && bytes.length > 0; e++) {
    const at = rng.int(bytes.length);
    switch (rng.int(5)) {
      case 0:
        bytes[at] = rng.int(256);
        break;
      case 1: // a length field (nlmsg_len or nla_len) set to something nasty
        bytes[at] = rng.pick([0, 1, 3, 4, 5, 0xff]);
        if (at + 1 < bytes.length) bytes[at + 1] = rng.pick([0, 0, 0xff]);
        break;
      case 2:
        bytes = bytes.slice(0, at);
        break;
      case 3: // NLA_F_NESTED / NET_BYTEORDER bits on a type field
        if (at + 1 < bytes.length) bytes[at + 1]! |= rng.pick([0x80, 0x40, 0xc0]);
        break;
      default:
        bytes = Uint8Array.from([...bytes, ...rng.bytes(rng.int(12))]);
    }
  }
  return bytes;
}

/** A structurally plausible message with random nesting, so deep parsers get exercised. */
function randomTree(rng: Prng): Uint8Array {
  const b = new NetlinkBuilder(rng.pick([0x10, 0x20, NLMSG_ERROR]), rng.int(4), rng.int(3), 0).genlHeader(1 + rng.int(5), 1);
  const attrs = 1 + rng.int(4);
  for (let i = 0; i < attrs; i++) {
    const type = rng.pick([1, 2, 7, NbdAttr.DEVICE_LIST, NBD_DEVICE_ITEM, rng.int(16)]);
    if (rng.chance(0.5)) {
      b.beginNested(type, rng.chance(0.5));
      for (let j = rng.int(4); j > 0; j--) {
        if (rng.chance(0.5)) b.beginNested(1).u32(1 + rng.int(2), rng.next()).u8(2, rng.int(256)).endNested();
        else b.raw(1 + rng.int(2), rng.bytes(rng.int(14)));
      }
      b.endNested();
    } else {
      b.raw(type, rng.bytes(rng.int(20)));
    }
  }
  return mutateBytes(rng, b.finish().slice());
}

function walkAttributes(area: Uint8Array, depth: number): void {
  const parsed = parseAttributes(area);
  for (const a of parsed.attributes) {
    checkInside(a, area);
    attributeU8(a);
    attributeU16(a);
    attributeU32(a);
    attributeU64(a);
    attributeString(a);
    if (depth < 4) walkAttributes(a.payload, depth + 1);
  }
}

function checkInside(a: Attribute, area: Uint8Array): void {
  const start = a.payload.byteOffset - area.byteOffset;
  if (a.payload.buffer !== area.buffer || start < 0 || start + a.payload.length > area.length) {
    throw new Error("attribute payload escapes its area");
  }
}

function runOnce(datagram: Uint8Array, stats: Stats): void {
  const { messages, error } = parseMessages(datagram);
  if (error !== null) stats.malformed++;
  for (const m of messages) {
    stats.messages++;
    const end = m.payload.byteOffset + m.payload.length;
    if (m.payload.buffer !== datagram.buffer || end > datagram.byteOffset + datagram.length) {
      throw new Error("message payload escapes the datagram");
    }
    if (parseAck(m).ok) stats.acks++;
    const genl = parseGenl(m);
    if (genl.ok) walkAttributes(genl.value.attributes, 0);
    if (parseFamilyReply(m).ok) stats.families++;
    if (parseStatusReply(m).ok) stats.statuses++;
    if (parseConnectReply(m).ok || parseLinkDead(m).ok) stats.indexes++;
  }
}

test(
  `netlink decoders survive ${iterations} fuzz inputs (seed ${seed})`,
  () => {
    const rng = new Prng(seed);
    const stats: Stats = { messages: 0, malformed: 0, acks: 0, families: 0, statuses: 0, indexes: 0 };
    try {
      for (let i = 0; i < iterations; i++) runOnce(mutate(rng), stats);
    } catch (error) {
      console.error(`netlink fuzz seed: ${seed}`);
      throw error;
    }
    // Every outcome must be reached, or the fuzzer is not testing anything.
    if (iterations >= 10_000) {
      expect(stats.malformed).toBeGreaterThan(iterations / 10);
      expect(stats.acks).toBeGreaterThan(100);
      expect(stats.families).toBeGreaterThan(50);
      expect(stats.statuses).toBeGreaterThan(50);
      expect(stats.indexes).toBeGreaterThan(50);
    }
  },
  { timeout: Math.max(60_000, iterations * 2) },
);

/**
 * @module test/sim/block-data — self-describing block contents for the oracle.
 *
 * Every block a simulated write carries is filled from (version, block index): the first 8
 * bytes hold both, little-endian, and the rest is a xorshift stream seeded by them. So any
 * block read back (or found on the disk image) names the write it came from, and a torn,
 * shifted or mixed-up block is caught because its body no longer matches its own tag.
 * Version 0 is the all-zero block (never written, trimmed or zeroed).
 */

/** Fill `target` (one block) with the contents of `version` for block index `block`. */
export function fillBlock(target: Uint8Array, version: number, block: number): void {
  if (version === 0) {
    target.fill(0);
    return;
  }
  writeU32(target, 0, version);
  writeU32(target, 4, block);
  let x = seed(version, block);
  if (target.byteOffset % 4 === 0 && target.length % 4 === 0) {
    // Fast path (every block the simulator allocates): whole little-endian words.
    const words = new Uint32Array(target.buffer, target.byteOffset + 8, (target.length - 8) / 4);
    for (let k = 0; k < words.length; k++) {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      words[k] = x;
    }
    if (littleEndian) return;
    x = seed(version, block);
  }
  for (let i = 8; i < target.length; i += 4) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    target[i] = x;
    if (i + 1 < target.length) target[i + 1] = x >>> 8;
    if (i + 2 < target.length) target[i + 2] = x >>> 16;
    if (i + 3 < target.length) target[i + 3] = x >>> 24;
  }
}

function seed(version: number, block: number): number {
  return (Math.imul(version, 0x9e3779b1) ^ Math.imul(block + 1, 0x85ebca77)) | 1;
}

const littleEndian = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/** Data for a write of `count` blocks starting at `first`, all of one version. */
export function makeWriteData(version: number, first: number, count: number, blockSize: number): Uint8Array {
  const data = new Uint8Array(count * blockSize);
  for (let i = 0; i < count; i++) fillBlock(data.subarray(i * blockSize, (i + 1) * blockSize), version, first + i);
  return data;
}

/**
 * Which version `bytes` (one block, index `block`) holds: the version number, or a string
 * saying why it is no block any write produced (torn, shifted, garbage).
 */
export function blockVersion(bytes: Uint8Array, block: number): number | string {
  const version = readU32(bytes, 0);
  if (version === 0) {
    for (let i = 0; i < bytes.length; i++) if (bytes[i] !== 0) return `tag says zero block but byte ${i} is ${bytes[i]}`;
    return 0;
  }
  const tagged = readU32(bytes, 4);
  if (tagged !== block) return `holds version ${version} of block ${tagged}, not of block ${block}`;
  if (littleEndian && bytes.byteOffset % 4 === 0 && bytes.length % 4 === 0 && wordsMatch(bytes, version, block)) return version;
  if (scratch.length < bytes.length) scratch = new Uint8Array(bytes.length);
  const expected = scratch.subarray(0, bytes.length);
  fillBlock(expected, version, block);
  for (let i = 8; i < bytes.length; i++) {
    if (bytes[i] !== expected[i]) return `version ${version} with a corrupt body at byte ${i}`;
  }
  return version;
}

/** Compare the body word by word without materialising the expected block (the hot path). */
function wordsMatch(bytes: Uint8Array, version: number, block: number): boolean {
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset + 8, (bytes.length - 8) / 4);
  let x = seed(version, block);
  for (let k = 0; k < words.length; k++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    if (words[k] !== x >>> 0) return false;
  }
  return true;
}

/** Reused by blockVersion: the simulator is single-threaded and checks one block at a time. */
let scratch = new Uint8Array(4096);

function writeU32(target: Uint8Array, at: number, value: number): void {
  target[at] = value;
  target[at + 1] = value >>> 8;
  target[at + 2] = value >>> 16;
  target[at + 3] = value >>> 24;
}

function readU32(source: Uint8Array, at: number): number {
  return ((source[at] ?? 0) | ((source[at + 1] ?? 0) << 8) | ((source[at + 2] ?? 0) << 16) | ((source[at + 3] ?? 0) << 24)) >>> 0;
}

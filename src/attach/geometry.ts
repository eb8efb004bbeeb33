/**
 * @module attach/geometry — the shape of the kernel device for an export: its size and
 * logical block size at CONNECT, and the device size an export size becomes later (resize).
 * The kernel's capacity is a whole number of logical blocks of 512..PAGE_SIZE bytes
 * (kernel/device.ts checkGeometry says why a value is refused).
 *
 * Must not: touch the kernel or the export (pure arithmetic; attach-plan.test.ts covers it).
 */
import { DstdError } from "../lib/errors.ts";

export interface Geometry {
  size: number;
  blockSize: number;
}

/** Device size and logical block size for an export: block = preferred clamped to 512..4096. */
export function deviceGeometry(exportSize: number, preferred: number, minimum: number): Geometry {
  if (minimum > 4096) {
    throw new DstdError("E_CONFIG", `the export needs requests of at least ${minimum} bytes; a kernel NBD device can promise at most 4096`);
  }
  const clamped = Math.min(4096, Math.max(512, minimum, preferred));
  let blockSize = 2 ** Math.floor(Math.log2(clamped));
  // The kernel's capacity is whole blocks: prefer a block size that loses no tail.
  while (blockSize > Math.max(512, minimum) && exportSize % blockSize !== 0) blockSize /= 2;
  const size = exportSize - (exportSize % blockSize);
  if (size < blockSize) throw new DstdError("E_CONFIG", `the export (${exportSize} bytes) is smaller than one ${blockSize}-byte block`);
  return { size, blockSize };
}

/**
 * The device size for an export of `exportSize` bytes on a device whose logical block size is
 * fixed (it cannot change under a mounted filesystem): whole blocks, the tail cut.
 */
export function deviceSizeFor(exportSize: number, blockSize: number): number {
  return exportSize - (exportSize % blockSize);
}

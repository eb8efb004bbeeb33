/**
 * storage/layers/pass-through.ts: a layer over a port reports every capability of the port
 * below it (storage/port.ts), the optional ones included: `writeDataCopied` (the engine port
 * copies WRITE data, so the NBD front may recycle the buffer at once — `dstd attach` puts
 * SocketsShareOnePort over the engine port) and `resize` (present exactly when the port below
 * has it). A layer that overrides `write` (it may hold the data) does not inherit the promise.
 */
import { describe, expect, test } from "bun:test";
import { SocketsShareOnePort } from "../../src/attach/shared-port.ts";
import { DeferredLayer, HeldWork } from "../../src/storage/layers/deferred.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { call, describePort, type Done, type StoragePort } from "../../src/storage/port.ts";

/** A port whose every flag is the opposite of a local port's, copying its WRITE data like the engine port. */
function copyingPort(): StoragePort {
  const below = createLocalPort(createMemoryBackend(1 << 20));
  return {
    kind: "remote",
    description: "dst://example/disk",
    get size() {
      return below.size;
    },
    blockSize: 4096,
    maxPayload: 8 << 20,
    readOnly: false,
    canTrim: false,
    canZero: true,
    canFastZero: false,
    canFlush: true,
    canMultiConn: false,
    canBlockStatus: false,
    synchronous: false,
    writeDataCopied: true,
    read: (offset, into, done) => below.read(offset, into, done),
    write: (offset, data, fua, done) => below.write(offset, data.slice(), fua, done),
    flush: (done) => below.flush(done),
    trim: (offset, length, fua, done) => below.trim(offset, length, fua, done),
    zero: (offset, length, flags, done) => below.zero(offset, length, flags, done),
    extents: (offset, length, max, done) => below.extents(offset, length, max, done),
    close: () => below.close(),
  };
}

class CountsWrites extends PassThrough {
  writes = 0;
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.writes++;
    this.next.write(offset, data, fua, done);
  }
}

describe("a layer over a port", () => {
  test("reports the same capabilities as the port below, writeDataCopied included", () => {
    for (const port of [copyingPort(), createLocalPort(createMemoryBackend(1 << 20))]) {
      const layer = new PassThrough(port);
      expect(describePort(layer)).toEqual(describePort(port));
      expect(layer.writeDataCopied).toBe(port.writeDataCopied === true);
      expect(layer.resize === undefined).toBe(port.resize === undefined);
    }
    expect(new PassThrough(copyingPort()).writeDataCopied).toBe(true);
    expect(new PassThrough(new PassThrough(copyingPort())).writeDataCopied).toBe(true);
  });

  test("the attach layer over a copying port lets the NBD front recycle WRITE buffers", () => {
    const port = copyingPort();
    const shared = new SocketsShareOnePort(port);
    expect(shared.writeDataCopied).toBe(true);
    expect(shared.canMultiConn).toBe(true);
    const asIfNotShared: Record<string, unknown> = { ...describePort(shared), canMultiConn: false };
    expect(asIfNotShared).toEqual(describePort(port));
  });

  test("a layer that overrides write promises nothing about its data unless it says so", () => {
    expect(new DeferredLayer(copyingPort(), new HeldWork().schedule).writeDataCopied).toBe(false);
    expect(new CountsWrites(copyingPort()).writeDataCopied).toBe(false);
  });

  test("resize goes through the layer and is seen above at once", async () => {
    const port = createLocalPort(createMemoryBackend(1 << 20));
    expect(port.resize).toBeDefined();
    const layer = new PassThrough(new PassThrough(port));
    expect(layer.resize).toBeDefined();
    await new Promise<void>((resolve, reject) => layer.resize!(2 << 20, (errno) => (errno === 0 ? resolve() : reject(new Error(`errno ${errno}`)))));
    expect(port.size).toBe(2 << 20);
    expect(layer.size).toBe(2 << 20);
    await call.write(layer, (2 << 20) - 4096, new Uint8Array(4096).fill(9));
    const back = new Uint8Array(4096);
    await call.read(port, (2 << 20) - 4096, back);
    expect(back.every((b) => b === 9)).toBe(true);
    expect(new PassThrough(copyingPort()).resize).toBeUndefined();
  });
});

/**
 * @module test/sim/sim-nbd — the NBD front over the engine, as `dstd attach` runs it: the real
 * NbdConnection (nbd/connection.ts, kernel mode: transmission phase only, simple replies, as
 * drivers/block/nbd.c speaks it) serving the real engine port (storage/remote/engine-port.ts)
 * over DstClient. The simulation's application speaks the NBD wire to it, and checks every
 * reply before the oracle sees it:
 * - the magic is a simple reply's; the handle names a request in flight, answered once;
 * - the error is one NBD allows (proto.md "Error values"), and the one the front must make
 *   of what the engine said (nbdErrno): a request that failed must not look successful, nor
 *   the reverse;
 * - a READ's data is as long as asked.
 * The pipe between the application and the front is local (a socketpair or a Unix socket in
 * production): no faults, but every delivery is a simulated-clock event, never a synchronous
 * call into the other side.
 */
import { NbdConnection } from "../../src/nbd/connection.ts";
import { PassThrough } from "../../src/storage/layers/pass-through.ts";
import type { Done, StoragePort, ZeroFlags } from "../../src/storage/port.ts";
import type { Sink } from "../../src/transport/types.ts";
import { Cmd, CmdFlag, REQUEST_HEADER_SIZE, SIMPLE_REPLY_MAGIC, SIMPLE_REPLY_SIZE, nbdErrno } from "../../src/wire/nbd/constants.ts";
import { writeRequestHeader } from "../../src/wire/nbd/client.ts";
import type { OpKind } from "../../src/engine/client-engine.ts";
import { violation } from "./checkers.ts";
import type { SimClock } from "./sim-clock.ts";

/** What the NBD application waits for: one request in flight. */
export interface NbdPending {
  kind: OpKind;
  offset: number;
  length: number;
  /** The engine's own status for it (set when the port completed it; -1 before). */
  portErrno: number;
  done(status: number, data: Uint8Array | null): void;
}

const NBD_ERRNOS = new Set([0, 1, 5, 12, 22, 28, 75, 95, 108]);

const commands: Record<string, number> = { read: Cmd.READ, write: Cmd.WRITE, flush: Cmd.FLUSH, trim: Cmd.TRIM, zero: Cmd.WRITE_ZEROES };

function key(kind: string, offset: number, length: number): string {
  return `${kind}:${offset}:${length}`;
}

/**
 * Between the front and the engine port: tells each pending NBD request what the engine
 * answered (matched by kind, offset and length, in request order: the front calls the port in
 * the order it decodes requests).
 */
class Recorder extends PassThrough {
  readonly calls = new Map<string, NbdPending[]>();

  constructor(next: StoragePort) {
    super(next);
  }

  // Its write wraps only the completion and hands `data` down at once: the port's promise holds.
  override get writeDataCopied(): boolean {
    return this.next.writeDataCopied === true;
  }

  private wrap(kind: string, offset: number, length: number, done: Done): Done {
    const k = key(kind, offset, length);
    const pending = this.calls.get(k)?.shift();
    if (pending === undefined) violation("nbd reply", `the front called the port for ${k}, which no NBD request asked for`);
    return (errno) => {
      pending.portErrno = errno;
      done(errno);
    };
  }

  override read(offset: number, into: Uint8Array, done: Done): void {
    this.next.read(offset, into, this.wrap("read", offset, into.length, done));
  }
  override write(offset: number, data: Uint8Array, fua: boolean, done: Done): void {
    this.next.write(offset, data, fua, this.wrap("write", offset, data.length, done));
  }
  override flush(done: Done): void {
    this.next.flush(this.wrap("flush", 0, 0, done));
  }
  override trim(offset: number, length: number, fua: boolean, done: Done): void {
    this.next.trim(offset, length, fua, this.wrap("trim", offset, length, done));
  }
  override zero(offset: number, length: number, flags: ZeroFlags, done: Done): void {
    this.next.zero(offset, length, flags, this.wrap("zero", offset, length, done));
  }
}

export class SimNbdApplication {
  private readonly front: NbdConnection;
  private readonly recorder: Recorder;
  private readonly inFlight = new Map<number, NbdPending>();
  private nextHandle = 1;
  private buffer = new Uint8Array(0);
  closed: string | null = null;
  /** Planted bug (checker tests only): the front's n-th reply names the wrong handle. */
  plantWrongHandle = 0;
  counters = { requests: 0, replies: 0, errors: 0 };

  constructor(
    private readonly clock: SimClock,
    port: StoragePort,
    trace: (line: string) => void,
  ) {
    this.recorder = new Recorder(port);
    const sink: Sink = {
      write: (bytes, release) => {
        const copy = bytes.slice();
        if (this.plantWrongHandle > 0 && --this.plantWrongHandle === 0) copy[15]! ^= 1; // the first reply in this write
        release?.();
        clock.after(0, () => this.receive(copy));
      },
      queuedBytes: 0,
      end: () => void (this.closed ??= "the front ended the connection"),
      destroy: () => void (this.closed ??= "the front reset the connection"),
      pause() {},
      resume() {},
    };
    const recorder = this.recorder;
    this.front = new NbdConnection(sink, { transport: "unix", address: "/run/sim-nbd.sock", port: 0 }, {
      mode: "kernel",
      exportName: "disk",
      resolve: () => ({ target: recorder, access: "rw" }),
      list: () => [],
      defer: (work) => clock.after(0, work),
      log: { info: (m: string) => trace(`nbd front: ${m}`), warn: (m: string) => trace(`nbd front WARN: ${m}`) },
    });
  }

  /** Send one request over the NBD wire; returns its handle. */
  request(pending: NbdPending, fua: boolean, data: Uint8Array | null): number {
    if (this.closed !== null) violation("nbd reply", `request after the front closed the connection: ${this.closed}`);
    const handle = this.nextHandle++;
    this.inFlight.set(handle, pending);
    const k = key(pending.kind, pending.kind === "flush" ? 0 : pending.offset, pending.kind === "flush" ? 0 : pending.length);
    let queue = this.recorder.calls.get(k);
    if (queue === undefined) this.recorder.calls.set(k, (queue = []));
    queue.push(pending);
    const frame = new Uint8Array(REQUEST_HEADER_SIZE + (data?.length ?? 0));
    const flags = fua && pending.kind !== "read" && pending.kind !== "flush" ? CmdFlag.FUA : 0;
    writeRequestHeader(frame, 0, flags, commands[pending.kind]!, handle, pending.offset, pending.length);
    if (data !== null) frame.set(data, REQUEST_HEADER_SIZE);
    this.counters.requests++;
    this.clock.after(0, () => this.front.onData(frame));
    return handle;
  }

  private receive(chunk: Uint8Array): void {
    const joined = new Uint8Array(this.buffer.length + chunk.length);
    joined.set(this.buffer, 0);
    joined.set(chunk, this.buffer.length);
    let at = 0;
    while (joined.length - at >= SIMPLE_REPLY_SIZE) {
      const view = new DataView(joined.buffer, joined.byteOffset + at);
      const magic = view.getUint32(0);
      if (magic !== SIMPLE_REPLY_MAGIC) violation("nbd reply", `reply magic 0x${magic.toString(16)} is not a simple reply's`);
      const error = view.getUint32(4);
      const handle = view.getUint32(8) * 2 ** 32 + view.getUint32(12);
      const pending = this.inFlight.get(handle);
      if (pending === undefined) violation("nbd reply", `a reply names handle ${handle}, which is not in flight (answered twice, or never asked)`);
      const withData = pending.kind === "read" && error === 0;
      if (withData && joined.length - at < SIMPLE_REPLY_SIZE + pending.length) break;
      this.inFlight.delete(handle);
      this.counters.replies++;
      if (error !== 0) this.counters.errors++;
      if (!NBD_ERRNOS.has(error)) violation("nbd reply", `handle ${handle} (${pending.kind}): error ${error} is not an NBD error value`);
      if (pending.portErrno < 0) violation("nbd reply", `handle ${handle} (${pending.kind}) was answered before the engine completed it`);
      if (error !== nbdErrno(pending.portErrno)) {
        violation("nbd reply", `handle ${handle} (${pending.kind}): the front answered error ${error}, the engine said ${pending.portErrno} (NBD: ${nbdErrno(pending.portErrno)})`);
      }
      const data = withData ? joined.slice(at + SIMPLE_REPLY_SIZE, at + SIMPLE_REPLY_SIZE + pending.length) : null;
      at += SIMPLE_REPLY_SIZE + (withData ? pending.length : 0);
      // The oracle and the budget checker judge the engine's own status (a timeout is EIO on NBD).
      pending.done(pending.portErrno, data);
    }
    this.buffer = joined.slice(at);
  }
}

/**
 * @module test/sim/adversary — a hostile client in the simulation (issue "Close the holes": the
 * simulation gains an adversarial client). It sees every HELLO on the wire, so it knows the
 * victim's session id (it travels in clear, docs/protocol.md §6.5); at random moments it opens
 * its own connection to the export and tries to resume that session — without the resumption
 * token, or with a wrong one, with any txid floor and CONNECTION_SEQ — and, in the same send,
 * WRITEs garbage under the txids the victim will use next (the attack that once made the
 * exactly-once table acknowledge the victim's writes without applying them).
 *
 * What must hold, checked here and by the run's data checkers: every attempt is refused
 * (ESTALE) and nothing it sent is applied — a garbage block on the disk, or a victim write
 * answered without being applied, shows up as corrupt or lost data in the oracle; the victim's
 * connection is never fenced by an attempt (the network's onFence would count it).
 * It draws from its own Prng, so turning it on changes no other knob of a seed.
 */
import type { ClientEngine } from "../../src/engine/client-engine.ts";
import type { DstServer } from "../../src/export/server.ts";
import { Errno } from "../../src/lib/errno.ts";
import { Prng } from "../../src/lib/prng.ts";
import type { Sink } from "../../src/transport/types.ts";
import { Feature, Op, PAYLOAD_MAX_DEFAULT } from "../../src/wire/dst/constants.ts";
import { FrameDecoder } from "../../src/wire/dst/decoder.ts";
import { decodeWelcome, encodeHello } from "../../src/wire/dst/handshake.ts";
import { encodeFrame } from "../../src/wire/dst/header.ts";
import { violation } from "./checkers.ts";
import type { SimClock } from "./sim-clock.ts";

export interface AdversaryHost {
  clock: SimClock;
  engine: ClientEngine;
  /** The export instance serving now (replaced on restart). */
  server(): DstServer;
  diskBytes: number;
  blockSize: number;
  trace(line: string): void;
}

export class Adversary {
  readonly counters = { attempts: 0, refused: 0, garbageFrames: 0 };
  private readonly prng: Prng;
  private stopped = false;

  constructor(
    private readonly host: AdversaryHost,
    seed: number,
  ) {
    this.prng = new Prng(seed ^ 0x5eed_bad);
  }

  /** Attack every 0.2–3 s of simulated time until stopped. */
  start(): void {
    const next = () => {
      if (this.stopped) return;
      this.attempt();
      this.host.clock.after(200 + this.prng.int(2800), next);
    };
    this.host.clock.after(200 + this.prng.int(2800), next);
  }

  stop(): void {
    this.stopped = true;
  }

  private attempt(): void {
    const sessionId = this.host.engine.welcome?.sessionId;
    const server = this.host.server();
    // A sniffed id of a session the export holds (after an export restart it knows none: a
    // HELLO naming an unknown id starts a new session, which any rw client may have).
    if (sessionId == null || server.sessions.find(sessionId) === undefined) return;
    const prng = this.prng;
    this.counters.attempts++;
    const n = this.counters.attempts;
    const decoder = new FrameDecoder(PAYLOAD_MAX_DEFAULT + 64);
    let answered = false;
    let closed = false;
    const sink: Sink = {
      write: (bytes, release) => {
        const problem = decoder.push(bytes, (header, payload) => {
          if (answered) {
            // Anything after the refusal means the export served the connection.
            violation("security", `adversary attempt ${n}: the export sent ${header.opcode} after refusing the handshake`);
          }
          answered = true;
          const welcome = decodeWelcome(header, payload);
          if (typeof welcome === "string") violation("security", `adversary attempt ${n}: bad answer: ${welcome}`);
          else if (welcome.ok) violation("security", `adversary attempt ${n}: resumed or got a session naming the victim's id`);
          else if (welcome.status !== Errno.ESTALE) violation("security", `adversary attempt ${n}: refused with ${welcome.status}, not ESTALE: ${welcome.message}`);
          else this.counters.refused++;
        });
        if (problem !== null) violation("security", `adversary attempt ${n}: undecodable answer: ${problem}`);
        release?.();
      },
      queuedBytes: 0,
      end: () => {
        closed = true;
      },
      destroy: () => {
        closed = true;
      },
      pause() {},
      resume() {},
    };
    const handler = server.accept(sink, { transport: "tcp", address: "127.0.0.1", port: 60000 + (n % 5000) });
    const hello = encodeHello({
      exportName: "disk",
      version: 1,
      clientName: "adversary",
      maxPayload: PAYLOAD_MAX_DEFAULT,
      features: Feature.FLUSH | Feature.FUA | Feature.TRIM | Feature.WRITE_ZEROES | Feature.SESSIONS,
      sessionId: new Uint8Array(sessionId),
      txidFloor: prng.chance(0.5) ? 1 : prng.int(1 << 20),
      ...(prng.chance(0.5) ? { resumeToken: prng.bytes(32) } : {}),
      ...(prng.chance(0.5) ? { connectionSeq: 1 + prng.int(1 << 20) } : {}),
    });
    // Garbage WRITEs under the victim's next txids, in the same send as the HELLO.
    const next = (this.host.engine as unknown as { nextTxid: number }).nextTxid;
    const blocks = Math.max(1, Math.floor(this.host.diskBytes / this.host.blockSize));
    const frames: Uint8Array[] = [hello];
    for (let i = 0; i < 1 + prng.int(4); i++) {
      const data = prng.bytes(this.host.blockSize);
      const block = prng.int(blocks);
      frames.push(encodeFrame({ opcode: Op.WRITE, txid: next + i, offset: block * this.host.blockSize, length: data.length }, data));
      this.counters.garbageFrames++;
    }
    const bytes = new Uint8Array(frames.reduce((s, f) => s + f.length, 0));
    let at = 0;
    for (const f of frames) {
      bytes.set(f, at);
      at += f.length;
    }
    this.host.trace(`adversary: attempt ${n} names the victim's session, ${frames.length - 1} garbage WRITEs from txid ${next}`);
    this.host.clock.after(0, () => {
      handler.onData(bytes);
      this.host.clock.after(50, () => {
        if (!answered) violation("security", `adversary attempt ${n}: no answer to the handshake`);
        if (!closed) violation("security", `adversary attempt ${n}: the export kept a refused connection open`);
        handler.onClose(null);
      });
    });
  }
}

/**
 * @module nbd/connection — one NBD connection as a ConnectionHandler: the fixed
 * newstyle handshake (nbd/handshake.ts), or none at all in kernel mode (the Linux
 * client speaks only the transmission phase and accepts only simple replies,
 * drivers/block/nbd.c), then the transmission phase (nbd/transmission.ts) against an StoragePort.
 *
 * The same code serves `dstd export --nbd-listen` (acceptNbd, a local backend through
 * storage/local/port.ts) and `dstd attach` (kernel mode, or --nbd-listen, in front of the
 * client engine).
 *
 * Behind a listener the connection runs under transport/guard.ts: it reports `admitted()`
 * when the transmission phase starts (until then the handshake deadline runs and the
 * connection counts as unauthenticated), logs refusals and failures before that point through
 * the guard's per-source rate limit, and reports the bytes of an unfinished request for the
 * frame deadline. During the handshake it reads no further option while replies are unsent
 * (issue 9 item 7): the sink is paused until it drains.
 *
 * Must not: throw out of a ConnectionHandler method, or let one connection's bad input
 * disturb another: malformed input closes this connection only, with a logged reason.
 */
import { AssertionError } from "../lib/assert.ts";
import { errorMessage } from "../lib/errors.ts";
import type { Access } from "../lib/acl.ts";
import { quotePeer } from "../lib/peer-text.ts";
import type { GuardHooks, GuardedHandler } from "../transport/guard.ts";
import { describePeer, type Peer, type Sink } from "../transport/types.ts";
import type { Budget } from "../export/budget.ts";
import type { StoragePort } from "../storage/port.ts";
import { NbdHandshake, transmissionFlags, type NbdServerOptions, type Transmission } from "./handshake.ts";
import { DEFAULT_LIMITS, NbdTransmission, type NbdConnectionLimits } from "./transmission.ts";

export type { NbdLog, NbdResolution, NbdServerOptions } from "./handshake.ts";
export type { NbdConnectionLimits } from "./transmission.ts";

export interface NbdConnectionOptions extends NbdServerOptions {
  mode: "newstyle" | "kernel";
  /** Kernel mode: the export to resolve (there is no handshake to name one). Default "". */
  exportName?: string;
  /** Memory bounds; the defaults suit production, tests shrink them. */
  limits?: Partial<NbdConnectionLimits>;
  /** The memory budget shared with the node's other connections (export/budget.ts; docs/security.md "Resource limits"). */
  memory?: Budget;
  /**
   * Where replies of completions that came later are sent from (default queueMicrotask): the
   * simulator passes its clock, whose events a microtask would run outside of (docs/simulation.md).
   */
  defer?: (work: () => void) => void;
}

/**
 * Factory for listeners: every accepted connection does the newstyle handshake. Under a
 * ConnectionGuard (transport/guard.ts) the hooks arrive as the third argument.
 */
export function acceptNbd(
  options: Omit<NbdConnectionOptions, "mode">,
): (sink: Sink, peer: Peer, hooks?: GuardHooks) => NbdConnection {
  return (sink, peer, hooks) => new NbdConnection(sink, peer, { ...options, mode: "newstyle" }, hooks ?? null);
}

const NO_BYTES = new Uint8Array(0);

export class NbdConnection implements GuardedHandler {
  private handshake: NbdHandshake | null = null;
  private transmission: NbdTransmission | null = null;
  private closed = false;
  /** Reading paused by the handshake: option replies are still unsent. */
  private handshakePaused = false;

  constructor(
    private readonly sink: Sink,
    private readonly peer: Peer,
    private readonly options: NbdConnectionOptions,
    private readonly hooks: GuardHooks | null = null,
  ) {
    try {
      if (options.mode === "kernel") this.startKernel();
      else {
        this.handshake = new NbdHandshake(peer, options, {
          send: (bytes) => sink.write(bytes),
          congested: () => sink.queuedBytes > 0,
          note: (line) => this.note(line),
        });
        this.handshake.start();
      }
    } catch (error) {
      this.crash(error);
    }
  }

  /**
   * A configuration reload changed who may use what: `access` is what this peer's export now
   * grants it (null: nothing). Closes or downgrades the connection; returns what it did.
   */
  recheck(access: (exportName: string, peer: Peer) => Access | null): string | null {
    const tx = this.transmission;
    if (this.closed || tx === null) return null;
    const now = access(tx.exportName, this.peer);
    const who = `NBD ${describePeer(this.peer)}`;
    if (now === null) return this.closeBecause(`no longer allowed to use export ${quotePeer(tx.exportName)}`, "configuration reload");
    if (now === "ro" && tx.writable) {
      tx.setWritable(false);
      this.options.log?.warn(`${who}: now read-only on export ${quotePeer(tx.exportName)} (configuration reload); writes are refused`);
      return `${who} downgraded to read-only on export ${quotePeer(tx.exportName)}`;
    }
    return null;
  }

  /**
   * Export `name`'s port or read-only flag changed under this connection (a replica's role
   * change: daemon/nbd-front.ts rebind). On another port the connection is closed — NBD has no
   * way to tell a client its export changed, and the port it holds may be a closed primary or a
   * secondary's bare disk — so the client reconnects and learns the new flags in the handshake.
   * On the same port, writing follows `access` (what the export grants this peer now, read-only
   * folded in): refused while read-only, allowed again once writable (a demote that failed).
   */
  rebound(name: string, port: StoragePort, access: (peer: Peer) => Access | null): string | null {
    const tx = this.transmission;
    if (this.closed || tx === null || tx.exportName !== name) return null;
    const who = `NBD ${describePeer(this.peer)}`;
    if (tx.port !== port) return this.closeBecause(`export ${quotePeer(name)} changed role`, "replication; the client reconnects to what it serves now");
    if (!tx.setWritable(access(this.peer) === "rw")) return null;
    const now = tx.writable ? "writable again" : "read-only now";
    this.options.log?.warn(`${who}: export ${quotePeer(name)} is ${now} (replica role change)${tx.writable ? "" : "; writes are refused"}`);
    return `${who} ${now} on export ${quotePeer(name)}`;
  }

  /** Closes a connection in transmission over `why` (logged with `context`); returns what it did. */
  private closeBecause(why: string, context: string): string {
    const who = `NBD ${describePeer(this.peer)}`;
    this.options.log?.warn(`${who}: closing: ${why} (${context})`);
    this.closed = true;
    this.transmission?.close();
    this.sink.end();
    return `closed ${who}: ${why}`;
  }

  /** The connection is gone (for registries of live connections). */
  get isClosed(): boolean {
    return this.closed;
  }

  onData(chunk: Uint8Array): void {
    if (this.closed) return;
    try {
      if (this.transmission !== null) this.transmission.push(chunk);
      else this.feedHandshake(chunk);
    } catch (error) {
      this.crash(error);
    }
  }

  onDrain(): void {
    if (this.closed) return;
    try {
      if (this.handshake !== null) {
        // Replies are out: read on, starting with the options already received.
        if (this.handshakePaused) {
          this.handshakePaused = false;
          this.sink.resume();
        }
        this.feedHandshake(NO_BYTES);
      } else this.transmission?.drained();
    } catch (error) {
      this.crash(error);
    }
  }

  onClose(reason: string | null): void {
    if (this.closed) return;
    this.closed = true;
    this.transmission?.close();
    if (reason !== null) this.note(`NBD ${describePeer(this.peer)} closed: ${reason}`);
  }

  /** Bytes of an unfinished request (transport/guard.ts frame deadline); the handshake has its own deadline. */
  partialBytes(): number {
    return this.transmission?.partialBytes() ?? 0;
  }

  /**
   * A line about this peer: before transmission through the guard's per-source rate limit
   * (anyone can cause it), afterwards (an admitted client) straight to the log.
   */
  private note(line: string, level: "info" | "warn" = "info"): void {
    if (this.transmission === null && this.hooks !== null) this.hooks.refused(line);
    else this.options.log?.[level](line);
  }

  private feedHandshake(chunk: Uint8Array): void {
    const step = this.handshake!.feed(chunk);
    if (step.kind === "continue") {
      // Stop reading while replies are unsent; onDrain resumes and feeds what is buffered.
      if (this.sink.queuedBytes > 0 && !this.handshakePaused) {
        this.handshakePaused = true;
        this.sink.pause();
      }
      return;
    }
    if (step.kind === "close") {
      if (!step.graceful) return this.fail(`handshake: ${step.reason}`);
      this.closed = true;
      this.sink.end();
      return;
    }
    this.handshake = null;
    this.enterTransmission(step.transmission);
    if (step.remainder.length > 0) this.transmission?.push(step.remainder);
  }

  private startKernel(): void {
    const name = this.options.exportName ?? "";
    const resolved = this.options.resolve(name, this.peer);
    if ("refuse" in resolved) return this.fail(`kernel export ${quotePeer(name)} refused: ${resolved.detail ?? resolved.refuse}`);
    const { target, access } = resolved;
    // The kernel negotiates nothing: no structured replies, no meta contexts (drivers/block/nbd.c).
    this.enterTransmission({ name: resolved.name ?? name, target, access, structured: false, blockStatus: false, flags: transmissionFlags(target, access, false) });
  }

  private enterTransmission(tx: Transmission): void {
    if (this.handshakePaused) {
      this.handshakePaused = false;
      this.sink.resume();
    }
    const bounds = { ...DEFAULT_LIMITS, ...this.options.limits };
    this.transmission = new NbdTransmission(this.sink, tx, bounds, {
      fail: (reason) => this.fail(reason),
      finished: () => {
        this.closed = true;
        this.sink.end();
      },
      warn: (message) => this.options.log?.warn(`NBD ${describePeer(this.peer)}: ${message}`),
      crash: (error) => this.crash(error),
      ...(this.options.defer !== undefined ? { defer: this.options.defer } : {}),
    }, this.options.memory ?? null);
    this.hooks?.admitted();
    const mode = this.options.mode === "kernel" ? " (kernel)" : tx.structured ? " (structured replies)" : "";
    this.options.log?.info(`NBD ${describePeer(this.peer)}: serving ${quotePeer(tx.name)} ${this.transmission.writable ? "rw" : "ro"}${mode}`);
  }

  /** The peer broke the protocol: log why and drop this connection only (hard disconnect). */
  private fail(reason: string): void {
    if (this.closed) return;
    this.closed = true;
    this.transmission?.close();
    this.note(`NBD ${describePeer(this.peer)}: ${reason}; closing the connection`, "warn");
    this.sink.destroy();
  }

  /** An unexpected exception is a dstd bug: assertions crash (lib/assert.ts); others drop the connection. */
  private crash(error: unknown): void {
    if (error instanceof AssertionError) throw error;
    this.fail(`internal error: ${errorMessage(error)}`);
  }
}

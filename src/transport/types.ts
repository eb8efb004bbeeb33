/**
 * @module transport/types — the narrow boundary between protocol code and sockets.
 * Protocol handlers (DST export connection, NBD connection, client engine driver) see only
 * these interfaces, so the same code runs over Bun TCP/Unix sockets, a socketpair end
 * handed to the kernel, or the deterministic simulator's network.
 */

/** Who is on the other end of an accepted connection. */
export interface Peer {
  /** "tcp" for IPv4/IPv6, "unix" for Unix-domain sockets (no address). */
  transport: "tcp" | "unix";
  /** Remote IP address ("127.0.0.1", "::1"; IPv4-mapped IPv6 is normalised to IPv4); the socket path for unix. */
  address: string;
  /** Remote port (0 for unix). */
  port: number;
}

/** Printable form for logs: "127.0.0.1:5123", "[::1]:5123", "unix:/run/dstd.sock". */
export function describePeer(peer: Peer): string {
  if (peer.transport === "unix") return `unix:${peer.address}`;
  return peer.address.includes(":") ? `[${peer.address}]:${peer.port}` : `${peer.address}:${peer.port}`;
}

/**
 * Outgoing side of a connection. `write` never blocks and never drops: bytes the kernel does
 * not take at once are queued and flushed on writability. Callers that produce bulk data
 * watch `queuedBytes` and stop reading from their source while it is above their bound
 * (backpressure instead of growth), resuming in `ConnectionHandler.onDrain`.
 */
export interface Sink {
  /**
   * Queue `bytes` for sending; the sink owns them from now on. `release`, when given, is
   * called once the sink no longer references them (sent to the kernel, or discarded by
   * destroy), so the writer may recycle the buffer into a pool; sinks that cannot tell never
   * call it and the buffer is simply left to the garbage collector.
   */
  write(bytes: Uint8Array, release?: () => void): void;
  /** Bytes accepted by write() but not yet handed to the kernel. */
  readonly queuedBytes: number;
  /** Flush what is queued, then close. */
  end(): void;
  /** Close now, discarding anything queued. */
  destroy(): void;
  /** Stop / resume delivering onData (flow control of the receive side). */
  pause(): void;
  resume(): void;
}

/** Incoming side: what a protocol implements for one connection. */
export interface ConnectionHandler {
  onData(chunk: Uint8Array): void;
  /** The sink's queue has emptied. */
  onDrain(): void;
  /** The connection is gone (peer closed, reset, or we closed it). Called exactly once. */
  onClose(reason: string | null): void;
  /**
   * Optional: a buffer the next received bytes may be read straight into, without a copy
   * (null: no such place now). Asked only by transports that read into a given buffer
   * (transport/direct-receive.ts), right before each read; the count that landed there is
   * reported with onDirect() before anything else runs, and never through onData().
   */
  receiveTarget?(): Uint8Array | null;
  onDirect?(count: number): void;
}

/** Factory a listener calls for each accepted connection. */
export type AcceptHandler = (sink: Sink, peer: Peer) => ConnectionHandler;

/**
 * @module transport/tcp — Bun TCP and Unix-domain sockets behind the Sink/ConnectionHandler
 * boundary. The only users of Bun.listen / Bun.connect for network traffic.
 * Outgoing bytes go through QueuedSink (transport/queued-sink.ts), shared with adopted fds.
 */
import type { Socket, TCPSocketListener, UnixSocketListener } from "bun";
import { existsSync, lstatSync, unlinkSync } from "node:fs";
import { isIP } from "node:net";
import { dirname } from "node:path";
import type { ListenAddress } from "../lib/address.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { QueuedSink } from "./queued-sink.ts";
import { noteReceived } from "./receive-garbage.ts";
import type { AcceptHandler, ConnectionHandler, Peer, Sink } from "./types.ts";

interface SocketState {
  sink: QueuedSink;
  handler: ConnectionHandler | null;
  closed: boolean;
  /** Why the socket closed, kept for a close that happened before the handler existed. */
  reason: string | null;
}

function normaliseAddress(address: string): string {
  return address.startsWith("::ffff:") && address.includes(".") ? address.slice(7) : address;
}

function socketHandlers(makeHandler: (sink: Sink, socket: Socket<SocketState>) => ConnectionHandler) {
  const finish = (socket: Socket<SocketState>, reason: string | null) => {
    const state = socket.data;
    if (!state || state.closed) return;
    state.closed = true;
    state.reason = reason;
    state.handler?.onClose(reason);
    state.sink.discard();
  };
  return {
    binaryType: "uint8array" as const,
    open(socket: Socket<SocketState>) {
      const sink = new QueuedSink(socket);
      const state: SocketState = { sink, handler: null, closed: false, reason: null };
      socket.data = state;
      const handler = makeHandler(sink, socket);
      state.handler = handler;
      // Bun runs close() synchronously when the handler ends or destroys the socket while it
      // is being made (a refusal at accept): deliver that close now that the handler exists.
      if (state.closed) handler.onClose(state.reason);
    },
    data(socket: Socket<SocketState>, chunk: Uint8Array) {
      noteReceived(chunk.length);
      const state = socket.data;
      if (state && !state.closed) state.handler?.onData(chunk);
    },
    drain(socket: Socket<SocketState>) {
      const state = socket.data;
      if (!state || state.closed) return;
      if (state.sink.flush()) state.handler?.onDrain();
    },
    close(socket: Socket<SocketState>, error?: Error) {
      finish(socket, error ? errorMessage(error) : null);
    },
    error(socket: Socket<SocketState>, error: Error) {
      finish(socket, errorMessage(error));
      // Bun calls error() also when a handler threw: the socket is still open then, and nobody
      // holds it any more (a client would reconnect and leak one socket per cycle).
      socket.terminate();
    },
    end(socket: Socket<SocketState>) {
      socket.end();
    },
  };
}

export interface Listener {
  /** The addresses actually bound (port 0 resolved to the real port). */
  bound: ListenAddress[];
  close(): Promise<void>;
}

/** Remove a stale Unix socket file left by a dead process; refuse if something else is there. */
async function clearStaleUnixSocket(path: string): Promise<void> {
  if (!existsSync(path)) return;
  if (!lstatSync(path).isSocket()) {
    throw new DstdError("E_LISTEN", `cannot listen on unix:${path}: a file that is not a socket is in the way`);
  }
  const alive = await Bun.connect({ unix: path, socket: { data() {}, open(s) { s.end(); } } }).then(
    () => true,
    () => false,
  );
  if (alive) throw new DstdError("E_LISTEN", `cannot listen on unix:${path}: another process is serving it`);
  unlinkSync(path);
}

/**
 * TCP addresses this process listens on now: a bind refused with EADDRINUSE on one of their
 * ports is this process's own doing (one address under two names, e.g. localhost and
 * 127.0.0.1, or every address and one of them), which the message then says instead of
 * blaming another process (docs/config.md, listen addresses).
 */
const OWN_TCP = new Set<ListenAddress>();

export async function listen(addresses: ListenAddress[], accept: AcceptHandler): Promise<Listener> {
  const listeners: Array<TCPSocketListener<SocketState> | UnixSocketListener<SocketState>> = [];
  const bound: ListenAddress[] = [];
  const own: ListenAddress[] = [];
  const unixPaths: string[] = [];
  let current: ListenAddress | null = null;
  try {
    for (const address of addresses) {
      current = address;
      if (address.transport === "unix") {
        await clearStaleUnixSocket(address.path);
        const socket = socketHandlers((sink) => accept(sink, { transport: "unix", address: address.path, port: 0 }));
        listeners.push(Bun.listen<SocketState>({ unix: address.path, socket }));
        unixPaths.push(address.path);
        bound.push(address);
      } else {
        const socket = socketHandlers((sink, s) => {
          const peer: Peer = { transport: "tcp", address: normaliseAddress(s.remoteAddress), port: s.remotePort };
          return accept(sink, peer);
        });
        const listener = Bun.listen<SocketState>({ hostname: address.host, port: address.port, socket });
        listeners.push(listener);
        const at: ListenAddress = { transport: "tcp", host: address.host, port: listener.port };
        bound.push(at);
        own.push(at);
        OWN_TCP.add(at);
      }
    }
  } catch (error) {
    for (const listener of listeners) listener.stop(true);
    for (const at of own) OWN_TCP.delete(at);
    if (error instanceof DstdError) throw error;
    const where = current === null ? addresses.map(describeListenAddress).join(", ") : describeListenAddress(current);
    throw new DstdError("E_LISTEN", `cannot listen on ${where}: ${listenFailure(error, current)}`, { cause: error });
  }
  return {
    bound,
    async close() {
      for (const listener of listeners) listener.stop(true);
      for (const at of own) OWN_TCP.delete(at);
      for (const path of unixPaths) if (existsSync(path)) unlinkSync(path);
    },
  };
}

/**
 * Bun's listen error says only "Failed to listen at HOST"; the reason is in its `code`.
 * Name it, and what to do about it (bind(2) and unix(7) list these errnos).
 */
function listenFailure(error: unknown, address: ListenAddress | null): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== "string") return errorMessage(error);
  const unix = address?.transport === "unix";
  const dir = unix ? dirname(address.path) : "";
  switch (code) {
    case "EADDRINUSE": {
      if (unix) return "address already in use (EADDRINUSE): remove the stale socket file or choose another path";
      const mine = address === null ? null : ownListenerOverlapping(address);
      if (mine !== null) {
        return `address already in use (EADDRINUSE): this process listens on ${describeListenAddress(mine)}, which takes this address too (one address under two names, or every address and one of them); name it once, the same way everywhere`;
      }
      return "address already in use (EADDRINUSE): another process (another dstd?) listens on this port; stop it or choose another port";
    }
    case "EADDRNOTAVAIL":
      return "address not available (EADDRNOTAVAIL): this machine has no such address; use one of its addresses, or 0.0.0.0 (all IPv4) or [::] (all IPv6)";
    case "EACCES":
    case "EPERM":
      return unix
        ? `permission denied (${code}): this user cannot create a socket in ${dir}; choose a directory it may write to`
        : `permission denied (${code}): ports below 1024 need root or CAP_NET_BIND_SERVICE; choose a port of 1024 or more`;
    case "ENOENT":
      return unix ? `no such directory (ENOENT): ${dir} does not exist; create it first` : `no such file or directory (ENOENT)`;
    case "ENOTDIR":
      return `not a directory (ENOTDIR): a part of ${dir} is a file`;
    case "ENAMETOOLONG":
      return "name too long (ENAMETOOLONG): Unix socket paths are limited to 107 bytes; choose a shorter path";
    default:
      return `${errorMessage(error)} (${code})`;
  }
}

/** A TCP address this process listens on that `address` would collide with (null: none; Unix sockets never). */
export function ownListenerOverlapping(address: ListenAddress): ListenAddress | null {
  if (address.transport !== "tcp") return null;
  for (const at of OWN_TCP) if (at.transport === "tcp" && at.port === address.port && mayOverlap(at.host, address.host)) return at;
  return null;
}

/** Two hosts one port can collide on: the same, every address and another, or a name (it may resolve to the other). */
function mayOverlap(a: string, b: string): boolean {
  const bare = (h: string) => (h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h).toLowerCase();
  const [x, y] = [bare(a), bare(b)];
  const every = (h: string) => h === "" || h === "0.0.0.0" || h === "::";
  return x === y || every(x) || every(y) || isIP(x) === 0 || isIP(y) === 0;
}

export function describeListenAddress(address: ListenAddress): string {
  if (address.transport === "unix") return `unix:${address.path}`;
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/**
 * Open an outgoing connection. Resolves with the Sink once connected; rejects with a
 * DstdError naming the address on refusal / no route / DNS failure.
 */
export async function connect(
  address: ListenAddress,
  makeHandler: (sink: Sink) => ConnectionHandler,
): Promise<Sink> {
  const socket = socketHandlers((sink) => makeHandler(sink));
  try {
    const connected =
      address.transport === "unix"
        ? await Bun.connect<SocketState>({ unix: address.path, socket })
        : await Bun.connect<SocketState>({ hostname: address.host, port: address.port, socket });
    return connected.data.sink;
  } catch (error) {
    throw new DstdError("E_CONNECT", `cannot connect to ${describeListenAddress(address)}: ${errorMessage(error)}`, {
      cause: error,
    });
  }
}

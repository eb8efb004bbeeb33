/**
 * @module nbd/handshake — the server side of NBD fixed newstyle option haggling
 * (proto.md "Fixed newstyle negotiation", "Option types"): which options are answered how,
 * which export a client gets, and the transmission flags it is told. Feeds on bytes, answers
 * through `send`, and ends in one of: transmission (with the chosen target), a graceful close
 * (OPT_ABORT) or a hard disconnect with a logged reason.
 *
 * Backpressure (issue 9 item 7): while `congested()` says replies are still unsent, no
 * further option is answered; the rest stays in the reader until the connection calls
 * `feed` again (with no bytes) once its sink has drained, so unread replies never pile up.
 * Peer strings (export names, option data) reach the log only through lib/peer-text.ts.
 *
 * Must not: serve requests (nbd/connection.ts), know about sockets, or throw on input.
 */
import type { Access } from "../lib/acl.ts";
import { quotePeer } from "../lib/peer-text.ts";
import { describePeer, type Peer } from "../transport/types.ts";
import {
  BASE_ALLOCATION,
  ClientFlag,
  Info,
  KNOWN_CLIENT_FLAGS,
  Opt,
  Rep,
  TxFlag,
  optionName,
} from "../wire/nbd/constants.ts";
import {
  HandshakeReader,
  decodeString,
  replyName,
  encodeExportNameReply,
  encodeOptionError,
  encodeOptionReply,
  encodeServerGreeting,
  infoBlockSize,
  infoDescription,
  infoExport,
  infoName,
  parseInfoRequest,
  parseMetaContextRequest,
  repMetaContext,
  repServer,
} from "../wire/nbd/handshake.ts";
import type { StoragePort } from "../storage/port.ts";

export type NbdResolution =
  /**
   * `description`: NBD_INFO_DESCRIPTION (default: the port's own description). `name`: the
   * export's canonical name when the client asked by another (the default export ""): the
   * connection is known by it (NBD_INFO_NAME, a reload's re-check), proto.md "NBD_INFO_NAME".
   */
  | { target: StoragePort; access: Access; description?: string; name?: string }
  /**
   * `refuse`: what the client is told; `detail`: what the log says instead (the real reason,
   * when the client must not learn it: daemon/nbd-front.ts answers an unknown name and a
   * forbidden one alike). `code`: "unknown" → NBD_REP_ERR_UNKNOWN (default), "policy" →
   * NBD_REP_ERR_POLICY.
   */
  | { refuse: string; detail?: string; code?: "unknown" | "policy" };

export interface NbdLog {
  info(message: string): void;
  warn(message: string): void;
}

/** How the handshake talks to its connection. */
export interface HandshakeIo {
  send(bytes: Uint8Array): void;
  /** True while earlier replies are unsent: answer no further option (default: never). */
  congested?(): boolean;
  /** A refusal or client error worth a log line (rate-limited by the connection's guard). */
  note(line: string): void;
}

export interface NbdServerOptions {
  /** Look up an export for this peer (export lookup + allow list). Called for INFO, GO, EXPORT_NAME. */
  resolve(name: string, peer: Peer): NbdResolution;
  /** Exports this peer may see in OPT_LIST. */
  list(peer: Peer): Array<{ name: string; description: string }>;
  log?: NbdLog;
}

/** Id of base:allocation in SET_META_CONTEXT replies and BLOCK_STATUS chunks. */
export const BASE_ALLOCATION_ID = 1;
/** More options than this on one connection is treated as a denial of service. */
const MAX_OPTIONS = 1024;

export interface Transmission {
  name: string;
  target: StoragePort;
  access: Access;
  structured: boolean;
  /** base:allocation selected for this export: BLOCK_STATUS allowed. */
  blockStatus: boolean;
  flags: number;
}

export type HandshakeStep =
  | { kind: "continue" }
  | { kind: "transmission"; transmission: Transmission; remainder: Uint8Array }
  | { kind: "close"; graceful: boolean; reason: string };

/**
 * Transmission flags for a target as negotiated (proto.md "Transmission flags"). Write-side
 * features are only offered when the client may write; SEND_DF only with structured replies;
 * CAN_MULTI_CONN only when the target really shares its cache across connections.
 */
export function transmissionFlags(target: StoragePort, access: Access, structured: boolean): number {
  const writable = access === "rw" && !target.readOnly;
  let flags = TxFlag.HAS_FLAGS | TxFlag.SEND_CACHE;
  if (!writable) flags |= TxFlag.READ_ONLY;
  if (target.canFlush) flags |= TxFlag.SEND_FLUSH;
  if (writable) {
    flags |= TxFlag.SEND_FUA;
    if (target.canTrim) flags |= TxFlag.SEND_TRIM;
    if (target.canZero) flags |= TxFlag.SEND_WRITE_ZEROES;
    if (target.canZero && target.canFastZero) flags |= TxFlag.SEND_FAST_ZERO;
  }
  if (structured) flags |= TxFlag.SEND_DF;
  if (target.canMultiConn) flags |= TxFlag.CAN_MULTI_CONN;
  return flags;
}

export class NbdHandshake {
  private readonly reader = new HandshakeReader();
  private noZeroes = false;
  private structured = false;
  private metaExport: string | null = null;
  private options = 0;

  private readonly send: (bytes: Uint8Array) => void;

  constructor(
    private readonly peer: Peer,
    private readonly server: NbdServerOptions,
    private readonly io: HandshakeIo,
  ) {
    this.send = (bytes) => io.send(bytes);
  }

  /** Send the greeting (proto.md "Newstyle negotiation"): we offer FIXED_NEWSTYLE and NO_ZEROES. */
  start(): void {
    this.send(encodeServerGreeting());
  }

  feed(chunk: Uint8Array): HandshakeStep {
    this.reader.push(chunk);
    for (;;) {
      if (this.io.congested?.() === true) return { kind: "continue" };
      const event = this.reader.next();
      if (event === null) return { kind: "continue" };
      switch (event.kind) {
        case "error":
          return close(event.reason);
        case "client-flags": {
          // proto.md "Client flags": "the server MUST drop the TCP connection if the client
          // sets an unknown flag". A client without C_FIXED_NEWSTYLE is still served (MAY).
          const unknown = event.flags & ~KNOWN_CLIENT_FLAGS;
          if (unknown !== 0) return close(`client flags 0x${event.flags.toString(16)} include unknown bits`);
          this.noZeroes = (event.flags & ClientFlag.NO_ZEROES) !== 0;
          break;
        }
        case "oversized":
          if (++this.options > MAX_OPTIONS) return close(`more than ${MAX_OPTIONS} options`);
          if (event.option === Opt.EXPORT_NAME) return close(`EXPORT_NAME of ${event.length} bytes`);
          this.error(event.option, known(event.option) ? Rep.ERR_TOO_BIG : Rep.ERR_UNSUP, "option data too large");
          break;
        case "option": {
          if (++this.options > MAX_OPTIONS) return close(`more than ${MAX_OPTIONS} options`);
          const step = this.option(event.option, event.data);
          if (step !== null) return step;
        }
      }
    }
  }

  /** One option; null to keep haggling. */
  private option(option: number, data: Uint8Array): HandshakeStep | null {
    switch (option) {
      case Opt.EXPORT_NAME:
        return this.exportName(data);
      case Opt.ABORT:
        // proto.md NBD_OPT_ABORT: "The server MUST reply with NBD_REP_ACK" (data ignored).
        this.send(encodeOptionReply(option, Rep.ACK));
        return { kind: "close", graceful: true, reason: "client aborted the handshake" };
      case Opt.LIST:
        this.list(data);
        return null;
      case Opt.STARTTLS:
        this.error(option, Rep.ERR_UNSUP, "TLS is not offered on this listener; use dst:// for encryption");
        return null;
      case Opt.INFO:
      case Opt.GO:
        return this.infoOrGo(option, data);
      case Opt.STRUCTURED_REPLY:
        if (data.length !== 0) this.error(option, Rep.ERR_INVALID, "STRUCTURED_REPLY takes no data");
        else if (this.structured) this.error(option, Rep.ERR_INVALID, "structured replies already negotiated");
        else {
          this.structured = true;
          this.send(encodeOptionReply(option, Rep.ACK));
        }
        return null;
      case Opt.LIST_META_CONTEXT:
      case Opt.SET_META_CONTEXT:
        this.metaContext(option, data);
        return null;
      default:
        // proto.md "Baseline": unknown options get ERR_UNSUP and the next one still parses.
        this.error(option, Rep.ERR_UNSUP, `${optionName(option)} is not supported`);
        return null;
    }
  }

  /** OPT_EXPORT_NAME has no error reply: a refusal MUST terminate the session (proto.md). */
  private exportName(data: Uint8Array): HandshakeStep {
    const name = decodeName(data);
    if (name === null) return close("EXPORT_NAME carries an invalid export name");
    const resolved = this.server.resolve(name, this.peer);
    if ("refuse" in resolved) return close(`export ${quotePeer(name)} refused: ${resolved.detail ?? resolved.refuse}`);
    const transmission = this.transmission(resolved.name ?? name, resolved.target, resolved.access);
    this.send(encodeExportNameReply(resolved.target.size, transmission.flags, this.noZeroes));
    return { kind: "transmission", transmission, remainder: this.reader.remainder() };
  }

  private list(data: Uint8Array): void {
    if (data.length !== 0) return this.error(Opt.LIST, Rep.ERR_INVALID, "LIST takes no data");
    for (const entry of this.server.list(this.peer)) {
      this.send(encodeOptionReply(Opt.LIST, Rep.SERVER, repServer(entry.name, entry.description)));
    }
    this.send(encodeOptionReply(Opt.LIST, Rep.ACK));
  }

  private infoOrGo(option: number, data: Uint8Array): HandshakeStep | null {
    const request = parseInfoRequest(data);
    if (typeof request === "string") {
      this.error(option, Rep.ERR_INVALID, request);
      return null;
    }
    const resolved = this.server.resolve(request.name, this.peer);
    if ("refuse" in resolved) {
      this.error(option, resolved.code === "policy" ? Rep.ERR_POLICY : Rep.ERR_UNKNOWN, resolved.refuse, resolved.detail);
      return null;
    }
    const { target, access } = resolved;
    const name = resolved.name ?? request.name;
    const transmission = this.transmission(name, target, access);
    // NBD_INFO_EXPORT is mandatory; BLOCK_SIZE is always sent (clients ignore unrequested info,
    // and we never *require* it: nbd-client asks for nothing).
    this.info(option, infoExport(target.size, transmission.flags));
    if (request.requests.includes(Info.NAME)) this.info(option, infoName(name));
    if (request.requests.includes(Info.DESCRIPTION)) this.info(option, infoDescription(resolved.description ?? target.description));
    this.info(option, infoBlockSize(1, target.blockSize, Math.min(target.maxPayload, 0xffffffff)));
    this.send(encodeOptionReply(option, Rep.ACK));
    if (option === Opt.INFO) return null;
    return { kind: "transmission", transmission, remainder: this.reader.remainder() };
  }

  /**
   * LIST/SET_META_CONTEXT (proto.md "Metadata querying"): we know `base:allocation` only.
   * Both require structured replies first; SET replaces the selection even when it fails.
   */
  private metaContext(option: number, data: Uint8Array): void {
    const set = option === Opt.SET_META_CONTEXT;
    if (set) this.metaExport = null;
    if (!this.structured) return this.error(option, Rep.ERR_INVALID, "negotiate STRUCTURED_REPLY first");
    const request = parseMetaContextRequest(data);
    if (typeof request === "string") return this.error(option, Rep.ERR_INVALID, request);
    const resolved = this.server.resolve(request.name, this.peer);
    if ("refuse" in resolved) {
      return this.error(option, resolved.code === "policy" ? Rep.ERR_POLICY : Rep.ERR_UNKNOWN, resolved.refuse, resolved.detail);
    }
    let matches = resolved.target.canBlockStatus && request.queries.some((q) => q === BASE_ALLOCATION);
    // LIST: no queries means "everything", and "base:" is the namespace wildcard (proto.md
    // "The base: metadata namespace"); SET must ignore "base:".
    if (!set && resolved.target.canBlockStatus) {
      matches ||= request.queries.length === 0 || request.queries.includes("base:");
    }
    if (matches) {
      const id = set ? BASE_ALLOCATION_ID : 0;
      this.send(encodeOptionReply(option, Rep.META_CONTEXT, repMetaContext(id, BASE_ALLOCATION)));
      if (set) this.metaExport = resolved.name ?? request.name;
    }
    this.send(encodeOptionReply(option, Rep.ACK));
  }

  private transmission(name: string, target: StoragePort, access: Access): Transmission {
    return {
      name,
      target,
      access,
      structured: this.structured,
      // BLOCK_STATUS only for the export the final SET_META_CONTEXT named (proto.md).
      blockStatus: this.metaExport === name && target.canBlockStatus,
      flags: transmissionFlags(target, access, this.structured),
    };
  }

  private info(option: number, payload: Uint8Array): void {
    this.send(encodeOptionReply(option, Rep.INFO, payload));
  }

  /** `detail`: the log's version of `message` when the client must not see it. */
  private error(option: number, type: number, message: string, detail = message): void {
    // Unsupported options are routine (clients probe); refusals and client errors are worth a line.
    if (type !== Rep.ERR_UNSUP) this.io.note(`NBD ${describePeer(this.peer)}: ${optionName(option)} answered ${replyName(type)}: ${detail}`);
    this.send(encodeOptionError(option, type, message));
  }
}

function close(reason: string): HandshakeStep {
  return { kind: "close", graceful: false, reason };
}

function known(option: number): boolean {
  return Object.values(Opt).includes(option as never) && option !== Opt.PEEK_EXPORT && option !== Opt.EXTENDED_HEADERS;
}

function decodeName(data: Uint8Array): string | null {
  const name = decodeString(data, "export name");
  return name.ok ? name.value : null;
}

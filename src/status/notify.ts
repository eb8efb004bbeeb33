/**
 * @module status/notify — systemd's service notification protocol (sd_notify(3)), spoken by
 * `dstd up` when `$NOTIFY_SOCKET` is set: newline-separated KEY=VALUE assignments in one
 * datagram to a Unix datagram socket (a path, or '@name' in the abstract namespace).
 *
 * What dstd sends and when (docs/status.md "systemd"):
 * - READY=1 with STATUS= once every unit's first start settled: listeners bound, exports
 *   open, attachments attached (devices sized), or a failed first start logged and its
 *   restarts under way (the summary names the unit);
 * - STATUS=<one line> whenever the summary changes;
 * - WATCHDOG=1 every WATCHDOG_USEC/2, from an event-loop timer (a stuck loop stops it);
 * - RELOADING=1 + MONOTONIC_USEC= at a reload, READY=1 when it is applied;
 * - STOPPING=1 at shutdown; EXTEND_TIMEOUT_USEC= while a slow start or stop goes on.
 * The socket address and watchdog settings are read once and removed from the environment
 * (sd_notify's unset_environment), so no child inherits them.
 */
import { monotonicMicroseconds, sendUnixDatagram } from "../sys/libc.ts";
import { errorMessage } from "../lib/errors.ts";
import type { Log } from "../lib/log.ts";

/** Sends one datagram; false when it could not be delivered. */
export type NotifySend = (message: string) => boolean;

/** One STATUS= line: no newlines, bounded (journal and `systemctl status` show one line). */
export function statusLine(text: string): string {
  const flat = text.replace(/[\r\n]+/g, "; ").replace(/[\x00-\x1f\x7f]/g, " ");
  return flat.length > 400 ? `${flat.slice(0, 399)}…` : flat;
}

export interface NotifyEnvironment {
  socket: string | null;
  /** Watchdog period in µs when the watchdog is meant for this process, else null. */
  watchdogUsec: number | null;
}

/** Read (and, with `consume`, remove) NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. */
export function readNotifyEnvironment(env: Record<string, string | undefined> = process.env, pid = process.pid, consume = true): NotifyEnvironment {
  const socket = env.NOTIFY_SOCKET ?? null;
  const usec = Number(env.WATCHDOG_USEC ?? "");
  const forPid = env.WATCHDOG_PID === undefined || Number(env.WATCHDOG_PID) === pid;
  if (consume) {
    delete env.NOTIFY_SOCKET;
    delete env.WATCHDOG_USEC;
    delete env.WATCHDOG_PID;
  }
  return {
    socket: socket === "" ? null : socket,
    watchdogUsec: Number.isSafeInteger(usec) && usec > 0 && forPid ? usec : null,
  };
}

/** The datagram sender for a NOTIFY_SOCKET value; only paths and '@abstract' names. */
export function datagramSender(address: string): NotifySend {
  if (!address.startsWith("/") && !address.startsWith("@")) {
    throw new Error(`NOTIFY_SOCKET=${address}: only socket paths and @abstract names are supported`);
  }
  const encoder = new TextEncoder();
  return (message) => sendUnixDatagram(address, encoder.encode(message));
}

export class SystemdNotifier {
  private watchdog: ReturnType<typeof setInterval> | null = null;
  private lastStatus = "";
  /** Datagrams sent (tests and `dstd status`). */
  sent = 0;

  constructor(
    private readonly send: NotifySend | null,
    private readonly log: Log,
    private readonly watchdogUsec: number | null = null,
    private readonly monotonic: () => bigint = monotonicMicroseconds,
  ) {}

  /** From the environment; a notifier that does nothing when NOTIFY_SOCKET is absent. */
  static fromEnvironment(log: Log, env: Record<string, string | undefined> = process.env): SystemdNotifier {
    const found = readNotifyEnvironment(env);
    if (found.socket === null) return new SystemdNotifier(null, log);
    try {
      return new SystemdNotifier(datagramSender(found.socket), log, found.watchdogUsec);
    } catch (error) {
      log.warn(`systemd notification disabled: ${errorMessage(error)}`);
      return new SystemdNotifier(null, log);
    }
  }

  get enabled(): boolean {
    return this.send !== null;
  }

  /** READY=1 (+ STATUS=); starts the watchdog the first time. */
  ready(status: string): void {
    this.lastStatus = statusLine(status);
    this.notify(`READY=1\nSTATUS=${this.lastStatus}`);
    this.startWatchdog();
  }

  /** STATUS=, only when it changed. */
  status(text: string): void {
    const line = statusLine(text);
    if (line === this.lastStatus) return;
    this.lastStatus = line;
    this.notify(`STATUS=${line}`);
  }

  /** RELOADING=1 with the monotonic timestamp systemd (253+) uses to order it. */
  reloading(status = "reloading configuration"): void {
    this.lastStatus = statusLine(status);
    this.notify(`RELOADING=1\nMONOTONIC_USEC=${this.monotonic()}\nSTATUS=${this.lastStatus}`);
  }

  stopping(status = "stopping"): void {
    this.lastStatus = statusLine(status);
    this.stopWatchdog();
    this.notify(`STOPPING=1\nSTATUS=${this.lastStatus}`);
  }

  /** Ask for more time before the start/stop timeout (EXTEND_TIMEOUT_USEC=). */
  extendTimeout(ms: number): void {
    this.notify(`EXTEND_TIMEOUT_USEC=${Math.max(1, Math.ceil(ms)) * 1000}`);
  }

  stopWatchdog(): void {
    if (this.watchdog !== null) clearInterval(this.watchdog);
    this.watchdog = null;
  }

  private startWatchdog(): void {
    if (this.watchdog !== null || this.watchdogUsec === null || this.send === null) return;
    const periodMs = Math.max(1, Math.floor(this.watchdogUsec / 2000));
    this.notify("WATCHDOG=1");
    this.watchdog = setInterval(() => this.notify("WATCHDOG=1"), periodMs);
  }

  private notify(message: string): void {
    if (this.send === null) return;
    try {
      if (this.send(message)) this.sent++;
      else this.log.warn(`systemd notification not delivered (the manager's queue is full): ${message.split("\n")[0]}`);
    } catch (error) {
      this.log.warn(`systemd notification failed: ${errorMessage(error)}`);
    }
  }
}

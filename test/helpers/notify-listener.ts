/**
 * @module test/helpers/notify-listener — plays systemd's side of sd_notify: a real Unix
 * datagram socket (a path, or an '@abstract' name) bound through sys/libc.ts, drained
 * without blocking; tests wait for the datagrams they expect (never for a guessed time).
 */
import { bindUnixDatagram, closeFd, receiveNow } from "../../src/sys/libc.ts";
import { until } from "./wait.ts";

export interface NotifyListener {
  /** What to put in NOTIFY_SOCKET. */
  address: string;
  /** Every datagram received so far, in order. */
  readonly messages: string[];
  /** Wait until a datagram satisfies `match`; returns its index. */
  waitFor(match: (message: string) => boolean, what: string, limitMs?: number): Promise<number>;
  close(): void;
}

export function listenNotify(address: string): NotifyListener {
  const fd = bindUnixDatagram(address);
  const messages: string[] = [];
  const buffer = new Uint8Array(65536);
  const decoder = new TextDecoder();
  const drain = () => {
    for (;;) {
      const n = receiveNow(fd, buffer);
      if (n < 0) return;
      messages.push(decoder.decode(buffer.subarray(0, n)));
    }
  };
  let closed = false;
  // Drain all the time, as systemd does: a Unix datagram queue holds only a few messages
  // (net.unix.max_dgram_qlen, 10 by default) and the sender would get EAGAIN past that.
  const pump = setInterval(drain, 2);
  return {
    address,
    messages,
    async waitFor(match, what, limitMs = 10_000) {
      let index = -1;
      await until(() => {
        drain();
        index = messages.findIndex(match);
        return index >= 0;
      }, what, limitMs);
      return index;
    },
    close() {
      if (closed) return;
      closed = true;
      clearInterval(pump);
      drain();
      closeFd(fd);
    },
  };
}

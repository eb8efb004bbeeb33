/**
 * @module cli/progress — the progress line of `dstd copy` on stderr: a bar (or, when the size
 * is unknown, a byte count), the rate, and the state of the link to the export while it is
 * down ("link down: connection refused; reconnect attempt 3"), so a stalled copy says why.
 * On a terminal the line is redrawn in place; elsewhere (--progress into a file or a pipe)
 * each update is a line of its own, with no escape codes.
 */
import { formatSize } from "../lib/size.ts";

export class ProgressLine {
  private last = 0;
  private done = 0;
  private total = 0;
  private link = "";
  private attempt = 0;
  private finished = false;
  private everReady = false;
  private trailing: ReturnType<typeof setTimeout> | null = null;
  private readonly started = performance.now();

  constructor(
    private readonly enabled: boolean,
    private readonly terminal: boolean,
    private readonly write: (text: string) => void = (text) => process.stderr.write(text),
  ) {}

  /** Bytes done of total (total 0: unknown, a stream). */
  update(done: number, total: number): void {
    this.done = done;
    this.total = total;
    this.draw(false);
  }

  /**
   * The engine's link state after the first handshake: "idle" = lost (detail: why, and when
   * the next attempt is), "connecting" = an attempt started, "ready" = back.
   */
  linkChanged(state: string, detail: string): void {
    // The end of the copy closes the link on purpose; a handshake in progress is no news.
    if (state === "closed" || state === "handshaking" || this.finished) return;
    const reason = detail.replace(/; reconnecting in \d+ ms$/, "");
    if (state === "ready") {
      this.link = "";
      this.attempt = 0;
      this.everReady = true;
    } else if (state === "idle") {
      this.link = this.everReady ? `link down: ${reason}` : `waiting for the export: ${reason}`;
    } else if (state === "connecting") {
      this.attempt++;
      if (this.attempt === 1 && !this.everReady) return; // the first try is not news either
      const base = this.link.replace(/; (reconnect )?attempt \d+$/, "");
      this.link = `${base}; ${this.everReady ? "reconnect attempt" : "attempt"} ${this.attempt}`;
    } else this.link = `link ${state}: ${reason}`;
    this.draw(true);
  }

  /** End the line (before a summary or an error message is printed). */
  finish(): void {
    this.finished = true;
    if (this.trailing !== null) clearTimeout(this.trailing);
    this.trailing = null;
    if (!this.enabled || this.last === 0 || !this.terminal) return;
    this.write("\n");
    this.last = 0;
  }

  private draw(force: boolean): void {
    if (!this.enabled || this.finished) return;
    const now = performance.now();
    // Redrawn in place 5 times a second on a terminal; a line a second into a file or pipe.
    const every = this.terminal ? 200 : 1000;
    if (!force && now - this.last < every && (this.total === 0 || this.done < this.total)) {
      // Skipped: draw the latest numbers when the interval is over, even if no update comes.
      this.trailing ??= setTimeout(() => {
        this.trailing = null;
        this.draw(true);
      }, every - (now - this.last));
      return;
    }
    if (this.trailing !== null) clearTimeout(this.trailing);
    this.trailing = null;
    this.last = now;
    const rate = this.done / 1024 / 1024 / Math.max(0.001, (now - this.started) / 1000);
    let bar: string;
    if (this.total > 0) {
      const fraction = Math.min(1, this.done / this.total);
      const width = 30;
      const filled = Math.round(fraction * width);
      bar = `[${"#".repeat(filled)}${" ".repeat(width - filled)}] ${(fraction * 100).toFixed(0).padStart(3)}% ${formatSize(this.done)}`;
    } else bar = formatSize(this.done);
    const link = this.link === "" ? "" : `  ${this.link}`;
    const text = `${bar} ${rate.toFixed(0)} MiB/s${link}`;
    // \r and erase-to-end-of-line: a shorter line must not leave the end of a longer one.
    this.write(this.terminal ? `\r${text}\u001B[K` : `${text}\n`);
  }
}

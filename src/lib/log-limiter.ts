/**
 * @module lib/log-limiter — rate limit for log lines a peer can cause (refusals, handshake
 * failures, connection-limit hits): per source and kind of event, the first line of a window is
 * logged in full;
 * the rest of the window is counted and reported as one summary line when the window ends
 * (docs/security.md "Resource limits"). A client that is refused 10,000 times a second
 * therefore costs two log lines a minute.
 *
 * Bounded: at most `maxSources` (source, kind) pairs are tracked at once; lines from further
 * ones share one "other sources" entry. Kinds are a small fixed set chosen by the caller. Pure: time comes in as `now` (milliseconds, any monotonic
 * origin), so the owner decides when windows end (transport/guard.ts calls flush on its
 * sweep) and tests drive it with a fake clock.
 */

export interface LogLimiterOptions {
  /** Length of a window in ms (default 60 s). */
  windowMs?: number;
  /** Sources tracked at once (default 256). */
  maxSources?: number;
}

interface Window {
  source: string;
  start: number;
  suppressed: number;
  latest: string;
}

/** Key of the shared entry for sources beyond `maxSources`. */
export const OTHER_SOURCES = "other sources";

export class LogLimiter {
  private readonly windows = new Map<string, Window>();
  private readonly windowMs: number;
  private readonly maxSources: number;

  constructor(
    /** Where lines go (already formatted; the caller escaped peer text). */
    private readonly emit: (line: string) => void,
    options: LogLimiterOptions = {},
  ) {
    this.windowMs = options.windowMs ?? 60_000;
    this.maxSources = Math.max(1, options.maxSources ?? 256);
  }

  /** Sources with an open window (bounded by maxSources + 1). */
  get tracked(): number {
    return this.windows.size;
  }

  /** Log `line` if it is the first of its (source, kind) window, else count it. True when logged. */
  note(source: string, line: string, now: number, kind = ""): boolean {
    let key = `${source}\0${kind}`;
    let window = this.windows.get(key);
    if (window === undefined && this.windows.size >= this.maxSources) {
      key = OTHER_SOURCES;
      source = OTHER_SOURCES;
      window = this.windows.get(key);
    }
    if (window !== undefined && now - window.start < this.windowMs) {
      window.suppressed++;
      window.latest = line;
      return false;
    }
    if (window !== undefined) this.summarise(window);
    this.windows.set(key, { source, start: now, suppressed: 0, latest: line });
    this.emit(line);
    return true;
  }

  /** End the windows that are over: one summary line each for those that suppressed lines. */
  flush(now: number): void {
    for (const [key, window] of this.windows) {
      if (now - window.start < this.windowMs) continue;
      this.summarise(window);
      this.windows.delete(key);
    }
  }

  private summarise(window: Window): void {
    if (window.suppressed === 0) return;
    const seconds = Math.round(this.windowMs / 1000);
    const what = window.suppressed === 1 ? "1 more line" : `${window.suppressed} more lines`;
    this.emit(`${what} like this from ${window.source} in ${seconds} s not logged; the latest: ${window.latest}`);
  }
}

/**
 * @module lib/log — the one Log interface the rest of dstd uses, and the line formatter
 * behind it. Protocol code sees only `Log`; tests pass a recording log instead.
 *
 * One event, one line, on stderr (docs/status.md "Logs"):
 * - text: `2025-01-31T12:00:00.123Z INFO  [export] listening for DST on 127.0.0.1:10810`,
 *   structured fields appended as `key=value` (values with spaces or quotes JSON-quoted);
 * - json (`--log-format json`, `log_format = "json"`, `$DSTD_LOG_FORMAT`): one object per
 *   line, `{"time","level","component","msg",...fields}`;
 * - under systemd's journal (stderr is the stream `$JOURNAL_STREAM` names), text lines carry
 *   a `<N>` syslog priority prefix instead of a timestamp: journald stores both itself.
 * Control characters in messages (a peer's export name, say) are escaped, so nobody can
 * forge a log line or a terminal sequence; there are never blank lines around a warning.
 * Normal steps are info; warn means an operator should look.
 */
import { fstatSync } from "node:fs";

export type LogLevel = "error" | "warn" | "info" | "debug" | "trace";
export type LogFormat = "text" | "json";
/** Structured fields of one line: flat, JSON-representable values only. */
export type LogFields = Readonly<Record<string, string | number | boolean | null>>;

export interface Log {
  error(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  debug(message: string, fields?: LogFields): void;
}

/** A Log that can make tagged children and change its level at run time (reload). */
export interface NodeLog extends Log {
  child(tag: string): NodeLog;
  setLevel(level: LogLevel): void;
}

export const LOG_LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug", "trace"];
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];
const levels: Record<LogLevel, number> = { error: 0, warn: 1, info: 3, debug: 4, trace: 5 };
type LineLevel = "error" | "warn" | "info" | "debug";
const TEXT_NAMES: Record<LineLevel, string> = { error: "ERROR", warn: "WARN ", info: "INFO ", debug: "DEBUG" };
/** syslog priorities (sd-daemon(3): SD_ERR 3, SD_WARNING 4, SD_INFO 6, SD_DEBUG 7). */
const JOURNAL_PRIORITY: Record<LineLevel, number> = { error: 3, warn: 4, info: 6, debug: 7 };
const RESERVED = new Set(["time", "level", "component", "msg"]);

export function isLogLevel(text: string): text is LogLevel {
  return Object.hasOwn(levels, text);
}

export function isLogFormat(text: string): text is LogFormat {
  return text === "text" || text === "json";
}

/** `$DSTD_LOG_FORMAT` when it names a format, else text. */
export function defaultLogFormat(env: Record<string, string | undefined> = process.env): LogFormat {
  const wanted = env.DSTD_LOG_FORMAT;
  return wanted !== undefined && isLogFormat(wanted) ? wanted : "text";
}

/** Is stderr the journal stream systemd set up for us (systemd.exec(5) $JOURNAL_STREAM)? */
export function stderrIsJournal(env: Record<string, string | undefined> = process.env): boolean {
  const stream = env.JOURNAL_STREAM;
  if (!stream) return false;
  const [dev, ino] = stream.split(":");
  try {
    const stat = fstatSync(2);
    return String(stat.dev) === dev && String(stat.ino) === ino;
  } catch {
    return false;
  }
}

export interface LogOptions {
  format?: LogFormat;
  /** Prefix text lines with `<N>` priorities instead of timestamps (default: detect the journal). */
  journal?: boolean;
  /** Where lines go (default: stderr). Receives one line without its newline. */
  write?: (line: string) => void;
  /** Clock for timestamps (tests). */
  now?: () => Date;
}

interface Output {
  threshold: number;
  format: LogFormat;
  journal: boolean;
  write: (line: string) => void;
  now: () => Date;
}

/** C0 controls, DEL and C1 controls as \xNN; a newline in a message becomes a visible "\n". */
export function escapeControls(text: string): string {
  // biome-ignore lint: control characters are the point here
  return text.replace(/[\x00-\x1f\x7f-\x9f]/g, (c) => (c === "\n" ? "\\n" : c === "\t" ? "\\t" : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`));
}

function textValue(value: string | number | boolean | null): string {
  if (typeof value !== "string") return String(value);
  return value === "" || /[\s"=\\]/.test(value) || /[\x00-\x1f\x7f-\x9f]/.test(value) ? JSON.stringify(value) : value;
}

/** Format one line (no newline). Exported for tests and for tools that re-render lines. */
export function formatLine(
  level: LineLevel,
  tag: string | undefined,
  message: string,
  fields: LogFields | undefined,
  format: LogFormat,
  journal: boolean,
  time: Date,
): string {
  if (format === "json") {
    const record: Record<string, unknown> = { time: time.toISOString(), level };
    if (tag !== undefined) record.component = tag;
    record.msg = message;
    if (fields) for (const [key, value] of Object.entries(fields)) if (!RESERVED.has(key)) record[key] = value;
    return JSON.stringify(record);
  }
  const head = journal ? `<${JOURNAL_PRIORITY[level]}>` : `${time.toISOString()} ${TEXT_NAMES[level]} `;
  const component = tag === undefined ? "" : `[${escapeControls(tag)}] `;
  let line = `${head}${component}${escapeControls(message)}`;
  if (fields) {
    for (const [key, value] of Object.entries(fields)) line += ` ${escapeControls(key)}=${textValue(value)}`;
  }
  return line;
}

/** Methods are bound (arrow properties): callers pass `log.warn` around as a plain function. */
class Logger implements NodeLog {
  constructor(
    private readonly out: Output,
    private readonly tag: string | undefined,
  ) {}

  readonly error = (message: string, fields?: LogFields): void => this.emit("error", 0, message, fields);
  readonly warn = (message: string, fields?: LogFields): void => this.emit("warn", 1, message, fields);
  readonly info = (message: string, fields?: LogFields): void => this.emit("info", 3, message, fields);
  readonly debug = (message: string, fields?: LogFields): void => this.emit("debug", 4, message, fields);

  child(tag: string): NodeLog {
    return new Logger(this.out, this.tag === undefined ? tag : `${this.tag}/${tag}`);
  }

  setLevel(level: LogLevel): void {
    this.out.threshold = levels[level];
  }

  private emit(level: LineLevel, rank: number, message: string, fields: LogFields | undefined): void {
    if (rank > this.out.threshold) return;
    this.out.write(formatLine(level, this.tag, message, fields, this.out.format, this.out.journal, this.out.now()));
  }
}

const writeStderr = (line: string) => {
  process.stderr.write(`${line}\n`);
};

export function createLog(level: LogLevel, tag?: string, options: LogOptions = {}): NodeLog {
  const format = options.format ?? defaultLogFormat();
  const output: Output = {
    threshold: levels[level],
    format,
    journal: format === "text" && (options.journal ?? stderrIsJournal()),
    write: options.write ?? writeStderr,
    now: options.now ?? (() => new Date()),
  };
  return new Logger(output, tag);
}

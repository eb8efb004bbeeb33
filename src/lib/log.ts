/**
 * @module lib/log — consola behind the small Log interface the rest of dstd uses, so
 * protocol code never imports consola and tests can pass a recording log instead.
 * One line per connection event by default; per-I/O lines only at debug/trace.
 */
import { createConsola } from "consola";

export type LogLevel = "error" | "warn" | "info" | "debug" | "trace";

export interface Log {
  error(message: string): void;
  warn(message: string): void;
  info(message: string): void;
  debug(message: string): void;
}

const levels: Record<LogLevel, number> = { error: 0, warn: 1, info: 3, debug: 4, trace: 5 };

export function isLogLevel(text: string): text is LogLevel {
  return text in levels;
}

export function createLog(level: LogLevel, tag?: string): Log {
  const base = createConsola({ level: levels[level], stderr: process.stderr, stdout: process.stderr });
  const consola = tag ? base.withTag(tag) : base;
  return {
    error: (m) => consola.error(m),
    warn: (m) => consola.warn(m),
    info: (m) => consola.info(m),
    debug: (m) => consola.debug(m),
  };
}

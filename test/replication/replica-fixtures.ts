/**
 * @module test/replication/replica-fixtures — what the in-process replica node tests share
 * (secondary-heal.test.ts, role-errors.test.ts): a silent log, a timer, the config of a
 * replicated export over a log directory, and a log directory whose named files fail their
 * writes on demand.
 */
import type { ExportConfig } from "../../src/config/types.ts";
import { Errno } from "../../src/lib/errno.ts";
import type { Log } from "../../src/lib/log.ts";
import type { LogDirectory, LogFile } from "../../src/replication/files.ts";

export const quiet: Log = { error: () => {}, warn: () => {}, info: () => {}, debug: () => {} };

/**
 * Real time, but no wait longer than 5 ms: a node's retries, reopens and backoffs (1 s to 60 s)
 * come at once, so a test waits for what happens, not for the delays before it.
 */
export const quickTimer = {
  now: () => performance.now(),
  after(ms: number, run: () => void): () => void {
    const t = setTimeout(run, Math.min(ms, 5));
    return () => clearTimeout(t);
  },
};

/** A replicated export `name` over `dir`; a `peer` (an export name on a fake address) for a secondary or a fenced primary. */
export function replicaConfig(name: string, dir: string, role: "primary" | "secondary", peer: string | null): ExportConfig {
  return {
    name,
    readOnly: false,
    replication: {
      logDir: dir,
      logSize: 64 << 20,
      role,
      peer: peer === null ? null : { scheme: "dst", host: "127.0.0.1", port: 1, exportName: peer },
      keyFile: null,
      replayDelayMs: 0,
      compress: false,
      bandwidth: 0,
    },
  } as unknown as ExportConfig;
}

/** A log directory whose files named `prefix…` fail every write with EIO while `failing.on`. */
export function failingFiles(dir: LogDirectory, prefix: string, failing: { on: boolean; failed: number }): LogDirectory {
  const wrapped = Object.create(dir) as LogDirectory;
  wrapped.open = (name, create, done) =>
    dir.open(name, create, (errno, file) => {
      if (file === null || !name.startsWith(prefix)) return done(errno, file);
      const f = Object.create(file) as LogFile;
      f.write = (position, chunks, written) => {
        if (!failing.on) return file.write(position, chunks, written);
        failing.failed++;
        queueMicrotask(() => written(Errno.EIO));
      };
      done(errno, f);
    });
  return wrapped;
}

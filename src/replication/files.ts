/**
 * @module replication/files — the directory of files the replication log lives in, as an
 * asynchronous interface, and its implementation on node:fs callbacks (Bun runs them on its
 * thread pool, so a write or an fdatasync never blocks the event loop). The simulator
 * (test/replication/sim-files.ts) implements the same interface with a volatile cache, torn
 * writes and crashes, so the log store runs unchanged in both.
 *
 * Durability rules every implementation follows (and the log store relies on):
 * - `LogFile.sync` (fdatasync) makes every write and truncate of that file that completed
 *   before the call durable, including the file size.
 * - Creating, renaming and removing a file become durable only with `LogDirectory.sync`
 *   (fsync of the directory); until then a crash may undo any of them (a rename replaces its
 *   target whole: a crash leaves the old file or the new one under the name, never a mix).
 * - A removed file stays readable through descriptors opened before (POSIX unlink).
 *
 * Must not: buffer data itself, reorder calls on one file in a way a caller can observe, or
 * report a short or failed transfer as success.
 */
import fs from "node:fs";
import path from "node:path";
import { Errno, errnoMessage } from "../lib/errno.ts";
import { errnoOf } from "../storage/local/fd-io.ts";

/** 0 or an errno. */
export type FileDone = (errno: number) => void;

export interface LogFile {
  readonly name: string;
  /** Writes the chunks back to back at `position`, all of them or an error. */
  write(position: number, chunks: readonly Uint8Array[], done: FileDone): void;
  /** Reads up to `into.length` bytes at `position`; fewer only at end of file. */
  read(position: number, into: Uint8Array, done: (errno: number, bytes: number) => void): void;
  /** fdatasync. */
  sync(done: FileDone): void;
  truncate(size: number, done: FileDone): void;
  size(done: (errno: number, size: number) => void): void;
  close(done: FileDone): void;
}

export interface LogDirectory {
  /** Where it is, for messages. */
  readonly path: string;
  list(done: (errno: number, names: string[]) => void): void;
  /** Opens `name` for reading and writing; `create`: create it (mode 0600) when missing. */
  open(name: string, create: boolean, done: (errno: number, file: LogFile | null) => void): void;
  remove(name: string, done: FileDone): void;
  /** Renames `from` to `to`, replacing `to` (rename(2)): how a file is rewritten whole. */
  rename(from: string, to: string, done: FileDone): void;
  /** fsync of the directory: creations and removals before it become durable. */
  sync(done: FileDone): void;
}

/** Promise forms for the rare paths (open, recovery, rotation); the hot path uses callbacks. */
export const files = {
  list: (dir: LogDirectory) => promise<string[]>(`list ${dir.path}`, (done) => dir.list(done)),
  open: (dir: LogDirectory, name: string, create: boolean) =>
    promise<LogFile>(`open ${dir.path}/${name}`, (done) => dir.open(name, create, (errno, file) => done(errno, file!))),
  remove: (dir: LogDirectory, name: string) =>
    promise<void>(`remove ${dir.path}/${name}`, (done) => dir.remove(name, (e) => done(e, undefined))),
  rename: (dir: LogDirectory, from: string, to: string) =>
    promise<void>(`rename ${dir.path}/${from} to ${to}`, (done) => dir.rename(from, to, (e) => done(e, undefined))),
  syncDir: (dir: LogDirectory) => promise<void>(`fsync ${dir.path}`, (done) => dir.sync((e) => done(e, undefined))),
  write: (file: LogFile, position: number, chunks: readonly Uint8Array[]) =>
    promise<void>(`write ${file.name} at ${position}`, (done) => file.write(position, chunks, (e) => done(e, undefined))),
  read: (file: LogFile, position: number, into: Uint8Array) =>
    promise<number>(`read ${file.name} at ${position}`, (done) => file.read(position, into, done)),
  sync: (file: LogFile) => promise<void>(`fdatasync ${file.name}`, (done) => file.sync((e) => done(e, undefined))),
  truncate: (file: LogFile, size: number) =>
    promise<void>(`truncate ${file.name} to ${size}`, (done) => file.truncate(size, (e) => done(e, undefined))),
  size: (file: LogFile) => promise<number>(`stat ${file.name}`, (done) => file.size(done)),
  close: (file: LogFile) => promise<void>(`close ${file.name}`, (done) => file.close((e) => done(e, undefined))),
};

/**
 * What an open made of several steps has opened so far, and how to close it: a step that throws
 * closes everything held, newest first (their own errors dropped: the step's failure is the one
 * reported), then rethrows. A failed open must leave no descriptor behind: a retry in the same
 * process (a unit restart under `dstd up`) would meet the files still open. Closes here are
 * idempotent, so a step may close what it holds itself. Used as try/catch in the opening
 * function itself, not as a wrapper: a success takes no extra turns of the event loop (the
 * replication simulation's seeds replay the same schedule).
 */
export class OpenedFiles {
  private readonly closes: (() => Promise<unknown>)[] = [];

  hold(close: () => Promise<unknown>): void {
    this.closes.push(close);
  }

  /** Closes everything held, then throws `error` (a catch returns this). */
  async fail(error: unknown): Promise<never> {
    for (const close of this.closes.splice(0).reverse()) await close().catch(() => {});
    throw error;
  }
}

/** A failed file operation: carries the errno and says which file and call. */
export class FileError extends Error {
  constructor(
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = "FileError";
  }
}

function promise<T>(what: string, start: (done: (errno: number, value: T) => void) => void): Promise<T> {
  return new Promise((resolve, reject) =>
    start((errno, value) =>
      errno === 0 ? resolve(value) : reject(new FileError(errno, `${what} failed: ${errnoMessage(errno)}`)),
    ),
  );
}

// ---- node:fs implementation ----------------------------------------------------------------

/** The log directory on the local file system; created (mode 0700) when missing. */
export function openLogDirectory(dirPath: string): LogDirectory {
  fs.mkdirSync(dirPath, { recursive: true, mode: 0o700 });
  return new FsDirectory(path.resolve(dirPath));
}

class FsDirectory implements LogDirectory {
  constructor(readonly path: string) {}

  list(done: (errno: number, names: string[]) => void): void {
    fs.readdir(this.path, (error, names) => (error ? done(errnoOf(error), []) : done(0, names.sort())));
  }

  open(name: string, create: boolean, done: (errno: number, file: LogFile | null) => void): void {
    const { O_RDWR, O_CREAT } = fs.constants;
    fs.open(path.join(this.path, name), create ? O_RDWR | O_CREAT : O_RDWR, 0o600, (error, fd) =>
      error ? done(errnoOf(error), null) : done(0, new FsFile(fd, name)),
    );
  }

  remove(name: string, done: FileDone): void {
    fs.unlink(path.join(this.path, name), (error) => done(error ? errnoOf(error) : 0));
  }

  rename(from: string, to: string, done: FileDone): void {
    fs.rename(path.join(this.path, from), path.join(this.path, to), (error) => done(error ? errnoOf(error) : 0));
  }

  sync(done: FileDone): void {
    fs.open(this.path, fs.constants.O_RDONLY, (error, fd) => {
      if (error) return done(errnoOf(error));
      fs.fsync(fd, (syncError) => fs.close(fd, () => done(syncError ? errnoOf(syncError) : 0)));
    });
  }
}

class FsFile implements LogFile {
  private closed = false;

  constructor(
    private readonly fd: number,
    readonly name: string,
  ) {}

  write(position: number, chunks: readonly Uint8Array[], done: FileDone): void {
    let total = 0;
    for (const chunk of chunks) total += chunk.length;
    this.writeFrom(position, chunks as Uint8Array[], total, done);
  }

  /** writev loop: a short write resumes with the rest (rare on regular files, but legal). */
  private writeFrom(position: number, chunks: Uint8Array[], remaining: number, done: FileDone): void {
    if (remaining === 0) return done(0);
    fs.writev(this.fd, chunks, position, (error, written) => {
      if (error) return done(errnoOf(error));
      if (written <= 0) return done(Errno.EIO);
      if (written === remaining) return done(0);
      this.writeFrom(position + written, skip(chunks, written), remaining - written, done);
    });
  }

  read(position: number, into: Uint8Array, done: (errno: number, bytes: number) => void): void {
    const readFrom = (filled: number): void => {
      if (filled === into.length) return done(0, filled);
      fs.read(this.fd, into, filled, into.length - filled, position + filled, (error, n) => {
        if (error) return done(errnoOf(error), filled);
        if (n === 0) return done(0, filled);
        readFrom(filled + n);
      });
    };
    readFrom(0);
  }

  sync(done: FileDone): void {
    fs.fdatasync(this.fd, (error) => done(error ? errnoOf(error) : 0));
  }

  truncate(size: number, done: FileDone): void {
    fs.ftruncate(this.fd, size, (error) => done(error ? errnoOf(error) : 0));
  }

  size(done: (errno: number, size: number) => void): void {
    fs.fstat(this.fd, (error, stats) => (error ? done(errnoOf(error), 0) : done(0, stats.size)));
  }

  close(done: FileDone): void {
    if (this.closed) return done(0);
    this.closed = true;
    fs.close(this.fd, (error) => done(error ? errnoOf(error) : 0));
  }
}

/** The chunks after the first `n` bytes (views, no copies). */
function skip(chunks: Uint8Array[], n: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (const chunk of chunks) {
    if (n >= chunk.length) {
      n -= chunk.length;
      continue;
    }
    out.push(n > 0 ? chunk.subarray(n) : chunk);
    n = 0;
  }
  return out;
}

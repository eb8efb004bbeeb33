/**
 * @module replication/state-file — a small value kept durably in two alternating slots of
 * one file (a superblock pair), so updating it needs only a write and an fdatasync: no
 * rename, no directory sync, and a torn update leaves the previous slot intact. Holds the
 * primary's checkpoint and secondaries' positions (replication/primary-state.ts) and a
 * secondary's applied position (replication/applier.ts). docs/replication.md §4.
 *
 * Slot (SLOT_SIZE bytes, big-endian): u32 magic "DSTS" | u8 version 1 | u8 kind | u16 0 |
 * u64 counter | u32 body length | body (UTF-8 JSON) | zero fill | u64 xxh3 of bytes 0..SLOT_SIZE-8.
 * Each update goes to the slot that does not hold the newest valid value; the valid slot with
 * the higher counter wins.
 *
 * Must not: trust a slot whose checksum fails, or report a save as done before its
 * fdatasync returned. Saves are serialized; a save requested while one runs coalesces with
 * other waiting saves (the newest value is written once, for all of them).
 */
import { DstdError } from "../lib/errors.ts";
import { errnoMessage } from "../lib/errno.ts";
import { readU32, readU64, writeU32, writeU64 } from "../wire/dst/bytes.ts";
import { files, FileError, type FileDone, type LogDirectory, type LogFile } from "./files.ts";

export const SLOT_SIZE = 4096;
const MAGIC = 0x44535453;
const VERSION = 1;
const BODY_AT = 20;
const BODY_MAX = SLOT_SIZE - BODY_AT - 8;

/** Checks a parsed JSON body and returns the typed value or a reason. */
export type Validate<T> = (value: unknown) => T | string;

export interface SlotDecoded {
  counter: number;
  kind: number;
  body: unknown;
}

/** Encodes one slot (pure). The body must fit (a programmer error otherwise: bodies are small). */
export function encodeSlot(kind: number, counter: number, body: unknown): Uint8Array {
  const text = new TextEncoder().encode(JSON.stringify(body));
  if (text.length > BODY_MAX) throw new DstdError("E_STATE", `state of ${text.length} bytes does not fit a ${SLOT_SIZE}-byte slot`);
  const slot = new Uint8Array(SLOT_SIZE);
  writeU32(slot, 0, MAGIC);
  slot[4] = VERSION;
  slot[5] = kind;
  writeU64(slot, 8, counter);
  writeU32(slot, 16, text.length);
  slot.set(text, BODY_AT);
  const sum = Bun.hash.xxHash3(slot.subarray(0, SLOT_SIZE - 8));
  writeU32(slot, SLOT_SIZE - 8, Number(sum >> 32n));
  writeU32(slot, SLOT_SIZE - 4, Number(sum & 0xffffffffn));
  return slot;
}

/** Decodes one slot (pure): the value or a reason it is not a valid slot of `kind`. */
export function decodeSlot(slot: Uint8Array, kind: number): SlotDecoded | string {
  if (slot.length < SLOT_SIZE) return `slot is ${slot.length} bytes, not ${SLOT_SIZE}`;
  const sum = Bun.hash.xxHash3(slot.subarray(0, SLOT_SIZE - 8));
  const stored = (BigInt(readU32(slot, SLOT_SIZE - 8)) << 32n) | BigInt(readU32(slot, SLOT_SIZE - 4));
  if (readU32(slot, 0) !== MAGIC) return "no state slot here (bad magic)";
  if (sum !== stored) return "checksum mismatch (torn or corrupt)";
  if (slot[4] !== VERSION) return `format version ${slot[4]} (this build reads ${VERSION})`;
  if (slot[5] !== kind) return `holds state of kind ${slot[5]}, expected ${kind}`;
  const length = readU32(slot, 16);
  if (length > BODY_MAX) return `body length ${length} too large`;
  const counter = readU64(slot, 8);
  try {
    return { counter, kind, body: JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(slot.subarray(BODY_AT, BODY_AT + length))) };
  } catch {
    return "body is not valid JSON";
  }
}

interface Waiter {
  done: FileDone;
}

export class StateFile<T> {
  private counter: number;
  /** Slot holding the newest valid value (the next save writes the other one). */
  private slot: number;
  private saving = false;
  private next: { value: T; waiters: Waiter[] } | null = null;
  private current: T | null;
  private failed = 0;

  private constructor(
    private readonly file: LogFile,
    private readonly kind: number,
    counter: number,
    slot: number,
    value: T | null,
  ) {
    this.counter = counter;
    this.slot = slot;
    this.current = value;
  }

  /** Why saves fail since a write or fdatasync of the file failed (it latches: fsyncgate); null while healthy. */
  get failure(): string | null {
    return this.failed === 0 ? null : `${this.file.name}: a write or fdatasync failed (${errnoMessage(this.failed)}); saves fail until restarted`;
  }

  /**
   * Opens (creating it, with a directory sync) `name` in `dir`, reads the newest valid slot and
   * fdatasyncs what it read (a killed process may have left it in the page cache only). A file
   * with two bad slots is refused with a message naming both reasons, unless it was never
   * written (all zero or empty).
   */
  static async open<T>(dir: LogDirectory, name: string, kind: number, validate: Validate<T>): Promise<StateFile<T>> {
    const names = await files.list(dir);
    const existed = names.includes(name);
    const buffer = new Uint8Array(2 * SLOT_SIZE);
    const file = await files.open(dir, name, !existed);
    let n: number;
    try {
      if (!existed) await files.syncDir(dir);
      n = await files.read(file, 0, buffer);
      // A killed process's last save may sit in the page cache, not yet fdatasync'd: the caller
      // acts on what it reads (a primary replays nothing below the checkpoint it finds), so it
      // must be durable first, or a later power loss takes it back (replication sim seed 31).
      if (existed && n > 0) await files.sync(file);
    } catch (error) {
      await files.close(file).catch(() => {}); // a failed open must not leave the file open (files.ts OpenedFiles)
      throw error;
    }
    const slots = [decodeSlot(buffer.subarray(0, SLOT_SIZE), kind), decodeSlot(buffer.subarray(SLOT_SIZE), kind)];
    let best: { counter: number; value: T; slot: number } | null = null;
    const problems: string[] = [];
    slots.forEach((slot, i) => {
      if (typeof slot === "string") return problems.push(`slot ${i}: ${slot}`);
      const value = validate(slot.body);
      if (typeof value === "string") return problems.push(`slot ${i}: ${value}`);
      if (best === null || slot.counter > best.counter) best = { counter: slot.counter, value, slot: i };
    });
    if (best === null) {
      // The first save writes slot 0: slot 1 never written means no save ever completed
      // (slot 0 holds a torn first attempt at most), so there is no state yet.
      const blank = n === 0 || buffer.subarray(SLOT_SIZE).every((b) => b === 0);
      if (!blank) {
        await files.close(file);
        throw new DstdError("E_STATE", `${dir.path}/${name} holds no valid state (${problems.join("; ")})`);
      }
      return new StateFile<T>(file, kind, 0, 1, null);
    }
    const found = best as { counter: number; value: T; slot: number };
    return new StateFile<T>(file, kind, found.counter, found.slot, found.value);
  }

  /** The newest value saved or being saved (null: never saved). */
  get value(): T | null {
    return this.next?.value ?? this.current;
  }

  /** Saves `value` durably; `done` runs once it (or a newer value) is on disk. */
  save(value: T, done: FileDone = () => {}): void {
    if (this.failed !== 0) return done(this.failed);
    if (this.next === null) this.next = { value, waiters: [] };
    this.next.value = value;
    this.next.waiters.push({ done });
    this.pump();
  }

  /** Promise form of save. */
  saveNow(value: T): Promise<void> {
    return new Promise((resolve, reject) =>
      this.save(value, (errno) => (errno === 0 ? resolve() : reject(new FileError(errno, `saving ${this.file.name} failed: ${errnoMessage(errno)}`)))),
    );
  }

  private pump(): void {
    if (this.saving || this.next === null) return;
    const { value, waiters } = this.next;
    this.next = null;
    this.saving = true;
    const counter = this.counter + 1;
    const target = 1 - this.slot;
    const slot = encodeSlot(this.kind, counter, value);
    this.file.write(target * SLOT_SIZE, [slot], (errno) => {
      const finish = (e: number): void => {
        this.saving = false;
        if (e === 0) {
          this.counter = counter;
          this.slot = target;
          this.current = value;
        } else {
          // fsyncgate: after a failed write or fdatasync nothing about this file can be trusted.
          this.failed = e;
          const later = this.next?.waiters ?? [];
          this.next = null;
          for (const w of later) w.done(e);
        }
        for (const w of waiters) w.done(e);
        this.pump();
      };
      if (errno !== 0) return finish(errno);
      this.file.sync(finish);
    });
  }

  close(): Promise<void> {
    return files.close(this.file);
  }
}

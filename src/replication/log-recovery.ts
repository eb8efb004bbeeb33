/**
 * @module replication/log-recovery — what a log store does on open (docs/replication.md §3.3):
 * scans every segment in order and settles the log — torn tail cut, leftovers of an interrupted
 * release removed, a corrupt record refused or cut — and reports what it found and did. Split
 * out of replication/log-store.ts, which opens through it.
 *
 * Must not: serve (return) a log whose torn tail is still on disk: every cut, removal and sync
 * it makes fails the open when it fails, naming the file and the call.
 */
import { DstdError } from "../lib/errors.ts";
import { files, type OpenedFiles, type LogDirectory, type LogFile } from "./files.ts";
import type { LogStoreOptions } from "./log-store.ts";
import { CHAIN_ORIGIN, type ChainPoint } from "./record.ts";
import { findDurableSuccessor, parseSegmentName, scanSegment, type Segment } from "./segments.ts";

/** What open found and did. */
export interface RecoveryReport {
  segments: number;
  records: number;
  /** First and last sequence numbers held (first = last + 1 when the log holds none). */
  first: number;
  last: number;
  bytes: number;
  /** An incomplete or torn last record (never acknowledged) cut off. */
  tornTail: null | { segment: string; offset: number; bytes: number; reason: string };
  /** A corrupt record cut off with everything after it (onCorruption "truncate" only). */
  corruption: null | { segment: string; offset: number; seq: number; bytes: number; reason: string };
  /** Files removed: leftovers of an interrupted release, empty segments, void records. */
  removed: string[];
}

interface Recovered {
  segments: Segment[];
  tail: ChainPoint;
  report: RecoveryReport;
  activeFile: LogFile | null;
}

/**
 * Scans every segment in order and settles the log (docs/replication.md §3.3): the records
 * from the first segment of the newest contiguous run through the last valid record; a torn
 * tail truncated; leftovers of an interrupted release removed; a corrupt record refused (or
 * truncated, per options) with a message naming its segment, offset and sequence number.
 */
export async function recover(dir: LogDirectory, options: LogStoreOptions, opened: OpenedFiles): Promise<Recovered> {
  const report: RecoveryReport = { segments: 0, records: 0, first: 0, last: 0, bytes: 0, tornTail: null, corruption: null, removed: [] };
  const names = (await files.list(dir))
    .map((name) => ({ name, firstSeq: parseSegmentName(name) }))
    .filter((s): s is { name: string; firstSeq: number } => s.firstSeq !== null)
    .sort((a, b) => a.firstSeq - b.firstSeq);

  const segments: Segment[] = [];
  let point: ChainPoint = CHAIN_ORIGIN;
  let activeFile: LogFile | null = null;
  const removeFile = async (name: string): Promise<void> => {
    await files.remove(dir, name);
    report.removed.push(name);
  };

  for (let i = 0; i < names.length; i++) {
    const { name, firstSeq } = names[i]!;
    // A run that does not continue the one before: the earlier segments are leftovers of an
    // interrupted release (removals that a crash undid) and go.
    if (segments.length > 0 && firstSeq !== point.seq + 1) {
      for (const s of segments.splice(0)) await removeFile(s.name);
      point = CHAIN_ORIGIN;
    }
    const file = await files.open(dir, name, false);
    opened.hold(() => files.close(file));
    const scan = await scanSegment(file, firstSeq, point, options.voidAfter);
    if (scan.problem !== null) {
      const problem = scan.problem;
      const isLast = i === names.length - 1;
      const expectedSeq = scan.point.seq === 0 || scan.records === 0 ? firstSeq : scan.point.seq + 1;
      const where = `${dir.path}/${name} offset ${problem.offset}`;
      const successor =
        isLast && !problem.incomplete && !problem.beyondLimit
          ? await findDurableSuccessor(file, problem.offset, expectedSeq, scan.point, scan.fileSize)
          : -1;
      if (problem.beyondLimit) {
        // Void records (declared so before the log was abandoned): cut, not reported as damage.
      } else if (isLast && (problem.incomplete || successor < 0) && expectedSeq > (options.durableThrough ?? 0)) {
        report.tornTail = { segment: name, offset: problem.offset, bytes: scan.fileSize - scan.validBytes, reason: problem.reason };
      } else if ((options.onCorruption ?? "refuse") === "truncate") {
        report.corruption = { segment: name, offset: problem.offset, seq: expectedSeq, bytes: scan.fileSize - scan.validBytes, reason: problem.reason };
        options.log?.error(`replication log: record seq ${expectedSeq} at ${where} is corrupt (${problem.reason}); cut off with everything after it`);
      } else {
        await files.close(file);
        const proof =
          successor >= 0
            ? ` (a record written after it was durable follows at offset ${successor})`
            : expectedSeq <= (options.durableThrough ?? 0)
              ? ` (it was durable: checkpointed or applied by a secondary through seq ${options.durableThrough})`
              : " (later segments follow it)";
        throw new DstdError(
          "E_LOG_CORRUPT",
          `replication log ${dir.path}: record seq ${expectedSeq} at ${where} is corrupt: ${problem.reason}${proof}. ` +
            `Records up to seq ${expectedSeq - 1} are intact; records from seq ${expectedSeq} on were acknowledged and cannot be ` +
            `recovered from this log. Restore the segment, or resync the secondaries from this disk.`,
          { errno: 74 },
        );
      }
      // Later segments go too, durably before the cut: back behind a shortened segment after a crash,
      // they would make the next recovery delete it as a leftover of a release (above).
      const later = names.splice(i + 1);
      for (const s of later) await removeFile(s.name);
      if (later.length > 0) await files.syncDir(dir);
      await files.truncate(file, scan.validBytes);
      // Said once cut, not at the end: a sync after it that fails the open leaves the log cut, and
      // the next start finds no tail to report (replication sim seed 738674).
      const torn = report.tornTail;
      if (torn !== null) {
        options.log?.warn(
          `replication log: torn tail of ${torn.bytes} bytes cut at ${dir.path}/${torn.segment} ` +
            `offset ${torn.offset} (${torn.reason}); those records were never acknowledged`,
        );
      }
      await files.sync(file);
    }
    const isLast = i === names.length - 1;
    if (scan.records === 0 && !isLast) {
      await files.close(file);
      await removeFile(name);
      continue;
    }
    const lastSeq = scan.records > 0 ? scan.point.seq : firstSeq - 1;
    segments.push({ name, firstSeq, size: scan.validBytes, durableSize: scan.validBytes, lastSeq, durableLast: lastSeq });
    if (scan.records > 0) point = scan.point;
    if (isLast) {
      // Data a crashed process wrote may still sit in the page cache: make it durable now.
      await files.sync(file);
      activeFile = file;
    } else {
      await files.close(file);
    }
  }

  let tail = point;
  if (tail.seq === 0 && options.base !== undefined) tail = options.base;
  const lastSegment = segments[segments.length - 1];
  if (lastSegment !== undefined && lastSegment.lastSeq < lastSegment.firstSeq && lastSegment.firstSeq !== tail.seq + 1) {
    // An empty last segment whose name does not fit the next record goes.
    segments.pop();
    if (activeFile !== null) await files.close(activeFile);
    activeFile = null;
    await removeFile(lastSegment.name);
  }
  // Always, like the last segment's data: a killed process may have created the empty last segment kept
  // here before its directory fsync; records appended to it would go with its entry (replication sim seed 1767).
  await files.syncDir(dir);
  report.segments = segments.length;
  report.first = segments.find((s) => s.lastSeq >= s.firstSeq)?.firstSeq ?? tail.seq + 1;
  report.last = tail.seq;
  report.records = report.last - report.first + 1;
  report.bytes = segments.reduce((sum, s) => sum + s.size, 0);
  return { segments, tail, report, activeFile };
}


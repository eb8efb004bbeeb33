/**
 * @module export/exports — what an export is once configured: a named storage port plus its
 * access rules. Shared by the DST and NBD front ends so both enforce the same ACL and the
 * same read-only rule.
 */
import type { StoragePort } from "../storage/port.ts";
import type { AllowRule } from "../lib/acl.ts";
import type { SuiteName } from "../crypto/suites.ts";
import type { ChecksumName } from "../crypto/checksum.ts";
import type { LogSource } from "./fetch.ts";

export interface Export {
  name: string;
  description: string;
  /** What the export serves: a local backend, a layer stack, a remote export… */
  port: StoragePort;
  /** Export-level read-only (--read-only): no client may write, whatever its grant. */
  readOnly: boolean;
  /** Allow list; empty means nobody gets in (fail closed). */
  allow: AllowRule[];
  /** Channel suites authenticated clients may use (default: DEFAULT_SUITES, never none). */
  suites?: readonly SuiteName[];
  /** End-to-end data checksums clients may choose (default: DEFAULT_CHECKSUMS). */
  checksums?: readonly ChecksumName[];
  /** The replication log this export serves to FETCH (a replication primary), if any. */
  log?: LogSource;
}

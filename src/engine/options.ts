/**
 * @module engine/options — the client engine's tunables, with the defaults a LAN wants.
 * Every value is in milliseconds or bytes; config/ turns "2s" and "256MiB" into these.
 *
 * WAN advice (README "Reliability"): raise resendIntervalMs to a few round trips,
 * deadlineMs to the longest outage the application tolerates, and inflight to the
 * bandwidth-delay product divided by the request size.
 */
import type { KeyMaterial } from "../crypto/keys.ts";
import type { SuiteName } from "../crypto/suites.ts";
import type { ChecksumName } from "../crypto/checksum.ts";

export interface EngineOptions {
  /** Pre-shared key and the suites to offer, in preference order; null/absent: anonymous. */
  auth?: { key: KeyMaterial; suites: readonly SuiteName[] } | null;
  /** End-to-end data checksums to offer, in preference order (default: xxh3 first). */
  checksums?: readonly ChecksumName[];
  /** Export to ask for in HELLO. */
  exportName: string;
  /** Free-form client description sent in HELLO (logs only). */
  clientName: string;
  /** Most requests outstanding on the wire at once (the export may lower it). */
  inflight: number;
  /** Largest payload per frame we accept and send; the export may lower it. */
  maxPayload: number;
  /** First resend after this long without a reply; doubles per resend (with jitter). */
  resendIntervalMs: number;
  /** Cap for the per-request resend interval after backoff. */
  resendIntervalMaxMs: number;
  /** A request fails with ETIMEDOUT after this many timeout-driven resends... */
  maxResends: number;
  /** ...or once this long has passed since it was submitted, whichever comes first. */
  deadlineMs: number;
  /** Reconnect backoff: first delay, doubling with jitter up to the cap. */
  reconnectMinMs: number;
  reconnectMaxMs: number;
  /** Send PING after this long without receiving anything on a ready connection. */
  keepaliveIntervalMs: number;
  /** Declare the connection dead after this long without receiving anything. */
  keepaliveTimeoutMs: number;
  /** Bound on acknowledged-but-unflushed write bytes kept for replay after an export restart. */
  replayBufferBytes: number;
  /** Requests outstanding (queued, on the wire) before submit() answers BUSY. */
  queueDepth: number;
  /** Bytes of write data waiting to go on the wire before submit() answers BUSY. */
  queueBytes: number;
  /** Seed for jitter (deterministic in simulation; random in production). */
  seed: number;
}

/** Keep equal to config/defaults.ts DEFAULT_RELIABILITY (test/engine/defaults.test.ts pins it). */
export const ENGINE_DEFAULTS: Omit<EngineOptions, "exportName" | "clientName" | "seed"> = {
  inflight: 64,
  maxPayload: 32 * 1024 * 1024,
  resendIntervalMs: 1_000,
  resendIntervalMaxMs: 16_000,
  maxResends: 10,
  deadlineMs: 120_000,
  reconnectMinMs: 100,
  reconnectMaxMs: 10_000,
  keepaliveIntervalMs: 2_000,
  keepaliveTimeoutMs: 6_000,
  replayBufferBytes: 256 * 1024 * 1024,
  queueDepth: 1024,
  queueBytes: 64 * 1024 * 1024,
};

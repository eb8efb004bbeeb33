/**
 * @module config/defaults — every default and every bound of the configuration, in one place
 * (nitro's core/config/defaults.ts pattern). Pure data: imports only lib constants. Change a
 * default here and docs/config.md in the same commit (test/config/docs.test.ts checks that
 * every key is documented; it cannot check the numbers, so keep them in step by hand).
 */
import type { ChecksumName, LogFormat, LogLevel, Reliability, SuiteName } from "./schema.ts";
import { DST_DEFAULT_PORT, NBD_DEFAULT_PORT, DST_DEFAULT_EXPORT } from "../lib/address.ts";

const MiB = 1024 * 1024;

export const DEFAULT_LOG_LEVEL: LogLevel = "info";
export const DEFAULT_STATE_DIR = "/var/lib/dstd";
export const DEFAULT_LOG_FORMAT: LogFormat = "text";
export const LOG_FORMATS: readonly LogFormat[] = ["text", "json"];
/** `metrics_listen` without a port (the metrics endpoint itself is off unless configured). */
export const DEFAULT_METRICS_PORT = 9810;

export const DEFAULT_DST_PORT = DST_DEFAULT_PORT;
export const DEFAULT_NBD_PORT = NBD_DEFAULT_PORT;
export const DEFAULT_EXPORT_NAME = DST_DEFAULT_EXPORT;

/** Loopback only: a fresh install must not serve a disk to the network by accident. */
export const DEFAULT_LISTEN: readonly string[] = [`127.0.0.1:${DEFAULT_DST_PORT}`];
/** The NBD front end is off unless asked for. */
export const DEFAULT_NBD_LISTEN: readonly string[] = [];

/**
 * Allow rules when an export has no `allow` key: none, so nobody gets in. docs/security.md
 * opens with "dstd fails closed. If nothing is configured, nobody gets in", and that has to
 * hold for the NBD front end too, whose clients carry no key. Access is always written down.
 */
export const DEFAULT_ALLOW: readonly string[] = [];

/** Every suite name the config accepts; mirrors crypto/suites.ts SUITE_NAMES (a test pins it). */
export const SUITE_NAMES: readonly SuiteName[] = [
  "aes-256-gcm",
  "chacha20-poly1305",
  "xchacha20-poly1305",
  "integrity",
  "none",
];
/**
 * Allowed (export) or offered (client) when `suites` is absent, in preference order:
 * encrypted suites only (crypto/suites.ts DEFAULT_SUITES; `integrity`/`none` are opt-in).
 */
export const DEFAULT_SUITES: readonly SuiteName[] = [
  "aes-256-gcm",
  "chacha20-poly1305",
  "xchacha20-poly1305",
];

/** Checksum names; mirrors crypto/checksum.ts CHECKSUM_NAMES (a test pins it). */
export const CHECKSUM_NAMES: readonly ChecksumName[] = ["xxh3", "sha256", "blake2b256", "none"];
/** Allowed / offered when `checksums` is absent (crypto/checksum.ts DEFAULT_CHECKSUMS). */
export const DEFAULT_CHECKSUMS: readonly ChecksumName[] = ["xxh3", "sha256", "blake2b256", "none"];

export const LOG_LEVELS: readonly LogLevel[] = ["error", "warn", "info", "debug", "trace"];

/** Requester-side timing and memory (client defaults; [client] and [[attach]] override). */
export const DEFAULT_RELIABILITY: Readonly<Reliability> = {
  resendIntervalMs: 1000,
  maxResends: 10,
  deadlineMs: 120_000,
  reconnectMinMs: 100,
  reconnectMaxMs: 10_000,
  keepaliveIntervalMs: 2000,
  keepaliveTimeoutMs: 6000,
  replayBufferBytes: 256 * MiB,
  inflightMax: 64,
  queueDepth: 1024,
  connections: 1,
};

/** Bounds the validator enforces (inclusive). */
export const LIMITS = {
  maxResends: { min: 0, max: 1000 },
  inflightMax: { min: 1, max: 65536 },
  queueDepth: { min: 1, max: 65536 },
  /** DST connections one client runs to an export (client/dst-client.ts). */
  connections: { min: 1, max: 16 },
  /** At least one 1 MiB write must fit in the replay buffer. */
  replayBufferBytes: { min: MiB },
  /** Any duration key: 1 ms .. 24 h (0 would spin, more is surely a typo). */
  durationMs: { min: 1, max: 24 * 3_600_000 },
} as const;

/** 32-byte pre-shared keys: inline `secret` is 64 hex digits or 43/44 base64 characters. */
export const KEY_BYTES = 32;

/**
 * `[limits]`: what one export process lets peers hold (docs/security.md "Resource limits").
 * The handshake and frame deadlines, the process-wide connection cap (lowered at start to fit
 * the file-descriptor limit, transport/fd-budget.ts) and the caps on connections still in
 * their handshake, per listener and per source address.
 */
export const DEFAULT_CONNECTION_LIMITS = {
  handshakeTimeoutMs: 10_000,
  frameTimeoutMs: 30_000,
  maxConnections: 4096,
  maxUnauthenticated: 128,
  maxUnauthenticatedPerSource: 16,
} as const;

/** Bounds of the `[limits]` keys (inclusive). */
export const CONNECTION_LIMIT_BOUNDS = {
  timeoutMs: { min: 100, max: 3_600_000 },
  count: { min: 1, max: 1_000_000 },
} as const;

/**
 * @module config/defaults — every default and every bound that the configuration owns, in one
 * place (nitro's core/config/defaults.ts pattern). Pure data. Vocabularies and defaults that a
 * lower layer owns are imported from it where they are used, never copied here: suite names
 * (crypto/suites.ts), checksum names (crypto/checksum.ts), the key size (crypto/keys.ts),
 * default ports and export name (lib/address.ts), log levels and formats (lib/log.ts); the
 * requester's timing and memory derive from engine/options.ts ENGINE_DEFAULTS. Change a
 * default and docs/config.md in the same commit (test/config/docs.test.ts checks that every
 * key is documented and that the documented defaults are these).
 */
import { ENGINE_DEFAULTS } from "../engine/options.ts";
import { DST_DEFAULT_PORT } from "../lib/address.ts";
import type { LogFormat, LogLevel, Reliability } from "./types.ts";

const MiB = 1024 * 1024;

export const DEFAULT_LOG_LEVEL: LogLevel = "info";
export const DEFAULT_STATE_DIR = "/var/lib/dstd";
export const DEFAULT_LOG_FORMAT: LogFormat = "text";
/** `metrics_listen` without a port (the metrics endpoint itself is off unless configured). */
export const DEFAULT_METRICS_PORT = 9810;

/**
 * `crypto_threads`: records sealed and opened on this many worker threads (transport/
 * crypto-pool.ts); 0 keeps them on the event loop. docs/performance.md "Crypto off the event
 * loop" has the measurement this default comes from.
 */
export const DEFAULT_CRYPTO_THREADS = 0;

/** Loopback only: a fresh install must not serve a disk to the network by accident. */
export const DEFAULT_LISTEN: readonly string[] = [`127.0.0.1:${DST_DEFAULT_PORT}`];
/** The NBD front end is off unless asked for. */
export const DEFAULT_NBD_LISTEN: readonly string[] = [];

/**
 * Allow rules when an export has no `allow` key: none, so nobody gets in. docs/security.md
 * opens with "dstd fails closed. If nothing is configured, nobody gets in", and that has to
 * hold for the NBD front end too, whose clients carry no key. Access is always written down.
 */
export const DEFAULT_ALLOW: readonly string[] = [];

/**
 * Requester-side timing and memory (client defaults; [client] and [[attach]] override): the
 * engine's own defaults, so a client built without a config behaves as one with an empty config.
 */
export const DEFAULT_RELIABILITY: Readonly<Reliability> = {
  resendIntervalMs: ENGINE_DEFAULTS.resendIntervalMs,
  maxResends: ENGINE_DEFAULTS.maxResends,
  deadlineMs: ENGINE_DEFAULTS.deadlineMs,
  reconnectMinMs: ENGINE_DEFAULTS.reconnectMinMs,
  reconnectMaxMs: ENGINE_DEFAULTS.reconnectMaxMs,
  keepaliveIntervalMs: ENGINE_DEFAULTS.keepaliveIntervalMs,
  keepaliveTimeoutMs: ENGINE_DEFAULTS.keepaliveTimeoutMs,
  replayBufferBytes: ENGINE_DEFAULTS.replayBufferBytes,
  inflightMax: ENGINE_DEFAULTS.inflight,
  queueDepth: ENGINE_DEFAULTS.queueDepth,
  /** client/dst-client.ts runs one link unless asked for more. */
  links: 1,
};

/** Bounds the validator enforces (inclusive). */
export const LIMITS = {
  maxResends: { min: 0, max: 1000 },
  inflightMax: { min: 1, max: 65536 },
  queueDepth: { min: 1, max: 65536 },
  /** DST connections (links) one client runs to an export (client/dst-client.ts). */
  links: { min: 1, max: 16 },
  /** At least one 1 MiB write must fit in the replay buffer. */
  replayBufferBytes: { min: MiB },
  /** Any duration key: 1 ms .. 24 h (0 would spin, more is surely a typo). */
  durationMs: { min: 1, max: 24 * 3_600_000 },
  /** `crypto_threads`: worker threads of the crypto pool (transport/crypto-pool.ts MAX_CRYPTO_THREADS). */
  cryptoThreads: { min: 0, max: 16 },
  /** [[attach]] connections: sockets to the kernel (the kernel uses at most one per CPU). */
  attachConnections: { min: 1, max: 16 },
} as const;

/** [[attach]] connections: sockets a kernel attachment gives /dev/nbdN (attach/shared-port.ts). */
export const DEFAULT_ATTACH_CONNECTIONS = 1;

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

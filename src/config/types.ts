/**
 * @module config/types — the shape of dstd.toml, and the leaf of config/: the raw input types
 * (what TOML or the command line hands us), the resolved Config (units normalized, addresses
 * and rules parsed, defaults filled, deeply frozen) and the issue a validator reports. Types
 * only; the vocabularies they use (suite, checksum and log names) belong to their owners.
 *
 * Keys and defaults (full reference with examples: docs/config.md; numbers: defaults.ts):
 *
 *   key                   where                 type / example            default
 *   log_level             top                   error|warn|info|debug|trace  "info"
 *   state_dir             top                   path                      "/var/lib/dstd"
 *   log_format            top                   text|json                 "text"
 *   metrics_listen        top                   "127.0.0.1:9810"          none (off)
 *   crypto_threads        top                   integer 0..16 (0: inline)  defaults.ts
 *   [[key]] identity      key table             "alice" (A-Za-z0-9._-)    required
 *   [[key]] file|secret   key table             path | 64 hex / base64    exactly one
 *   [[export]] name       export table          string, unique            "disk"
 *   file|device|memory|tree  export table       path | /dev path | size | table  exactly one
 *   [export.tree]         export                mirror|linear|stripe = [legs]  docs/tree.md
 *   size                  export (file only)    "10GiB" | bytes           existing size
 *   description           export                string                    ""
 *   listen                export                ["HOST:PORT", "unix:P"]   ["127.0.0.1:10810"]
 *   nbd_listen            export                same, NBD front end       [] (off)
 *   read_only             export                bool                      false
 *   allow                 export                rule strings / tables     [] (nobody)
 *   suites                export, client, att.  suite names               encrypted suites
 *   checksums             export, client, att.  xxh3|sha256|blake2b256|none  all four
 *   [[attach]] url        attach table          "dst://host/disk"         required
 *   device                attach                "/dev/nbd0"               first free
 *   nbd_listen            attach                "unix:/run/x.sock"        none
 *   connections           attach                integer 1..16 (sockets)   1
 *   key_file              attach, [client]      path                      none ([client]'s)
 *   resend_interval       attach, [client]      duration                  "1s"
 *   max_resends           attach, [client]      integer 0..1000           10
 *   deadline              attach, [client]      duration                  "2m"
 *   reconnect_min/_max    attach, [client]      duration                  "100ms" / "10s"
 *   keepalive_interval    attach, [client]      duration                  "2s"
 *   keepalive_timeout     attach, [client]      duration > interval       "6s"
 *   replay_buffer         attach, [client]      size ≥ 1MiB               "256MiB"
 *   inflight              attach, [client]      integer 1..65536          64
 *   queue_depth           attach, [client]      integer 1..65536          1024
 *   links                 attach, [client]      integer 1..16             1
 *   [limits] ...          top                   deadlines, connection caps  config/limits.ts
 * The reliability keys may also sit in a `reliability` sub-table ([client.reliability],
 * [attach.reliability]). An attach inherits [client] values, which inherit the defaults.
 */
import type { ChecksumName } from "../crypto/checksum.ts";
import type { SuiteName } from "../crypto/suites.ts";
import type { AllowRule } from "../lib/acl.ts";
import type { ReadPolicy } from "./tree-spec.ts";
import type { ExportUrl, ListenAddress } from "../lib/address.ts";
import type { LogFormat, LogLevel } from "../lib/log.ts";

export type { ChecksumName, LogFormat, LogLevel, SuiteName };

/** One problem found in a config, with where it is. */
export interface ConfigIssue {
  /** Where: "log_level", "export[1].size", "export[0].allow[2]"; "" for the whole file. */
  path: string;
  message: string;
}

export interface ValidateOptions {
  /** Directory relative paths are resolved against (the config file's); null keeps them. */
  baseDir?: string | null;
}

// ---- raw input: what Bun.TOML.parse returns for a valid file (all optional) ------------

/** Size fields take "10GiB" or a byte count; durations take "2s"/"500ms". */
export interface ReliabilityInput {
  resend_interval?: string;
  max_resends?: number;
  deadline?: string;
  reconnect_min?: string;
  reconnect_max?: string;
  keepalive_interval?: string;
  keepalive_timeout?: string;
  replay_buffer?: string | number;
  queue_depth?: number;
  links?: number;
  inflight?: number;
}
export interface KeyInput {
  identity?: string;
  file?: string;
  secret?: string;
}
export interface AllowTableInput {
  identity?: string;
  network?: string;
  access?: "ro" | "rw" | "replica";
}
export interface ExportInput {
  name?: string;
  file?: string;
  size?: string | number;
  device?: string;
  memory?: string | number;
  /** A storage tree: one node table (config/tree.ts). */
  tree?: Record<string, unknown>;
  description?: string;
  listen?: string | string[];
  nbd_listen?: string | string[];
  read_only?: boolean;
  allow?: (string | AllowTableInput)[];
  suites?: string[];
  checksums?: string[];
}
export interface AttachInput extends ClientInput {
  url?: string;
  device?: string;
  nbd_listen?: string;
  connections?: number;
}
export interface ClientInput extends ReliabilityInput {
  key_file?: string;
  suites?: string[];
  checksums?: string[];
  reliability?: ReliabilityInput;
}
/** Raw `[limits]` as TOML gives it (config/limits.ts). */
export interface LimitsInput {
  handshake_timeout?: string;
  frame_timeout?: string;
  max_connections?: number;
  max_unauthenticated?: number;
  max_unauthenticated_per_source?: number;
}
export interface ConfigInput {
  log_level?: string;
  state_dir?: string;
  log_format?: string;
  metrics_listen?: string;
  crypto_threads?: number;
  key?: KeyInput[];
  export?: ExportInput[];
  attach?: AttachInput[];
  client?: ClientInput;
  limits?: LimitsInput;
}

// ---- resolved ---------------------------------------------------------------------------

export interface Reliability {
  resendIntervalMs: number;
  maxResends: number;
  deadlineMs: number;
  reconnectMinMs: number;
  reconnectMaxMs: number;
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  replayBufferBytes: number;
  inflightMax: number;
  /** Requests a client keeps outstanding before it waits (engine queueDepth). */
  queueDepth: number;
  /** DST connections (links) to the export, used when it grants multi-connection consistency. */
  links: number;
}

/** Resolved `[limits]` (milliseconds and counts). */
export interface LimitsConfig {
  readonly handshakeTimeoutMs: number;
  readonly frameTimeoutMs: number;
  readonly maxConnections: number;
  readonly maxUnauthenticated: number;
  readonly maxUnauthenticatedPerSource: number;
}

export type KeyConfig =
  | { readonly identity: string; readonly kind: "file"; readonly path: string }
  | { readonly identity: string; readonly kind: "secret"; readonly secret: Uint8Array };

export type BackendConfig =
  | { readonly kind: "file"; readonly path: string; readonly sizeBytes: number | null }
  | { readonly kind: "device"; readonly path: string }
  | { readonly kind: "memory"; readonly sizeBytes: number }
  /** A storage tree (config/tree.ts, docs/tree.md). */
  | { readonly kind: "tree"; readonly root: TreeNodeSpec }
  /** A Ceph RBD image (config/rbd.ts, docs/rbd.md). */
  | { readonly kind: "rbd"; readonly rbd: RbdSpec };

/** A Ceph RBD image and how to reach its cluster (`rbd = "POOL/IMAGE[@SNAP]"`, docs/rbd.md). */
export interface RbdSpec {
  readonly pool: string;
  /** RADOS namespace (`POOL/NAMESPACE/IMAGE`); null: the default one. */
  readonly namespace: string | null;
  readonly image: string;
  /** Serve this snapshot (read-only); null: the image head. */
  readonly snapshot: string | null;
  /** ceph.conf; null: librados's default search (CEPH_CONF, /etc/ceph/ceph.conf). */
  readonly conf: string | null;
  /** Client id without "client."; null: librados's default ("admin"). */
  readonly id: string | null;
  readonly keyring: string | null;
}

export interface ExportConfig {
  readonly name: string;
  readonly description: string;
  readonly backend: BackendConfig;
  readonly listen: readonly ListenAddress[];
  readonly nbdListen: readonly ListenAddress[];
  readonly readOnly: boolean;
  readonly allow: readonly AllowRule[];
  /** Suites this export allows; the client's preference order decides among them. */
  readonly suites: readonly SuiteName[];
  readonly checksums: readonly ChecksumName[];
  /** `[export.replication]` (docs/replication.md §11); null: not replicated. */
  readonly replication?: ReplicationConfig | null;
}

/** An export's replication log and role (config/replication.ts reads it). */
export interface ReplicationConfig {
  readonly logDir: string;
  /** Primary: most bytes its log holds (past the high-water mark it writes around it). */
  readonly logSize: number;
  readonly role: "primary" | "secondary";
  /** Secondary: its primary's export. */
  readonly peer: ExportUrl | null;
  /** Secondary: the identity key it fetches with; null: anonymous (loopback only). */
  readonly keyFile: string | null;
  readonly replayDelayMs: number;
  /** Secondary: ask for zstd-compressed FETCH answers (docs/protocol.md §11.1). */
  readonly compress: boolean;
  /** Secondary: most bytes per second the shipping takes on the wire; 0: no cap. */
  readonly bandwidth: number;
}

export interface AttachConfig {
  readonly url: ExportUrl;
  /** null: pick the first free /dev/nbdN. */
  readonly device: string | null;
  readonly nbdListen: ListenAddress | null;
  /** Sockets a kernel attachment gives /dev/nbdN (NBD_ATTR_SOCKETS entries). */
  readonly connections: number;
  readonly keyFile: string | null;
  /** Offered in this preference order. */
  readonly suites: readonly SuiteName[];
  readonly checksums: readonly ChecksumName[];
  readonly reliability: Readonly<Reliability>;
}

export interface ClientConfig {
  readonly keyFile: string | null;
  readonly suites: readonly SuiteName[];
  readonly checksums: readonly ChecksumName[];
  readonly reliability: Readonly<Reliability>;
}

export interface Config {
  readonly logLevel: LogLevel;
  readonly stateDir: string;
  readonly logFormat: LogFormat;
  /** Where `dstd up` serves Prometheus metrics; null: nowhere. */
  readonly metricsListen: ListenAddress | null;
  /** Worker threads sealing and opening AES-256-GCM records (transport/crypto-pool.ts); 0: inline. */
  readonly cryptoThreads: number;
  readonly keys: readonly KeyConfig[];
  readonly exports: readonly ExportConfig[];
  readonly attaches: readonly AttachConfig[];
  readonly client: ClientConfig;
  readonly limits: LimitsConfig;
}

/** A storage tree as configured (docs/tree.md "Configuration"; config/tree.ts reads it). */
export type TreeNodeSpec =
  | { readonly kind: "file"; readonly path: string; readonly sizeBytes: number | null }
  | { readonly kind: "device"; readonly path: string }
  | { readonly kind: "memory"; readonly sizeBytes: number }
  /** A Ceph RBD image (docs/rbd.md "As a tree leg"). */
  | { readonly kind: "rbd"; readonly rbd: RbdSpec }
  | {
      readonly kind: "remote";
      readonly url: ExportUrl;
      /** Identity key to authenticate with; null: anonymous (loopback and Unix sockets only). */
      readonly keyFile: string | null;
      readonly suites: readonly SuiteName[];
      readonly checksums: readonly ChecksumName[];
      readonly reliability: Readonly<Reliability>;
    }
  | { readonly kind: "linear"; readonly legs: readonly TreeLegSpec[] }
  | { readonly kind: "stripe"; readonly legs: readonly TreeLegSpec[]; readonly chunkBytes: number }
  | { readonly kind: "mirror"; readonly legs: readonly TreeLegSpec[]; readonly readPolicy: ReadPolicy; readonly assumeClean: boolean };

export interface TreeLegSpec {
  readonly node: TreeNodeSpec;
  /** Mirror legs: never read while another leg is in sync (a WAN leg). */
  readonly writeMostly: boolean;
  /** Shown in status and logs: the URL, the path, or the node's name. */
  readonly label: string;
}

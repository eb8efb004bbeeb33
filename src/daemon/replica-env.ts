/**
 * @module daemon/replica-env — what a replica node (daemon/replica-node.ts) takes from its
 * surroundings: time, the link to its peer and options of the log layers. dstd passes real
 * timers and a DST client (PeerLink); the cluster simulation (test/replication/cluster-sim.ts)
 * passes simulated ones, so it runs the real promote/demote/fencing code.
 */
import type { ExportConfig } from "../config/types.ts";
import { loadKeyFile } from "../crypto/keys.ts";
import { DEFAULT_SUITES } from "../crypto/suites.ts";
import type { Log } from "../lib/log.ts";
import type { SyncTransport } from "../replication/initial-sync.ts";
import type { PrimaryOptions } from "../replication/primary-types.ts";
import type { SecondaryOptions } from "../replication/secondary.ts";
import type { FetchTransport } from "../replication/shipper.ts";
import { remoteAddress } from "../storage/remote/remote-port.ts";
import { PeerLink } from "./peer-link.ts";

const realTimer = {
  now: () => performance.now(),
  after(ms: number, run: () => void): () => void {
    const timer = setTimeout(run, ms);
    return () => clearTimeout(timer);
  },
};

/** The link to the peer: FETCH (log shipping) and SYNC (initial sync, repair) over one connection. */
export interface ReplicaLink {
  transport: FetchTransport;
  sync: SyncTransport;
  close(): void;
}

/** What a replica node takes from its surroundings (real in dstd, simulated in tests). */
export interface ReplicaEnv {
  /** Milliseconds (monotonic) and timers. */
  timer: { now(): number; after(ms: number, run: () => void): () => void };
  /** Wall clock in µs (Lamport stamps, replay delay). */
  wallMicros(): number;
  /** A FETCH link to the peer; "fail": the first connection may fail (a probe). */
  link(firstContact: "retry" | "fail"): ReplicaLink;
  /** Extra options of every primary layer and secondary opened (tests: sizes, hooks). */
  primaryOptions?: Partial<PrimaryOptions>;
  secondaryOptions?: Partial<Omit<SecondaryOptions, "clock">>;
}

/** dstd's surroundings: real timers and wall clock, a DST client to the configured peer. */
export function productionEnv(config: ExportConfig, log: Log): ReplicaEnv {
  return {
    timer: realTimer,
    wallMicros: () => Date.now() * 1000,
    link: (firstContact) => peerLink(config, log, firstContact),
  };
}

function peerLink(config: ExportConfig, logger: Log, firstContact: "retry" | "fail"): PeerLink {
  const replication = config.replication!;
  const peer = replication.peer!;
  return new PeerLink(
    {
      address: remoteAddress(peer),
      exportName: peer.exportName,
      clientName: `dstd replica of ${config.name}`,
      log: logger,
      auth: replication.keyFile !== null ? { key: loadKeyFile(replication.keyFile), suites: DEFAULT_SUITES } : null,
      firstContact,
      // Shipping waits out any outage: a FETCH that fails is simply asked again.
      deadlineMs: firstContact === "fail" ? 10_000 : 60_000,
    },
    logger,
  );
}

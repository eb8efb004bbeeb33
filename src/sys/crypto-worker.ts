/**
 * @module sys/crypto-worker — the Worker entry that seals and opens AES-256-GCM records for
 * transport/crypto-pool.ts, with the system's OpenSSL (sys/libcrypto.ts), in the pool's shared
 * memory: a record lies in a slot as crypto/record.ts lays it out (u32 BE length | 16-byte tag
 * | body), is sealed or opened where it lies, and the answer is only the job's number and
 * whether the tag verified — no bytes cross in messages.
 *
 * One EVP context per lane (one direction of one connection); the nonce is built here from the
 * lane's direction and the record counter the main thread assigned (crypto/record.ts nextNonce:
 * direction u32 BE || counter u64 BE). A record that fails to open is zeroed before the answer
 * (no unauthenticated plaintext escapes, as crypto/aead.ts does inline).
 *
 * DSTD_CRYPTO_WORKER_EXIT_AFTER=N (tests only; read by the pool, which passes it in `init`):
 * the worker throws after N jobs, so the pool's handling of a dead worker can be checked
 * through real processes.
 *
 * Must be an extra entry point of every `bun build --compile` (build.ts).
 */
import { loadNativeGcm, type NativeGcm } from "./libcrypto.ts";
import type { PoolReply, PoolRequest } from "../transport/crypto-pool.ts";

declare const self: Worker;

const TAG = 16;
const HEADER = 4 + TAG;

let shared: SharedArrayBuffer | null = null;
let slotBytes = 0;
const lanes = new Map<number, { gcm: NativeGcm; seal: boolean; nonce: Uint8Array; view: DataView }>();
let exitAfter = 0;

function post(reply: PoolReply): void {
  self.postMessage(reply);
}

self.onmessage = (event: MessageEvent<PoolRequest>) => {
  const m = event.data;
  switch (m.t) {
    case "init": {
      shared = m.shared;
      slotBytes = m.slotBytes;
      exitAfter = m.exitAfter;
      const probe = loadNativeGcm(new Uint8Array(32), "seal");
      probe?.destroy();
      post({ t: "ready", ok: probe !== null });
      return;
    }
    case "lane": {
      const gcm = loadNativeGcm(m.key, m.role);
      m.key.fill(0);
      if (gcm === null) throw new Error("libcrypto.so.3 is missing in the crypto worker (Debian: libssl3)");
      const nonce = new Uint8Array(12);
      const view = new DataView(nonce.buffer);
      view.setUint32(0, m.direction);
      lanes.set(m.lane, { gcm, seal: m.role === "seal", nonce, view });
      return;
    }
    case "drop": {
      lanes.get(m.lane)?.gcm.destroy();
      lanes.delete(m.lane);
      return;
    }
    case "job": {
      if (exitAfter > 0 && --exitAfter === 0) throw new Error("crypto worker stopped on purpose (DSTD_CRYPTO_WORKER_EXIT_AFTER)");
      const lane = lanes.get(m.lane);
      if (lane === undefined || shared === null) throw new Error(`crypto job for unknown lane ${m.lane}`);
      const record = new Uint8Array(shared, m.slot * slotBytes, m.size);
      const body = record.subarray(HEADER);
      lane.view.setUint32(4, Math.floor(m.counter / 2 ** 32));
      lane.view.setUint32(8, m.counter >>> 0);
      lane.gcm.begin(lane.nonce, record.subarray(0, 4));
      lane.gcm.update(body, body);
      let ok = true;
      if (lane.seal) lane.gcm.finishSeal(record.subarray(4, HEADER));
      else {
        ok = lane.gcm.finishOpen(record.subarray(4, HEADER));
        if (!ok) body.fill(0);
      }
      post({ t: "done", job: m.job, ok });
      return;
    }
  }
};

/**
 * @module test/sim/nonce-watch — the nonce checker of keyed runs: every record a sealer seals
 * (crypto/record.ts) must use a nonce that sealer never used before. An AEAD nonce used twice
 * under one key leaks the XOR of two plaintexts (and, for GCM, the authentication key): the
 * peer's opener may even accept it when both ends make the same mistake, so no other checker
 * would notice. Nonce = direction || record counter, so "never used" is "the counter only
 * grows" per sealer (one sealer per key and direction: keys are fresh per handshake).
 *
 * Watches by wrapping RecordSealer.prototype.nextNonce once, in this test process only.
 * `plantReuse` is the planted bug that proves the checker fails: it makes export-side sealers
 * seal every `plantReuse`th record with the previous record's nonce.
 */
import { RecordSealer } from "../../src/crypto/record.ts";

interface SealerView {
  counter: number;
  nextNonce(): Uint8Array;
}

const lastCounter = new WeakMap<object, number>();
let installed = false;
let planted = 0;

export const nonceWatch = {
  /** Told of a reused nonce (the harness turns it into a violation). */
  onReuse: null as ((detail: string) => void) | null,
  /** Planted bug (checker tests only): export-side sealers reuse a nonce every n-th record; 0 = off. */
  plantReuse: 0,
  sealed: 0,
};

export function installNonceWatch(): void {
  if (installed) return;
  installed = true;
  const proto = RecordSealer.prototype as unknown as SealerView;
  const original = proto.nextNonce;
  proto.nextNonce = function (this: SealerView): Uint8Array {
    const direction = (original.call(this)[3] ?? 0) as number; // the nonce's first word
    if (nonceWatch.plantReuse > 0 && direction === 1 && this.counter > 0 && ++planted % nonceWatch.plantReuse === 0) this.counter--;
    const nonce = original.call(this);
    nonceWatch.sealed++;
    const last = lastCounter.get(this);
    if (last !== undefined && this.counter <= last) {
      nonceWatch.onReuse?.(`${direction === 0 ? "the client's" : "the export's"} sealer sealed record ${this.counter} after record ${last}: nonce reused under one key`);
    }
    lastCounter.set(this, this.counter);
    return nonce;
  };
}

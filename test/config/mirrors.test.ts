/**
 * config/ may import only lib/ (design/anchors.md import table), so it keeps its own copies
 * of a few constants owned elsewhere. This file pins each copy to its owner, so a change on
 * one side without the other fails here rather than as a refused handshake at run time.
 */
import { expect, test } from "bun:test";
import {
  CHECKSUM_NAMES,
  DEFAULT_CHECKSUMS,
  DEFAULT_DST_PORT,
  DEFAULT_SUITES,
  KEY_BYTES,
  SUITE_NAMES,
} from "../../src/config/defaults.ts";
import * as checksum from "../../src/crypto/checksum.ts";
import * as keys from "../../src/crypto/keys.ts";
import * as suites from "../../src/crypto/suites.ts";
import { DST_PORT } from "../../src/wire/dst/constants.ts";

test("suite names and default suites mirror crypto/suites.ts", () => {
  expect(SUITE_NAMES).toEqual([...suites.SUITE_NAMES]);
  expect(DEFAULT_SUITES).toEqual([...suites.DEFAULT_SUITES]);
});

test("checksum names and defaults mirror crypto/checksum.ts", () => {
  expect(CHECKSUM_NAMES).toEqual([...checksum.CHECKSUM_NAMES]);
  expect(DEFAULT_CHECKSUMS).toEqual([...checksum.DEFAULT_CHECKSUMS]);
});

test("key size mirrors crypto/keys.ts, default port mirrors wire/dst/constants.ts", () => {
  expect(KEY_BYTES).toBe(keys.SECRET_SIZE);
  expect(DEFAULT_DST_PORT).toBe(DST_PORT);
});

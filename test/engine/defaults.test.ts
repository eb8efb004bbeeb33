/**
 * The engine's built-in defaults (used when no config is given, e.g. by tests and benches)
 * and the config's defaults (what users get) must be one set of numbers.
 */
import { expect, test } from "bun:test";
import { DEFAULT_RELIABILITY } from "../../src/config/defaults.ts";
import { ENGINE_DEFAULTS } from "../../src/engine/options.ts";

test("engine defaults equal the config defaults", () => {
  const { inflightMax, connections: _connections, ...rest } = DEFAULT_RELIABILITY;
  expect({ ...rest, inflight: inflightMax }).toEqual({
    queueDepth: ENGINE_DEFAULTS.queueDepth,
    resendIntervalMs: ENGINE_DEFAULTS.resendIntervalMs,
    maxResends: ENGINE_DEFAULTS.maxResends,
    deadlineMs: ENGINE_DEFAULTS.deadlineMs,
    reconnectMinMs: ENGINE_DEFAULTS.reconnectMinMs,
    reconnectMaxMs: ENGINE_DEFAULTS.reconnectMaxMs,
    keepaliveIntervalMs: ENGINE_DEFAULTS.keepaliveIntervalMs,
    keepaliveTimeoutMs: ENGINE_DEFAULTS.keepaliveTimeoutMs,
    replayBufferBytes: ENGINE_DEFAULTS.replayBufferBytes,
    inflight: ENGINE_DEFAULTS.inflight,
  });
});

/**
 * @module test/storage/port-contract.test — the asynchronous port contract (port-contract.ts)
 * against a memory disk behind storage/local/port.ts: the canary showing the suite holds for a
 * port known to be right, before it judges the RBD port.
 */
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { portContract } from "./port-contract.ts";

portContract("memory", {
  open: async ({ readOnly }) => createLocalPort(createMemoryBackend(16 << 20, { readOnly }), { readOnly }),
  resizes: true,
});

/**
 * `max_connections` bounds the connections of the whole `dstd up` process (docs/security.md
 * "Resource limits"), not of each unit: every export group (and attachment endpoint) draws
 * on one budget, so several groups cannot together promise more connections than the
 * descriptor limit leaves. Before, each group made its own budget of max_connections.
 * A real node with two export groups (two listen addresses) and max_connections = 4.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary } from "../helpers/binary.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";
import { until } from "../helpers/wait.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-budget-"));
let node: NodeProcess;
const ports: number[] = [];


beforeAll(async () => {
  ensureBinary();
  ports.push(freeLoopbackPort(), freeLoopbackPort());
  const config = join(dir, "dstd.toml");
  writeFileSync(
    config,
    `state_dir = "${join(dir, "state")}"

[limits]
max_connections = 4
max_unauthenticated_per_source = 16

${ports.map((port, i) => `[[export]]\nname = "m${i}"\nmemory = "16MiB"\nlisten = "127.0.0.1:${port}"\nallow = ["127.0.0.1/32:rw"]\n`).join("\n")}`,
  );
  node = startNode(["--config", config], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("ready:", "the node to be ready", 30_000);
}, 60_000);

afterAll(async () => {
  await node?.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

test("two export groups share one budget of max_connections: of 3 + 3 idle connections, at most 4 stay open", async () => {
  let open = 0;
  let closed = 0;
  const sockets = [];
  for (const port of ports) {
    for (let i = 0; i < 3; i++) {
      sockets.push(
        await Bun.connect({
          hostname: "127.0.0.1",
          port,
          socket: { open: () => void open++, data() {}, close: () => void closed++ },
        }),
      );
    }
  }
  await until(() => closed >= 2, "the node to close the connections past its budget", 10_000);
  expect(open).toBe(6);
  expect(6 - closed).toBeLessThanOrEqual(4);
  for (const socket of sockets) socket.end();
}, 30_000);

/**
 * `dstd up` moving `metrics_listen` on reload (daemon/node.ts): a move to an address another
 * program holds is reported ("metrics are off until a reload binds it") and the node keeps
 * running; the next reload, with the same file, binds it once it is free. Real process,
 * real `dstd reload`, real scrapes.
 */
import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ensureBinary, runDstd } from "../helpers/binary.ts";
import { startNode, type NodeProcess } from "../helpers/node-process.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-metrics-move-"));
const stateDir = join(dir, "state");
const configPath = join(dir, "dstd.toml");
let node: NodeProcess;


const config = (metricsPort: number) => `state_dir = "${stateDir}"
metrics_listen = "127.0.0.1:${metricsPort}"

[[export]]
name = "m"
memory = "16MiB"
listen = "127.0.0.1:0"
allow = ["127.0.0.1/32:rw"]
`;

const scrape = async (port: number) => (await fetch(`http://127.0.0.1:${port}/metrics`)).status;

let first = 0;
beforeAll(async () => {
  ensureBinary();
  first = freeLoopbackPort();
  writeFileSync(configPath, config(first));
  node = startNode(["--config", configPath], { DSTD_STATE_DIR: undefined, NOTIFY_SOCKET: undefined });
  await node.waitForLog("ready:", "the node to be ready", 30_000);
}, 60_000);

afterAll(async () => {
  await node?.stop("SIGKILL");
  rmSync(dir, { recursive: true, force: true });
});

test("a move to a taken address is reported and metrics are off; the next reload binds it once free", async () => {
  expect(await scrape(first)).toBe(200);
  const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const second = holder.port;
  writeFileSync(configPath, config(second));
  const refused = await runDstd(["reload", "--state-dir", stateDir]);
  expect(`${refused.stdout}${refused.stderr}`).toContain("metrics are off until a reload binds it");
  await expect(scrape(first)).rejects.toThrow(); // the old address was let go
  holder.stop(true);
  const retried = await runDstd(["reload", "--state-dir", stateDir]); // the same file
  expect(retried.exitCode).toBe(0);
  expect(`${retried.stdout}${retried.stderr}`).toContain(`metrics on 127.0.0.1:${second}`);
  expect(await scrape(second)).toBe(200);
}, 60_000);

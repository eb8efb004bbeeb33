/**
 * `dstd export --linear` (docs/tree.md "The layout record"): with --state-dir the
 * node records where each leg's data lies and a leg that grew while it was stopped keeps its
 * place; without it the node serves and says, once, that nothing records its layout; a
 * record that no longer fits the legs refuses the start, naming the leg and the record.
 * Compiled binary, real files and sockets.
 */
import { afterAll, afterEach, expect, test } from "bun:test";
import { existsSync, readFileSync, truncateSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { DstClient } from "../../src/client/dst-client.ts";
import { ensureBinary } from "../helpers/binary.ts";
import { readFileAt, scratchDir } from "../helpers/files.ts";
import { freeLoopbackPort } from "../helpers/ports.ts";
import { until } from "../helpers/wait.ts";

const MiB = 1024 * 1024;
const scratch = scratchDir("export-linear");
afterAll(() => scratch.remove());
const running = new Set<Subprocess>();
afterEach(async () => {
  for (const proc of running) {
    proc.kill("SIGTERM");
    await proc.exited;
  }
  running.clear();
});

const [a, b] = [join(scratch.path, "a.img"), join(scratch.path, "b.img")];
const stateDir = join(scratch.path, "state");

/** `dstd export --linear a --linear b` on a free port; resolves once it listens or has exited. */
async function exportLinear(extra: string[]): Promise<{ proc: Subprocess; port: number; log: () => string }> {
  const port = freeLoopbackPort();
  const proc = Bun.spawn([ensureBinary(), "export", "--linear", a, "--linear", b, "--listen", `127.0.0.1:${port}`, "--allow", "127.0.0.1/32:rw", "--log-level", "info", ...extra], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  running.add(proc);
  let text = "";
  void (async () => {
    for await (const chunk of proc.stderr) text += new TextDecoder().decode(chunk);
  })();
  await until(() => text.includes("listening for DST") || proc.exitCode !== null, "the linear export to listen or exit", 30_000);
  return { proc, port, log: () => text };
}

function client(port: number): Promise<DstClient> {
  return DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port }, exportName: "disk", log: { info() {}, warn() {} } });
}

test("with --state-dir the layout is recorded and a first leg grown while stopped does not move the second leg's data; without it the export warns", async () => {
  for (const path of [a, b]) {
    writeFileSync(path, new Uint8Array(0));
    truncateSync(path, 4 * MiB);
  }
  const first = await exportLinear(["--state-dir", stateDir]);
  expect(first.proc.exitCode).toBeNull();
  const c = await client(first.port);
  const data = new Uint8Array(64 * 1024).map((_, i) => (i * 5 + 1) & 0xff);
  try {
    expect(c.size).toBe(8 * MiB);
    await c.write(4 * MiB, data); // the start of b
    await c.flush();
  } finally {
    await c.close();
  }
  first.proc.kill("SIGTERM");
  await first.proc.exited;
  expect(Buffer.compare(readFileAt(b, 0, data.length), data)).toBe(0);
  const record = JSON.parse(readFileSync(join(stateDir, "layout", "disk.json"), "utf8"));
  expect(record.nodes[""].legs).toEqual([
    { label: a, bytes: 4 * MiB },
    { label: b, bytes: 4 * MiB },
  ]);
  expect(first.log()).not.toContain("its layout is not recorded");

  truncateSync(a, 6 * MiB);
  const second = await exportLinear(["--state-dir", stateDir]);
  expect(second.log()).toContain(`leg 0 ${a} is 6 MiB; it keeps its place of 4 MiB so that the legs after it do not move`);
  const again = await client(second.port);
  try {
    expect(again.size).toBe(8 * MiB);
    expect(Buffer.compare(await again.read(4 * MiB, data.length), data)).toBe(0);
  } finally {
    await again.close();
  }
  second.proc.kill("SIGTERM");
  await second.proc.exited;

  // A leg smaller than its place refuses the start, naming the leg and the record.
  truncateSync(a, 2 * MiB);
  const refused = await exportLinear(["--state-dir", stateDir]);
  expect(await refused.proc.exited).not.toBe(0);
  expect(refused.log()).toContain(`leg 0 ${a} is 2 MiB and the node placed 4 MiB of data on it`);
  expect(refused.log()).toContain(join(stateDir, "layout", "disk.json"));

  // Without --state-dir: served by the sizes now, with the warning.
  const bare = await exportLinear([]);
  expect(bare.proc.exitCode).toBeNull();
  expect(bare.log()).toContain("the linear root: its layout is not recorded (no state directory)");
  expect(existsSync(join(scratch.path, "layout"))).toBe(false);
}, 60_000);

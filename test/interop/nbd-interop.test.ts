/**
 * @module test/interop/nbd-interop — dstd's NBD server against real clients: libnbd's nbdinfo,
 * nbdcopy and nbdsh, and qemu-img / qemu-io, over TCP (127.0.0.1, ephemeral port) and a Unix
 * socket. Tools come from Debian packages (libnbd-bin, python3-libnbd for nbdsh, qemu-utils);
 * a missing tool skips its tests and names the package.
 *
 * The server runs in this process, so every client is spawned asynchronously (a synchronous
 * spawn would block the event loop the server needs).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openFileBackend } from "../../src/storage/local/file.ts";
import { createMemoryBackend } from "../../src/storage/local/memory.ts";
import type { Backend } from "../../src/storage/local/backend.ts";
import { createLocalPort } from "../../src/storage/local/port.ts";
import { acceptNbd } from "../../src/nbd/connection.ts";
import type { StoragePort } from "../../src/storage/port.ts";
import { listen, type Listener } from "../../src/transport/tcp.ts";
import { randomBytes } from "../nbd/harness.ts";

const MiB = 1 << 20;
const have = (tool: string) => Bun.which(tool) !== null;
const libnbd = have("nbdinfo") && have("nbdcopy");
const qemu = have("qemu-img") && have("qemu-io");
const nbdsh = have("nbdsh");
if (!libnbd) console.warn("nbd interop: nbdinfo/nbdcopy missing — install Debian package libnbd-bin");
if (!qemu) console.warn("nbd interop: qemu-img/qemu-io missing — install Debian package qemu-utils");
if (!nbdsh) console.warn("nbd interop: nbdsh missing — install Debian package python3-libnbd");

let dir = "";
let listener: Listener;
let tcp = "";
let socketPath = "";
const backends: Backend[] = [];
const logs: string[] = [];

function url(name: string, transport: "tcp" | "unix" = "tcp"): string {
  return transport === "tcp" ? `nbd://${tcp}/${name}` : `nbd+unix:///${name}?socket=${socketPath}`;
}

async function run(cmd: string[], input?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  // nbdsh runs `env python3`: make it the system Python that python3-libnbd installed into,
  // not a python3 from a version manager earlier on PATH.
  const env = { ...process.env, PATH: `/usr/bin:/bin:${process.env.PATH ?? ""}` };
  const proc = Bun.spawn(cmd, { stdin: input === undefined ? "ignore" : new TextEncoder().encode(input), stdout: "pipe", stderr: "pipe", env });
  const [stdout, stderr, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, stdout, stderr };
}

async function ok(cmd: string[], input?: string): Promise<string> {
  const result = await run(cmd, input);
  if (result.code !== 0) throw new Error(`${cmd.join(" ")} exited ${result.code}:\n${result.stderr}${result.stdout}`);
  return result.stdout;
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "dstd-nbd-interop-"));
  socketPath = join(dir, "nbd.sock");
  const disk = openFileBackend(join(dir, "disk.img"), { size: 64 * MiB });
  writeFileSync(join(dir, "ro.img"), randomBytes(4 * MiB, 11));
  const ro = openFileBackend(join(dir, "ro.img"), { readOnly: true });
  const mem = createMemoryBackend(16 * MiB);
  backends.push(disk, ro, mem);
  const targets = new Map<string, StoragePort>([
    ["disk", createLocalPort(disk, { description: "interop disk" })],
    ["ro", createLocalPort(ro, { description: "read-only image" })],
    ["mem", createLocalPort(mem, { description: "memory" })],
  ]);
  listener = await listen(
    [
      { transport: "tcp", host: "127.0.0.1", port: 0 },
      { transport: "unix", path: socketPath },
    ],
    acceptNbd({
      resolve(name, peer) {
        if (name === "secret") return { refuse: `${peer.address} is not on the allow list of "secret"`, code: "policy" };
        const target = targets.get(name);
        if (!target) return { refuse: `no export named ${JSON.stringify(name)}` };
        return { target, access: "rw" };
      },
      list: () => [...targets].map(([name, t]) => ({ name, description: t.description })),
      log: { info: (m) => logs.push(m), warn: (m) => logs.push(`warn: ${m}`) },
    }),
  );
  const bound = listener.bound[0]!;
  if (bound.transport !== "tcp") throw new Error("expected a TCP listener first");
  tcp = `127.0.0.1:${bound.port}`;
});

afterAll(async () => {
  await listener?.close();
  for (const backend of backends) backend.close();
  rmSync(dir, { recursive: true, force: true });
});

describe.skipIf(!libnbd)("libnbd clients (libnbd-bin)", () => {
  test("nbdinfo --json reports size, flags and base:allocation", async () => {
    const info = JSON.parse(await ok(["nbdinfo", "--json", url("disk")]));
    expect(info.protocol).toBe("newstyle-fixed");
    expect(info.structured).toBe(true);
    const disk = info.exports[0];
    expect(disk["export-size"]).toBe(64 * MiB);
    expect(disk.description).toBe("interop disk");
    expect(disk.contexts).toContain("base:allocation");
    for (const flag of ["can_trim", "can_zero", "can_fast_zero", "can_fua", "can_flush", "can_cache", "can_df", "can_multi_conn"]) {
      expect([flag, disk[flag]]).toEqual([flag, true]);
    }
    expect(disk.is_read_only).toBe(false);
    expect(disk.block_size_preferred).toBe(4096);
    expect(disk.block_size_maximum).toBe(32 * MiB);
  });

  test("a read-only export shows read-only and no trim/zero", async () => {
    const info = JSON.parse(await ok(["nbdinfo", "--json", url("ro", "unix")]));
    const ro = info.exports[0];
    expect(ro.is_read_only).toBe(true);
    expect(ro.can_trim).toBe(false);
    expect(ro.can_zero).toBe(false);
    expect(ro["export-size"]).toBe(4 * MiB);
  });

  test("nbdinfo --list shows every export with its description", async () => {
    const out = await ok(["nbdinfo", "--list", "--json", url("")]);
    const names = JSON.parse(out).exports.map((e: { "export-name": string; description: string }) => [e["export-name"], e.description]);
    expect(names).toEqual([["disk", "interop disk"], ["ro", "read-only image"], ["mem", "memory"]]);
  });

  // libnbd 1.14 shows the server's message only in debug output; the reply type decides the errno.
  test("an unknown export name is refused with ERR_UNKNOWN and a message", async () => {
    const result = await run(["env", "LIBNBD_DEBUG=1", "nbdinfo", url("nope")]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("opt_go request: No such file or directory");
    expect(result.stderr).toContain('server error message: no export named "nope"');
  });

  test("an ACL refusal is ERR_POLICY naming the reason", async () => {
    const result = await run(["env", "LIBNBD_DEBUG=1", "nbdinfo", url("secret")]);
    expect(result.code).not.toBe(0);
    expect(result.stderr).toContain("server error message: 127.0.0.1 is not on the allow list");
  });

  for (const transport of ["tcp", "unix"] as const) {
    test(`nbdcopy copies a random image in and out with identical bytes (${transport})`, async () => {
      const image = randomBytes(16 * MiB, transport === "tcp" ? 21 : 22);
      image.fill(0, 4 * MiB, 8 * MiB); // a zero run nbdcopy may turn into zeroing
      const source = join(dir, `in-${transport}.img`);
      const back = join(dir, `out-${transport}.img`);
      writeFileSync(source, image);
      await ok(["nbdcopy", source, url("mem", transport)]);
      await ok(["nbdcopy", url("mem", transport), back]);
      expect(Buffer.compare(readFileSync(back), Buffer.from(image))).toBe(0);
    });
  }

  test("nbdinfo --map shows data and holes of the sparse file", async () => {
    await ok(["nbdcopy", "--destination-is-zero", "--", join(dir, "in-tcp.img"), url("disk")]);
    await ok(["nbdcopy", "--", join(dir, "in-tcp.img"), url("disk")]);
    const map = JSON.parse(await ok(["nbdinfo", "--map", "--json", url("disk")])) as Array<{ offset: number; length: number; type: number }>;
    const at = (offset: number) => map.find((e) => e.offset <= offset && offset < e.offset + e.length)!;
    expect(at(0).type & 1).toBe(0); // data
    expect(at(40 * MiB).type).toBe(3); // hole + zero beyond what was written
    expect(map.reduce((n, e) => n + e.length, 0)).toBe(64 * MiB);
  });
});

describe.skipIf(!qemu)("qemu clients (qemu-utils)", () => {
  test("qemu-img convert into the export, then compare", async () => {
    const source = join(dir, "qemu-src.img");
    writeFileSync(source, randomBytes(16 * MiB, 31));
    await ok(["qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", source, url("mem")]);
    await ok(["qemu-img", "compare", "-f", "raw", "-F", "raw", source, url("mem")]);
    await ok(["qemu-img", "compare", "-f", "raw", "-F", "raw", source, url("mem", "unix")]);
  });

  test("qemu-io write-then-verify patterns, zeroes, discard and flush", async () => {
    const out = await ok([
      "qemu-io", "-f", "raw", url("disk"),
      "-c", "write -P 0xab 0 1M",
      "-c", "read -P 0xab 0 1M",
      "-c", "write -P 0x5a -f 1M 64k",
      "-c", "read -P 0x5a 1M 64k",
      "-c", "write -z 2M 1M",
      "-c", "read -P 0 2M 1M",
      "-c", "write -z -u 3M 1M",
      "-c", "read -P 0 3M 1M",
      "-c", "discard 4M 1M",
      "-c", "flush",
      "-c", "aio_write -P 0x11 5M 4k",
      "-c", "aio_write -P 0x22 6M 4k",
      "-c", "aio_flush",
      "-c", "read -P 0x11 5M 4k",
      "-c", "read -P 0x22 6M 4k",
    ]);
    expect(out).not.toContain("Pattern verification failed");
    expect(out.match(/read \d+\/\d+ bytes/g)?.length).toBe(6);
  });

  test("qemu-io on a read-only export: reads work, writes are refused", async () => {
    expect(await ok(["qemu-io", "-r", "-f", "raw", url("ro"), "-c", "read 0 64k"])).toContain("read 65536/65536 bytes");
    const result = await run(["qemu-io", "-f", "raw", url("ro"), "-c", "write -P 1 0 4k"]);
    expect(`${result.stdout}${result.stderr}`).toMatch(/Operation not permitted|read-only|Permission denied/i);
    expect(readFileSync(join(dir, "ro.img")).subarray(0, 4096)).toEqual(Buffer.from(randomBytes(4 * MiB, 11).subarray(0, 4096)));
  });

  test("qemu shows the server's refusal messages", async () => {
    const unknown = await run(["qemu-img", "info", url("nope")]);
    expect(unknown.stderr).toContain("Requested export not available");
    expect(unknown.stderr).toContain('server reported: no export named "nope"');
    const denied = await run(["qemu-img", "info", url("secret", "unix")]);
    expect(denied.stderr).toContain("Denied by server");
    expect(denied.stderr).toContain("not on the allow list");
  });

  test("qemu-img map sees the allocation through base:allocation", async () => {
    await ok(["qemu-io", "-f", "raw", url("disk"), "-c", "write -P 1 8M 1M", "-c", "discard 9M 7M"]);
    const map = JSON.parse(await ok(["qemu-img", "map", "--output=json", "-f", "raw", url("disk")])) as Array<{ start: number; length: number; data: boolean; zero: boolean }>;
    const at = (offset: number) => map.find((e) => e.start <= offset && offset < e.start + e.length)!;
    expect(at(8 * MiB).data).toBe(true);
    expect(at(12 * MiB)).toMatchObject({ data: false, zero: true });
  });
});

describe.skipIf(!nbdsh)("nbdsh (python3-libnbd)", () => {
  test("block_status, trim, zero and flush through libnbd's API", async () => {
    // The memory export frees whole 1 MiB chunks on trim, so the map below is exact.
    const script = [
      "import errno",
      'h.add_meta_context("base:allocation")',
      `h.connect_uri("${url("mem")}")`,
      'h.pwrite(b"\\x07" * 2097152, 0)',
      "h.flush()",
      "h.zero(65536, 0, nbd.CMD_FLAG_NO_HOLE)",
      "assert h.pread(65536, 0) == bytes(65536)",
      'assert h.pread(4096, 65536) == b"\\x07" * 4096',
      "h.trim(1048576, 1048576)",
      "h.flush()",
      "seen = []",
      "def extent(ctx, offset, entries, err):",
      "    seen.append((ctx, offset, list(entries)))",
      "    return 0",
      "h.block_status(2097152, 0, extent)",
      'assert seen == [("base:allocation", 0, [1048576, 0, 1048576, 3])], seen',
      "h.zero(4096, 8192, nbd.CMD_FLAG_FAST_ZERO)",
      "assert h.pread(4096, 8192) == bytes(4096)",
      'print("OK", h.get_size(), h.can_meta_context("base:allocation"), h.can_fast_zero())',
    ].join("\n");
    const out = await ok(["nbdsh", "-c", script]);
    expect(out.trim()).toBe(`OK ${16 * MiB} True True`);
  });
});

test("no connection left warnings behind", () => {
  expect(logs.filter((l) => l.startsWith("warn:") && !l.includes("refused"))).toEqual([]);
});

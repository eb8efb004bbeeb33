/**
 * `crypto_threads` through real processes (the compiled dstd, AES-256-GCM sessions with a
 * generated key): `dstd copy` into and out of `dstd export --file` with 0, 1 and 2 crypto
 * threads on each side gives the same bytes; a record corrupted on the wire is still refused
 * by an export opening records on its workers (and the copy recovers by reconnecting and
 * replaying); a crypto worker that dies — in the export or in the copy — closes the connections
 * whose records it held, says why at error level, and the copy still ends with the right bytes.
 * Workers die on cue through DSTD_CRYPTO_WORKER_EXIT_AFTER (sys/crypto-worker.ts).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync, truncateSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { generateKeyFile } from "../../src/crypto/keys.ts";
import { loadNativeGcm } from "../../src/sys/libcrypto.ts";
import { runDstd, startExport, type RunningExport } from "../helpers/binary.ts";
import { scratchDir, writeRandomFile } from "../helpers/files.ts";

const MiB = 1024 * 1024;
const SIZE = 24 * MiB;
const haveLibcrypto = loadNativeGcm(new Uint8Array(32), "seal") !== null;
const dir = scratchDir("crypto-threads");
const source = join(dir.path, "source.img");
const keyPath = join(dir.path, "copy.key");
const clientConfig = join(dir.path, "client.toml");

beforeAll(() => {
  writeRandomFile(source, SIZE);
  writeFileSync(keyPath, generateKeyFile("copier"), { mode: 0o600 });
  writeFileSync(clientConfig, `[client]\nkey_file = "${keyPath}"\nsuites = ["aes-256-gcm"]\n`);
});
afterAll(() => dir.remove());

/** An export of a fresh file, sealed sessions only, with `threads` crypto threads. */
async function sealedExport(name: string, threads: number, env: Record<string, string> = {}): Promise<{ exp: RunningExport; disk: string }> {
  const disk = join(dir.path, `${name}.img`);
  writeFileSync(disk, new Uint8Array(0));
  truncateSync(disk, SIZE);
  const config = join(dir.path, `${name}.toml`);
  writeFileSync(
    config,
    `[[key]]\nidentity = "copier"\nfile = "${keyPath}"\n\n[[export]]\nname = "disk"\nfile = "${disk}"\n` +
      `allow = ["copier@127.0.0.1/32:rw"]\nsuites = ["aes-256-gcm"]\n`,
  );
  const exp = await startExport(["--config", config, "--crypto-threads", String(threads), "--log-level", "info"], env);
  return { exp, disk };
}

async function copy(from: string, to: string, threads: number, env: Record<string, string> = {}) {
  return runDstd(["copy", from, to, "--config", clientConfig, "--crypto-threads", String(threads), "--log-level", "info"], env);
}

function same(a: string, b: string): boolean {
  return Buffer.compare(readFileSync(a), readFileSync(b)) === 0;
}

/** TCP relay that flips one bit of the client → export stream at `at`, on the first connection only. */
function corruptingRelay(upstreamPort: number, at: number): Promise<{ port: number; flipped: () => boolean; server: Server }> {
  let flipped = false;
  let first = true;
  const server = createServer((client: Socket) => {
    const corrupt = first;
    first = false;
    let seen = 0;
    const upstream = connect(upstreamPort, "127.0.0.1");
    client.on("data", (chunk: Buffer) => {
      if (corrupt && !flipped && seen + chunk.length > at) {
        chunk[at - seen]! ^= 0x04;
        flipped = true;
      }
      seen += chunk.length;
      upstream.write(chunk);
    });
    upstream.on("data", (chunk: Buffer) => client.write(chunk));
    const close = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("close", close);
    upstream.on("close", close);
    client.on("error", close);
    upstream.on("error", close);
  });
  return new Promise((resolve) => server.listen(0, "127.0.0.1", () => resolve({ port: (server.address() as { port: number }).port, flipped: () => flipped, server })));
}

describe.skipIf(!haveLibcrypto)("crypto_threads through real processes (needs libcrypto.so.3: Debian package libssl3)", () => {
  for (const [exportThreads, copyThreads] of [
    [0, 0],
    [1, 1],
    [2, 2],
    [2, 0],
    [0, 2],
  ] as const) {
    test(`export ${exportThreads} / copy ${copyThreads} crypto threads: the same bytes in and out`, async () => {
      const { exp, disk } = await sealedExport(`disk-${exportThreads}-${copyThreads}`, exportThreads);
      try {
        const url = `dst://127.0.0.1:${exp.port}/disk`;
        const written = await copy(source, url, copyThreads);
        expect(written.stderr).toContain("copied 24 MiB");
        expect(written.exitCode).toBe(0);
        const back = join(dir.path, `back-${exportThreads}-${copyThreads}.img`);
        const read = await copy(url, back, copyThreads);
        expect(read.exitCode).toBe(0);
        expect(same(source, disk)).toBe(true);
        expect(same(source, back)).toBe(true);
      } finally {
        await exp.stop();
      }
      expect(exp.log()).not.toContain("crypto worker");
      expect(exp.log()).toContain("suite aes-256-gcm");
    }, 60_000);
  }

  test("a corrupted record is refused by an export opening records on 2 threads; the copy reconnects and ends right", async () => {
    const { exp, disk } = await sealedExport("corrupt", 2);
    const relay = await corruptingRelay(exp.port, 5 * MiB + 12345);
    try {
      const copied = await copy(source, `dst://127.0.0.1:${relay.port}/disk`, 2);
      expect(relay.flipped()).toBe(true);
      expect(copied.exitCode).toBe(0);
      expect(copied.stderr).toContain("connection lost");
      expect(same(source, disk)).toBe(true);
    } finally {
      relay.server.close();
      await exp.stop();
    }
    expect(exp.log()).toContain("protocol error: record authentication failed (tampered, replayed or out of order)");
  }, 60_000);

  test("a crypto worker of the export dies: the connection closes with the reason, the copy reconnects and ends right", async () => {
    const { exp, disk } = await sealedExport("dies-export", 2, { DSTD_CRYPTO_WORKER_EXIT_AFTER: "3" });
    try {
      const copied = await copy(source, `dst://127.0.0.1:${exp.port}/disk`, 0);
      expect(copied.exitCode).toBe(0);
      expect(same(source, disk)).toBe(true);
    } finally {
      await exp.stop();
    }
    const log = exp.log();
    expect(log).toMatch(/ERROR .*crypto worker [12] of 2 died: crypto worker stopped on purpose \(DSTD_CRYPTO_WORKER_EXIT_AFTER\): connections with records in the crypto pool are closed/);
    expect(log).toMatch(/crypto worker failed: crypto worker [12] of 2 died.*closing the connection/);
  }, 60_000);

  test("a crypto worker of the copy dies: the copy drops that connection, reconnects inline and ends right", async () => {
    const { exp, disk } = await sealedExport("dies-copy", 0);
    try {
      const copied = await copy(source, `dst://127.0.0.1:${exp.port}/disk`, 2, { DSTD_CRYPTO_WORKER_EXIT_AFTER: "3" });
      expect(copied.stderr).toMatch(/crypto worker [12] of 2 died: crypto worker stopped on purpose/);
      expect(copied.stderr).toMatch(/crypto worker failed: crypto worker [12] of 2 died/);
      expect(copied.exitCode).toBe(0);
      expect(same(source, disk)).toBe(true);
    } finally {
      await exp.stop();
    }
  }, 60_000);
});

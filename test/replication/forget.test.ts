/**
 * A registered secondary that went away keeps the primary's log for ever: the log fills and
 * stays in overflow, and the real secondary never gets the regions written around it. Taking
 * its replica right away and reloading forgets it (docs/replication.md §12 "A secondary that is
 * gone"). Real `dstd up` nodes (test/replication/pair.ts), a third identity registering with a
 * SYNC BEGIN and leaving.
 */
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { DstClient } from "../../src/client/dst-client.ts";
import { loadKeyFile } from "../../src/crypto/keys.ts";
import { SyncKind } from "../../src/wire/dst/constants.ts";
import { encodeSyncRequest } from "../../src/wire/dst/sync.ts";
import { runDstd } from "../helpers/binary.ts";
import { hashPrefix, MiB, ReplicaPair, writeAt } from "./pair.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-forget-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test("a secondary that left pins the log in overflow; taking its replica right away and reloading forgets it, and the real secondary catches up", async () => {
  const pair = await ReplicaPair.in(dir, "pair", { size: 64 * MiB, logSize: "16MiB" });
  const { a, b } = pair;
  const siteC = pair.file("site-c.key");
  expect((await runDstd(["keygen", "--identity", "site-c", "--out", siteC])).exitCode).toBe(0);
  const granted = readFileSync(a.config, "utf8")
    .replace('[[export]]', `[[key]]\nidentity = "site-c"\nfile = "${siteC}"\n[[export]]`)
    .replace('"site-b@127.0.0.1:replica"]', '"site-b@127.0.0.1:replica", "site-c@127.0.0.1:replica"]');
  writeFileSync(a.config, granted);
  try {
    await pair.start(a);
    await pair.start(b);
    await writeAt(a.port, 0, 2 * MiB);
    await pair.caughtUp(30_000);

    // site-c registers (a SYNC BEGIN records it at the sync point) and is never heard of again.
    const c = await DstClient.open({ address: { transport: "tcp", host: "127.0.0.1", port: a.port }, exportName: "disk", log: { info() {}, warn() {} }, auth: { key: loadKeyFile(siteC), suites: ["aes-256-gcm"] } });
    const begun = await new Promise<number>((resolve) =>
      c.submit({ kind: "sync", offset: 0, length: 0, data: encodeSyncRequest({ kind: SyncKind.BEGIN, keepFrom: 0, chain: 0n, lamport: 0, generation: 0 }) }, (status) => resolve(status)),
    );
    expect(begun).toBe(0);
    await c.close();
    // 48 MiB more than the 16 MiB log: the log is kept for site-c, so it overflows and stays so.
    for (let at = 2 * MiB; at < 50 * MiB; at += 8 * MiB) await writeAt(a.port, at, 8 * MiB);
    const pinned = await pair.status(a);
    expect(pinned.mode).toBe("overflow");
    expect(pinned.secondaries.map((s) => s.name).sort()).toEqual(["site-b", "site-c"]);

    // After a restart site-c has not fetched, yet it is listed: it is whom the log waits for.
    await pair.stop(a);
    await pair.start(a);
    const silent = (await pair.status(a)).secondaries.find((s) => s.name === "site-c");
    expect(silent).toMatchObject({ name: "site-c", last_contact_seconds: null });
    const text = await pair.replica(a, "status", "disk");
    expect(text.stdout).toContain("secondary site-c: applied seq");
    expect(text.stdout).toContain("no fetch since this node started");

    // Its right taken away and the config reloaded: forgotten, the log drains, site-b catches up.
    writeFileSync(a.config, granted.replace(', "site-c@127.0.0.1:replica"]', "]"));
    const reload = await runDstd(["reload", "--state-dir", a.stateDir]);
    expect(reload.exitCode).toBe(0);
    expect(reload.stdout).toContain("secondary site-c");
    expect(reload.stdout).toContain("no longer has the replica right");
    const after = await pair.status(a);
    expect(after.secondaries.map((s) => s.name)).toEqual(["site-b"]);
    const caught = await pair.caughtUp(60_000);
    expect(caught.state).toBe("replicating");
    expect((await pair.status(a)).mode).toBe("logging");
    expect(hashPrefix(b.image, 50 * MiB)).toBe(hashPrefix(a.image, 50 * MiB));
  } finally {
    await pair.stop(b);
    await pair.stop(a);
    pair.proxy.close();
  }
}, 120_000);

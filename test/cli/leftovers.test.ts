/**
 * Tests leave nothing in the temporary directory (issue 14 item 11). A whole run used to
 * leave three folders: one from test/integration/dst-loopback.test.ts (its socket folder)
 * and one per call of test/helpers/unprivileged.ts (the snippet's folder). This runs the test
 * files that make them, with TMPDIR pointing at an empty folder, and expects it empty after.
 */
import { afterAll, expect, test } from "bun:test";
import { chmodSync, mkdirSync, readdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { scratchDir } from "../helpers/files.ts";

const root = resolve(import.meta.dir, "../..");
const scratch = scratchDir("cli-leftovers");
afterAll(() => scratch.remove());

test("test files that use temporary folders remove them", () => {
  const tmp = join(scratch.path, "tmp");
  // test/helpers/unprivileged.ts runs snippets as nobody from a folder in TMPDIR: let it in.
  chmodSync(scratch.path, 0o755);
  mkdirSync(tmp, { mode: 0o755 });
  const files = ["test/integration/dst-loopback.test.ts", "test/crypto/keys.test.ts", "test/storage/file.test.ts", "test/cli/listen-errors.test.ts"];
  const run = Bun.spawnSync([process.execPath, "test", ...files], {
    cwd: root,
    env: { ...process.env, TMPDIR: tmp },
    stdout: "pipe",
    stderr: "pipe",
  });
  expect(run.stderr.toString()).not.toContain("(fail)");
  expect(run.exitCode).toBe(0);
  expect(readdirSync(tmp)).toEqual([]);
}, 120_000);

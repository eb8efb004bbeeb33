/**
 * @module test/crypto/keys — key file generation, parsing, loading and writing: round trip,
 * permission refusal with the chmod hint, every malformed variant refused with a reason, and
 * no secret (base64 or hex) in any message.
 */
import { runUnprivileged } from "../helpers/unprivileged.ts";
import { afterAll, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  SECRET_SIZE,
  generateKeyFile,
  identityProblem,
  loadKeyFile,
  parseKeyFile,
  writeKeyFile,
  zero,
} from "../../src/crypto/keys.ts";
import { DstdError } from "../../src/lib/errors.ts";

const dir = mkdtempSync(join(tmpdir(), "dstd-keys-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
let counter = 0;
const fresh = (): string => join(dir, `k${counter++}.key`);

/** A file with exact `mode` (chmod after writing, so the umask does not interfere). */
function fileWith(text: string, mode = 0o600): string {
  const path = fresh();
  writeFileSync(path, text);
  chmodSync(path, mode);
  return path;
}

function keyError(fn: () => unknown): DstdError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(DstdError);
    expect((error as DstdError).code).toBe("E_KEY");
    return error as DstdError;
  }
  throw new Error("expected a DstdError E_KEY");
}

const SECRET_B64 = Buffer.from(Array.from({ length: 32 }, (_, i) => i * 7 + 3)).toString("base64");
const SECRET_HEX = Buffer.from(SECRET_B64, "base64").toString("hex");

describe("identities", () => {
  test.each(["alice", "a", "node-1.example_com", "A".repeat(64), "0", "..", "-_-"])(
    "accepts %p",
    (id) => {
      expect(identityProblem(id)).toBeNull();
    },
  );
  test.each(["", "A".repeat(65), "a b", "alice@host", "a/b", "é", "a\nb", 'a"b'])(
    "refuses %p",
    (id) => {
      expect(identityProblem(id)).toBeString();
    },
  );
});

describe("generateKeyFile / parseKeyFile", () => {
  test("round trip: identity and a 32-byte secret; two keys differ", () => {
    const a = parseKeyFile(generateKeyFile("alice"), "a");
    const b = parseKeyFile(generateKeyFile("alice"), "b");
    if (typeof a === "string" || typeof b === "string") throw new Error(`parse failed: ${a} ${b}`);
    expect(a.identity).toBe("alice");
    expect(a.secret.length).toBe(SECRET_SIZE);
    expect(a.secret).not.toEqual(b.secret);
  });

  test('the text is TOML-shaped: a comment, identity = "..", secret = "<44 base64 chars>"', () => {
    const text = generateKeyFile("bob.example");
    expect(text).toMatch(/^# .*\nidentity = "bob\.example"\nsecret = "[A-Za-z0-9+/]{43}="\n$/);
  });

  test("refuses an invalid identity with E_KEY", () => {
    expect(keyError(() => generateKeyFile("no spaces")).message).toContain(
      "identity may only contain",
    );
  });

  test("tolerates comments, blank lines, CRLF, a BOM, trailing comments and field order", () => {
    const text =
      `\uFEFF# comment\r\n\r\n  secret = "${SECRET_B64}"  # the key\r\n` + `identity="carol"\r\n`;
    const parsed = parseKeyFile(text, "f");
    if (typeof parsed === "string") throw new Error(parsed);
    expect(parsed.identity).toBe("carol");
    expect(Buffer.from(parsed.secret).toString("base64")).toBe(SECRET_B64);
  });

  const malformed: [string, string, string][] = [
    ["missing identity", `secret = "${SECRET_B64}"\n`, "missing field identity"],
    ["missing secret", `identity = "x"\n`, "missing field secret"],
    ["empty file", "", "missing field identity"],
    [
      "duplicate secret",
      `identity = "x"\nsecret = "${SECRET_B64}"\nsecret = "${SECRET_B64}"\n`,
      "line 3: duplicate field secret",
    ],
    [
      "unknown field",
      `identity = "x"\nsecret = "${SECRET_B64}"\nsecrte = "${SECRET_B64}"\n`,
      "line 3: unknown field",
    ],
    [
      "secret as field name",
      `identity = "x"\n${SECRET_B64.replace(/[+/=]/g, "A")} = "1"\n`,
      "line 2: unknown field",
    ],
    [
      "unquoted secret",
      `identity = "x"\nsecret = ${SECRET_B64}\n`,
      'line 2: expected name = "value"',
    ],
    [
      "single-quoted",
      `identity = "x"\nsecret = '${SECRET_B64}'\n`,
      'line 2: expected name = "value"',
    ],
    [
      "escape in string",
      `identity = "x"\nsecret = "\\u0041${SECRET_B64}"\n`,
      'line 2: expected name = "value"',
    ],
    [
      "garbage line holding the secret",
      `identity = "x"\n${SECRET_B64}\n`,
      'line 2: expected name = "value"',
    ],
    ["secret in hex", `identity = "x"\nsecret = "${SECRET_HEX}"\n`, "secret is 48 bytes"],
    [
      "not base64",
      `identity = "x"\nsecret = "${SECRET_B64.slice(0, 40)}!!!="\n`,
      "secret is not valid base64",
    ],
    [
      "31-byte secret",
      `identity = "x"\nsecret = "${Buffer.alloc(31, 5).toString("base64")}"\n`,
      "secret is 31 bytes; it must be 32",
    ],
    [
      "33-byte secret",
      `identity = "x"\nsecret = "${Buffer.alloc(33, 5).toString("base64")}"\n`,
      "secret is 33 bytes; it must be 32",
    ],
    [
      "all-zero secret",
      `identity = "x"\nsecret = "${Buffer.alloc(32).toString("base64")}"\n`,
      "all zero bytes",
    ],
    ["bad identity", `identity = "a b"\nsecret = "${SECRET_B64}"\n`, "identity may only contain"],
    [
      "secret as identity",
      `identity = "${SECRET_B64}"\nsecret = "${SECRET_B64}"\n`,
      "identity may only contain",
    ],
  ];

  test.each(malformed)("refuses %s with a reason and no secret in it", (_name, text, reason) => {
    const result = parseKeyFile(text, "key file /k");
    expect(result).toBeString();
    expect(result as string).toContain(reason);
    expect(result as string).toStartWith("key file /k");
    for (const secret of [
      SECRET_B64,
      SECRET_HEX,
      SECRET_B64.slice(0, 12),
      SECRET_HEX.slice(0, 12),
    ]) {
      expect(result as string).not.toContain(secret);
    }
  });
});

describe("loadKeyFile", () => {
  test("loads a 0600 file written by generateKeyFile", () => {
    const path = fileWith(generateKeyFile("dave"));
    const key = loadKeyFile(path);
    expect(key.identity).toBe("dave");
    expect(key.secret.length).toBe(32);
  });

  test("accepts 0400", () => {
    expect(loadKeyFile(fileWith(generateKeyFile("erin"), 0o400)).identity).toBe("erin");
  });

  test("refuses 0644 with the chmod hint", () => {
    const path = fileWith(generateKeyFile("alice"), 0o644);
    expect(keyError(() => loadKeyFile(path)).message).toBe(
      `key file ${path} is readable by others (mode 0644); run: chmod 600 ${path}`,
    );
  });

  test.each([
    [0o640, "readable by others (mode 0640)"],
    [0o604, "readable by others (mode 0604)"],
    [0o620, "writable by others (mode 0620)"],
    [0o602, "writable by others (mode 0602)"],
    [0o610, "writable by others (mode 0610)"],
  ])("refuses mode %o", (mode, text) => {
    const path = fileWith(generateKeyFile("alice"), mode);
    const message = keyError(() => loadKeyFile(path)).message;
    expect(message).toContain(text);
    expect(message).toContain(`run: chmod 600 ${path}`);
  });

  test("ignores the setuid bit (it grants nobody access)", () => {
    expect(loadKeyFile(fileWith(generateKeyFile("ivan"), 0o4600)).identity).toBe("ivan");
  });

  test("refuses a missing file, naming keygen", () => {
    const path = join(dir, "nope.key");
    expect(keyError(() => loadKeyFile(path)).message).toBe(
      `key file ${path} does not exist ` +
        `(create one with: dstd keygen --identity NAME --out ${path})`,
    );
  });

  test("refuses a directory", () => {
    const path = join(dir, "a-dir");
    mkdirSync(path, { mode: 0o700 });
    expect(keyError(() => loadKeyFile(path)).message).toBe(
      `key file ${path} is not a regular file`,
    );
  });

  test("refuses an oversized file", () => {
    const path = fileWith(`# ${"x".repeat(70_000)}\n`);
    expect(keyError(() => loadKeyFile(path)).message).toContain("bytes; a key file is under 1 KiB");
  });

  test("refuses a malformed file without echoing its secret", () => {
    const path = fileWith(`identity = "x"\nsecret = ${SECRET_B64}\n`);
    const message = keyError(() => loadKeyFile(path)).message;
    expect(message).toBe(`key file ${path} line 2: expected name = "value"`);
    expect(message).not.toContain(SECRET_B64);
  });

  test("refuses an unreadable file (checked as an ordinary user: root reads anything)", () => {
    const path = fileWith(generateKeyFile("alice"), 0o600); // owner root (or us), mode fine, unreadable to others
    if (process.getuid?.() !== 0) chmodSync(path, 0o000);
    const run = runUnprivileged((src) => `
      const { loadKeyFile } = await import(${src("src/crypto/keys.ts")});
      try { loadKeyFile(${JSON.stringify(path)}); console.log("LOADED"); } catch (e) { console.log(e.code, e.message); }`);
    expect(run.stderr).toBe("");
    expect(run.stdout).toContain("E_KEY");
    expect(run.stdout).toContain("is not readable by this user");
    expect(run.stdout).not.toContain("LOADED");
  });
});

describe("writeKeyFile", () => {
  test("creates the file with mode 0600 whatever the umask", () => {
    const path = fresh();
    const old = process.umask(0);
    try {
      writeKeyFile(path, generateKeyFile("frank"));
    } finally {
      process.umask(old);
    }
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadKeyFile(path).identity).toBe("frank");
  });

  test("refuses to overwrite an existing file and leaves it intact", () => {
    const path = fresh();
    const original = generateKeyFile("grace");
    writeKeyFile(path, original);
    const message = keyError(() => writeKeyFile(path, generateKeyFile("mallory"))).message;
    expect(message).toBe(
      `key file ${path} already exists; refusing to overwrite it (use --force to replace it)`,
    );
    expect(loadKeyFile(path).identity).toBe("grace");
  });

  test("with force replaces the file atomically, fixes a loose mode, leaves no temp file", () => {
    const path = fileWith("old contents", 0o644);
    writeKeyFile(path, generateKeyFile("heidi"), { force: true });
    expect(statSync(path).mode & 0o777).toBe(0o600);
    expect(loadKeyFile(path).identity).toBe("heidi");
    expect(readdirSync(dir).filter((n) => n.endsWith(".tmp"))).toEqual([]);
  });

  test("reports a missing directory as E_KEY", () => {
    const path = join(dir, "no-such-dir", "x.key");
    expect(keyError(() => writeKeyFile(path, "x")).message).toBe(
      `cannot create key file ${path} (ENOENT)`,
    );
    expect(existsSync(path)).toBe(false);
  });
});

test("zero wipes bytes in place", () => {
  const secret = new Uint8Array([1, 2, 3, 4]);
  const view = secret.subarray(1, 3);
  zero(view);
  expect(secret).toEqual(new Uint8Array([1, 0, 0, 4]));
});

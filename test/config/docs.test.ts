/**
 * docs/config.md must document every key the schema accepts (written as `key` in a table
 * row), and its stated defaults must agree with defaults.ts for the values a user is most
 * likely to rely on. A key added to the schema without documentation fails here.
 */
import { expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { DEFAULT_ALLOW, DEFAULT_LISTEN, DEFAULT_RELIABILITY } from "../../src/config/defaults.ts";
import { knownKeys } from "../../src/config/validate.ts";
import { formatDuration } from "../../src/lib/duration.ts";

const doc = readFileSync(join(import.meta.dir, "../../docs/config.md"), "utf8");

test("every schema key appears in a table row of docs/config.md", () => {
  const rows = doc.split("\n").filter((line) => line.startsWith("| `"));
  const documented = new Set(rows.map((row) => /^\| `([a-z_]+)`/.exec(row)?.[1]));
  const missing: string[] = [];
  for (const [section, keys] of Object.entries(knownKeys())) {
    for (const key of keys) {
      if (key === "reliability" || documented.has(key)) continue;
      // Sections are documented by a heading: "## `[[export]]`", "## `[client]`".
      const heading = new RegExp(`^## \`\\[{1,2}${key}\\]{1,2}\``, "m");
      if (section === "top" && heading.test(doc)) continue;
      // Allow-rule table keys are documented in prose, as `{ identity, network, access }`.
      if (section === "export.allow" && doc.includes("`{ identity, network, access }`")) continue;
      missing.push(`${section}.${key}`);
    }
  }
  expect(missing).toEqual([]);
});

test("documented defaults match defaults.ts", () => {
  const lines = doc.split("\n");
  const row = (key: string) => lines.find((line) => line.startsWith(`| \`${key}\``)) ?? "";
  const r = DEFAULT_RELIABILITY;
  expect(row("resend_interval")).toContain(`"${formatDuration(r.resendIntervalMs)}"`);
  expect(row("max_resends")).toContain(`\`${r.maxResends}\``);
  expect(row("deadline")).toContain(`"${formatDuration(r.deadlineMs)}"`);
  expect(row("reconnect_min")).toContain(`"${formatDuration(r.reconnectMinMs)}"`);
  expect(row("reconnect_max")).toContain(`"${formatDuration(r.reconnectMaxMs)}"`);
  expect(row("keepalive_interval")).toContain(`"${formatDuration(r.keepaliveIntervalMs)}"`);
  expect(row("keepalive_timeout")).toContain(`"${formatDuration(r.keepaliveTimeoutMs)}"`);
  expect(row("replay_buffer")).toContain(`"${r.replayBufferBytes / 1024 / 1024}MiB"`);
  expect(row("inflight")).toContain(`\`${r.inflightMax}\``);
  expect(row("queue_depth")).toContain(`\`${r.queueDepth}\``);
  expect(row("links")).toContain(`\`${r.links}\``);
  expect(row("listen")).toContain(JSON.stringify(DEFAULT_LISTEN).replaceAll(",", ", "));
  expect(row("allow")).toContain(JSON.stringify(DEFAULT_ALLOW).replaceAll(",", ", "));
});

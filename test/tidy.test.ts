/**
 * @module test/tidy — the rules of the source tree, checked on every run. Each rule below holds
 * for the tree as it is; the checker is run on the real files (no violation allowed) and, as a
 * canary, on synthetic trees that break one rule each (that rule, and only it, must fire).
 *
 * Rules (imports include `import type` unless a rule says "at run time"):
 * - wire-is-pure: src/wire/ (the codecs) imports only src/wire/ and src/lib/, reaches no
 *   module outside the repo even transitively (so: only pure lib basics), and uses no timers
 *   and no Bun I/O.
 * - engine-is-sans-io, export-is-sans-io: src/engine/ and src/export/ use no timers
 *   (setTimeout/setInterval/setImmediate, Bun.sleep), no Bun I/O (Bun.file/write/connect/
 *   listen/serve/spawn/$, fetch, new Worker), import no node:fs/net/dgram/tls/http/
 *   child_process/worker_threads/timers and no bun:ffi, and import at run time nothing of
 *   src/transport/ (but its interfaces, transport/types.ts), src/sys/, src/kernel/,
 *   src/storage/local/, src/attach/, src/control/, src/daemon/ or src/cli/. Transitively
 *   they may not reach bun:ffi, sockets, child processes, or those folders. (Through crypto/
 *   they do reach node:fs — crypto/keys.ts, for zero() — and node:net — crypto/suites.ts, for
 *   BlockList; neither does I/O on their path.) The export gets `defer` injected
 *   (queueMicrotask is fine).
 * - ffi-only-in-sys: `bun:ffi` is imported only in src/sys/.
 * - sockets-only-in-transport: Bun.listen/Bun.connect only in src/transport/, and in
 *   kernel/genl-socket.ts, which hands the netlink socket's fd to Bun (`Bun.connect({ fd })`);
 *   Bun.serve nowhere (it cannot cap its connections; the metrics endpoint, status/http.ts,
 *   serves HTTP through transport/tcp.ts and a guard); node:dgram/tls/http/https/http2
 *   nowhere; node:net only in src/transport/ (transport/direct-receive.ts: its `onread`) and
 *   elsewhere only for its address helpers (isIP, isIPv4, isIPv6, BlockList).
 * - cli-is-the-top: nothing but src/cli/ and src/main.ts imports src/cli/.
 * - daemon-only-under-cli: src/daemon/ (composition roots) is imported only by src/cli/.
 * - config-is-low: src/config/ imports only src/config/, src/lib/, src/crypto/ (the suite,
 *   checksum and key vocabularies) and engine/options.ts (the reliability defaults).
 * - config-io-in-load: only config/load.ts touches the filesystem among src/config/, and it
 *   is the only TOML reader (Bun.TOML) in src/.
 * - config-is-acyclic: no import cycle among src/config/ files.
 * - module-header: every src file starts (after a #! line) with `/** @module <path> — …`,
 *   <path> being its own path under src/ without `.ts`.
 * - no-outside-docs: nothing in src/, test/, bench/, docs/, examples/, systemd/, README.md or
 *   build.ts cites a document outside the repository (the shared notes next to it).
 * - line-budget: no src file is longer than LINE_BUDGET lines, but for the exceptions listed
 *   with a cap of their own; an exception no longer needed must be removed from the list.
 */
import { describe, expect, test } from "bun:test";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, posix } from "node:path";
import ts from "typescript";

// ---- parameters ---------------------------------------------------------------------------

const LINE_BUDGET = 600;

/** Files allowed past LINE_BUDGET, each with a cap it may not pass and the reason. */
const LINE_BUDGET_EXCEPTIONS: Readonly<Record<string, { cap: number; why: string }>> = {
  "src/engine/client-engine.ts": { cap: 800, why: "the engine facade, being split along its concerns (issue 10 item 7)" },
  "src/replication/primary.ts": { cap: 950, why: "the primary replication layer (log, write-back order, bitmap overflow, resync, handed-over buffers, the durable state the log is released by) in one class; the ack window, recovery replay and the write-back to the disk below (retries, the disk flush, a failed disk) are split out, the rest not yet" },
};

/** Files outside src/transport/ that may call Bun.listen/Bun.connect, and why. */
const SOCKET_EXCEPTIONS: Readonly<Record<string, string>> = {
  "src/kernel/genl-socket.ts": "hands the netlink socket's fd to Bun's event loop: Bun.connect({ fd })",
};

/** Files that hold the patterns of no-outside-docs themselves. */
const OUTSIDE_DOCS_CHECKERS = new Set(["test/tidy.test.ts", "test/cli/docs.test.ts"]);

/** Citations of the notes kept outside the repository. */
const OUTSIDE_DOCS: readonly RegExp[] = [
  /\.\.\/shared\//,
  /\bshared\/(?:reference|design|hooks)\//,
  /\/work\/(?:shared|main|wt)\b/,
  /\blandscape(?:\.md\b|\s+P\d|\s+§)/,
  /\b(?:bun-runtime|perf-anchors|vm-harness|architecture-review)\b/,
  /(?<![\w-])(?:anchors|replication-and-operations|ceph-test-cluster)\.md\b/,
];

const TIMERS = /\b(?:setTimeout|setInterval|setImmediate|clearTimeout|clearInterval|clearImmediate)\s*\(|\bBun\.(?:sleep|sleepSync)\b/;
const BUN_IO = /\bBun\.(?:(?:file|write|connect|listen|serve|spawn|spawnSync|udpSocket|mmap|stdin|stdout|stderr)\b|\$)|(?<![\w.$])fetch\s*\(|\bnew\s+Worker\s*\(/;
/** Modules whose mere import means I/O, sockets, processes, threads or timers. */
const IO_MODULES = new Set(["fs", "fs/promises", "net", "dgram", "tls", "http", "https", "http2", "child_process", "worker_threads", "cluster", "timers", "timers/promises", "bun:ffi", "bun:sqlite"]);
/** Of those, what the sans-I/O folders may not reach even through other modules. */
const IO_MODULES_TRANSITIVE = new Set(["dgram", "tls", "http", "https", "http2", "child_process", "cluster", "bun:ffi", "bun:sqlite"]);
const SANS_IO_FORBIDDEN_FOLDERS = ["src/transport/", "src/sys/", "src/kernel/", "src/storage/local/", "src/attach/", "src/control/", "src/daemon/", "src/cli/"];
const SANS_IO_ALLOWED_FILES = new Set(["src/transport/types.ts"]);
const NET_ADDRESS_HELPERS = new Set(["isIP", "isIPv4", "isIPv6", "BlockList", "SocketAddress"]);

// ---- the checker --------------------------------------------------------------------------

interface SourceFile {
  /** Relative to the repository root, "/" separated: "src/engine/txn.ts". */
  path: string;
  text: string;
}

type Rule =
  | "wire-is-pure"
  | "engine-is-sans-io"
  | "export-is-sans-io"
  | "ffi-only-in-sys"
  | "sockets-only-in-transport"
  | "cli-is-the-top"
  | "daemon-only-under-cli"
  | "config-is-low"
  | "config-io-in-load"
  | "config-is-acyclic"
  | "module-header"
  | "no-outside-docs"
  | "line-budget";

interface Violation {
  rule: Rule;
  file: string;
  line: number;
  message: string;
}

interface TidyOptions {
  lineBudget: number;
  lineExceptions: Readonly<Record<string, { cap: number; why: string }>>;
}

interface Import {
  /** As written: "../lib/assert.ts", "node:fs", "bun:ffi". */
  spec: string;
  /** Repository path for a relative import; null for a module outside the repo. */
  target: string | null;
  /** Outside modules without their "node:" prefix. */
  module: string | null;
  typeOnly: boolean;
  /** Named specifiers, for `import { a, b as c }` (value names only). */
  names: string[] | null;
  line: number;
}

interface Parsed {
  file: SourceFile;
  imports: Import[];
  /** The code with comments and types removed (Bun's transpiler), for the API checks. */
  code: string;
}

const transpiler = new Bun.Transpiler({ loader: "ts" });

function lineAt(text: string, index: number): number {
  let line = 1;
  for (let i = 0; i < index; i++) if (text.charCodeAt(i) === 10) line++;
  return line;
}

function resolveSpec(from: string, spec: string): { target: string | null; module: string | null } {
  if (!spec.startsWith(".")) return { target: null, module: spec.replace(/^node:/, "") };
  return { target: posix.normalize(posix.join(posix.dirname(from), spec)), module: null };
}

/** Imports and re-exports (static and dynamic) of a TypeScript file, read by the compiler's parser. */
function parse(file: SourceFile): Parsed {
  const imports: Import[] = [];
  if (!file.path.startsWith("src/") || !file.path.endsWith(".ts")) return { file, imports, code: "" };
  const source = ts.createSourceFile(file.path, file.text, ts.ScriptTarget.Latest, false, ts.ScriptKind.TS);
  const push = (node: ts.Node, specifier: ts.Expression | undefined, typeOnly: boolean, names: string[] | null) => {
    if (specifier === undefined || !ts.isStringLiteralLike(specifier)) return;
    const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
    imports.push({ spec: specifier.text, ...resolveSpec(file.path, specifier.text), typeOnly, names, line });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node)) {
      const clause = node.importClause;
      const bindings = clause?.namedBindings;
      const named = bindings !== undefined && ts.isNamedImports(bindings) ? bindings.elements : null;
      const typeOnly =
        clause !== undefined &&
        (clause.isTypeOnly || (clause.name === undefined && named !== null && named.length > 0 && named.every((e) => e.isTypeOnly)));
      const names =
        clause === undefined || clause.name !== undefined || named === null
          ? null
          : named.filter((e) => !e.isTypeOnly).map((e) => (e.propertyName ?? e.name).text);
      push(node, node.moduleSpecifier, typeOnly, names);
    } else if (ts.isExportDeclaration(node)) {
      const clause = node.exportClause;
      const typeOnly = node.isTypeOnly || (clause !== undefined && ts.isNamedExports(clause) && clause.elements.length > 0 && clause.elements.every((e) => e.isTypeOnly));
      push(node, node.moduleSpecifier, typeOnly, null);
    } else if (ts.isCallExpression(node) && (node.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(node.expression) && node.expression.text === "require"))) {
      push(node, node.arguments[0], false, null);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument)) {
      push(node, node.argument.literal, true, null);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  let code: string;
  try {
    code = transpiler.transformSync(file.text.replace(/^#!.*/, ""));
  } catch {
    code = file.text; // not valid TypeScript: tsc says why; check the text as it is
  }
  return { file, imports, code };
}

/** The first code line of `text` on which `pattern` matches (1 when it cannot be placed). */
function lineOf(text: string, pattern: RegExp): number {
  const lines = text.split("\n");
  const comment = /^\s*(?:\/\/|\/\*|\*)/;
  const found = lines.findIndex((line) => pattern.test(line) && !comment.test(line));
  return found < 0 ? 1 : found + 1;
}

/** Everything `start` reaches through run-time imports: path or module → the file importing it. */
function runtimeClosure(start: string, byPath: Map<string, Parsed>): Map<string, string> {
  const via = new Map<string, string>();
  const stack = [start];
  while (stack.length > 0) {
    const current = stack.pop()!;
    for (const i of byPath.get(current)?.imports ?? []) {
      if (i.typeOnly) continue;
      const key = i.target ?? i.spec;
      if (via.has(key) || key === start) continue;
      via.set(key, current);
      if (i.target !== null && byPath.has(i.target)) stack.push(i.target);
    }
  }
  return via;
}

function chain(start: string, end: string, via: Map<string, string>): string {
  const steps = [end];
  for (let at = via.get(end); at !== undefined && at !== start; at = via.get(at)) steps.push(at);
  return [start, ...steps.reverse()].map((s) => s.replace(/^src\//, "")).join(" → ");
}

function checkTree(files: readonly SourceFile[], options: TidyOptions): Violation[] {
  const out: Violation[] = [];
  const add = (rule: Rule, file: string, line: number, message: string) => out.push({ rule, file, line, message });
  const parsed = files.map(parse);
  const byPath = new Map(parsed.map((p) => [p.file.path, p]));
  const sources = parsed.filter((p) => p.file.path.startsWith("src/") && p.file.path.endsWith(".ts"));
  const under = (path: string, folder: string) => path.startsWith(folder);

  for (const p of sources) {
    const path = p.file.path;

    // wire-is-pure
    if (under(path, "src/wire/")) {
      for (const i of p.imports) {
        if (i.target !== null && (under(i.target, "src/wire/") || under(i.target, "src/lib/"))) continue;
        add("wire-is-pure", path, i.line, `imports ${i.spec}: a codec imports only src/wire/ and src/lib/ basics`);
      }
      const via = runtimeClosure(path, byPath);
      for (const key of via.keys()) {
        if (byPath.has(key) || key.startsWith("src/") || key.endsWith(".json")) continue;
        add("wire-is-pure", path, 1, `reaches ${key} (${chain(path, key, via)}): a codec's imports must be pure`);
      }
      checkCode(p, "wire-is-pure", add);
    }

    // engine-is-sans-io, export-is-sans-io
    const sansIo: Rule | null = under(path, "src/engine/") ? "engine-is-sans-io" : under(path, "src/export/") ? "export-is-sans-io" : null;
    if (sansIo !== null) {
      for (const i of p.imports) {
        if (i.module !== null && IO_MODULES.has(i.module) && !(i.typeOnly && i.module !== "bun:ffi")) {
          add(sansIo, path, i.line, `imports ${i.spec}`);
        }
        if (i.module === "bun" && !i.typeOnly) add(sansIo, path, i.line, `imports ${i.spec} at run time`);
        if (i.target !== null && !i.typeOnly && forbiddenForSansIo(i.target)) {
          add(sansIo, path, i.line, `imports ${i.spec} at run time`);
        }
      }
      const via = runtimeClosure(path, byPath);
      const bad = (key: string) => IO_MODULES_TRANSITIVE.has(key.replace(/^node:/, "")) || forbiddenForSansIo(key);
      for (const key of via.keys()) {
        if (!bad(key)) continue;
        // Report the first forbidden step of each path only: what lies behind it goes with it.
        let earlier = false;
        for (let at = via.get(key); at !== undefined && at !== path; at = via.get(at)) earlier ||= bad(at);
        if (!earlier && via.get(key) !== path) add(sansIo, path, 1, `reaches ${key} through ${chain(path, key, via)}`);
      }
      checkCode(p, sansIo, add);
    }

    // ffi-only-in-sys, sockets-only-in-transport
    for (const i of p.imports) {
      if (i.module === "bun:ffi" && !under(path, "src/sys/")) {
        add("ffi-only-in-sys", path, i.line, "imports bun:ffi; only src/sys/ may (wrap the call in sys/libc.ts)");
      }
      if (i.module !== null && ["dgram", "tls", "http", "https", "http2"].includes(i.module)) {
        add("sockets-only-in-transport", path, i.line, `imports ${i.spec}: sockets live in src/transport/`);
      }
      if (i.module === "net" && !i.typeOnly && !under(path, "src/transport/") && (i.names === null || i.names.some((n) => !NET_ADDRESS_HELPERS.has(n)))) {
        add("sockets-only-in-transport", path, i.line, `imports ${i.spec} beyond its address helpers (${[...NET_ADDRESS_HELPERS].join(", ")})`);
      }
    }
    if (/\bBun\.(?:listen|connect)\b/.test(p.code) && !under(path, "src/transport/") && SOCKET_EXCEPTIONS[path] === undefined) {
      add("sockets-only-in-transport", path, lineOf(p.file.text, /\bBun\.(?:listen|connect)\b/), "calls Bun.listen/Bun.connect outside src/transport/");
    }
    if (/\bBun\.serve\b/.test(p.code)) {
      add("sockets-only-in-transport", path, lineOf(p.file.text, /\bBun\.serve\b/), "calls Bun.serve, which holds every connection it is offered; serve HTTP as status/http.ts does (transport/tcp.ts and a guard)");
    }

    // cli-is-the-top, daemon-only-under-cli
    for (const i of p.imports) {
      if (i.target === null) continue;
      if (under(i.target, "src/cli/") && !under(path, "src/cli/") && path !== "src/main.ts") {
        add("cli-is-the-top", path, i.line, `imports ${i.spec}: only src/cli/ and src/main.ts use the command line`);
      }
      if (under(i.target, "src/daemon/") && !under(path, "src/cli/") && !under(path, "src/daemon/")) {
        add("daemon-only-under-cli", path, i.line, `imports ${i.spec}: composition roots are used by src/cli/ only`);
      }
    }

    // config-is-low, config-io-in-load
    if (under(path, "src/config/")) {
      for (const i of p.imports) {
        if (i.target !== null) {
          const low = ["src/config/", "src/lib/", "src/crypto/"].some((f) => under(i.target!, f)) || i.target === "src/engine/options.ts";
          if (!low) add("config-is-low", path, i.line, `imports ${i.spec}: config imports only config/, lib/, crypto/ and engine/options.ts`);
        } else if ((i.module === "fs" || i.module === "fs/promises") && path !== "src/config/load.ts") {
          add("config-io-in-load", path, i.line, `imports ${i.spec}: only config/load.ts reads files`);
        }
      }
    }
    if (/\bBun\.TOML\b/.test(p.code) && path !== "src/config/load.ts") {
      add("config-io-in-load", path, lineOf(p.file.text, /\bBun\.TOML\b/), "parses TOML; config/load.ts is the only TOML reader");
    }

    // module-header
    const name = path.slice("src/".length, -".ts".length);
    const header = /^(?:#![^\n]*\n)?\/\*\*[ \t]*(?:\n[ \t]*\*)?[ \t]*@module (\S+) — \S/.exec(p.file.text);
    if (header === null) add("module-header", path, 1, `does not start with /** @module ${name} — …`);
    else if (header[1] !== name) add("module-header", path, 1, `@module ${header[1]} should be @module ${name}`);

    // line-budget
    const lines = p.file.text.replace(/\n$/, "").split("\n").length;
    const exception = options.lineExceptions[path];
    if (exception === undefined && lines > options.lineBudget) {
      add("line-budget", path, options.lineBudget + 1, `${lines} lines, over the budget of ${options.lineBudget}: split it along its concerns`);
    } else if (exception !== undefined && lines > exception.cap) {
      add("line-budget", path, exception.cap + 1, `${lines} lines, over its own cap of ${exception.cap} (${exception.why})`);
    } else if (exception !== undefined && lines <= options.lineBudget) {
      add("line-budget", path, 1, `${lines} lines, within the budget: remove it from the exceptions`);
    }
  }
  for (const path of Object.keys(options.lineExceptions)) {
    if (!byPath.has(path)) add("line-budget", path, 1, "listed as an exception but not in the tree: remove it from the exceptions");
  }

  // config-is-acyclic
  for (const cycle of cycles(sources.filter((p) => under(p.file.path, "src/config/")))) {
    add("config-is-acyclic", cycle[0]!, 1, `import cycle: ${[...cycle, cycle[0]!].map((s) => s.replace(/^src\//, "")).join(" → ")}`);
  }

  // no-outside-docs
  for (const p of parsed) {
    if (OUTSIDE_DOCS_CHECKERS.has(p.file.path)) continue;
    for (const pattern of OUTSIDE_DOCS) {
      const m = pattern.exec(p.file.text);
      if (m !== null) add("no-outside-docs", p.file.path, lineAt(p.file.text, m.index), `cites '${m[0]}', a document outside the repository`);
    }
  }
  return out;
}

function forbiddenForSansIo(target: string): boolean {
  if (SANS_IO_ALLOWED_FILES.has(target)) return false;
  return SANS_IO_FORBIDDEN_FOLDERS.some((folder) => target.startsWith(folder));
}

function checkCode(p: Parsed, rule: Rule, add: (rule: Rule, file: string, line: number, message: string) => void): void {
  const timer = TIMERS.exec(p.code);
  if (timer !== null) add(rule, p.file.path, lineOf(p.file.text, TIMERS), `uses ${timer[0].replace(/\s*\($/, "")}: time comes in through ticks or injected callbacks`);
  const io = BUN_IO.exec(p.code);
  if (io !== null) add(rule, p.file.path, lineOf(p.file.text, BUN_IO), `uses ${io[0].replace(/\s*\($/, "")}: I/O belongs to the drivers`);
}

/** Import cycles (any import kind) among `files`: one list per strongly connected component. */
function cycles(files: readonly Parsed[]): string[][] {
  const inSet = new Set(files.map((p) => p.file.path));
  const edges = new Map(files.map((p) => [p.file.path, p.imports.flatMap((i) => (i.target !== null && inSet.has(i.target) ? [i.target] : []))]));
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const found: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, index.size);
    low.set(v, index.get(v)!);
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) !== index.get(v)) return;
    const component: string[] = [];
    for (let w = stack.pop()!; ; w = stack.pop()!) {
      onStack.delete(w);
      component.push(w);
      if (w === v) break;
    }
    if (component.length > 1 || (edges.get(v) ?? []).includes(v)) found.push(component.sort());
  };
  for (const v of [...inSet].sort()) if (!index.has(v)) visit(v);
  return found;
}

function format(v: Violation): string {
  return `${v.rule}: ${v.file}:${v.line}: ${v.message}`;
}

// ---- the real tree ------------------------------------------------------------------------

const ROOT = join(import.meta.dir, "..");
const SCANNED = ["src", "test", "bench", "docs", "examples", "systemd", "README.md", "build.ts"];
const TEXT = /\.(?:ts|md|sh|toml|service|socket|txt|example)$/;

function readTree(): SourceFile[] {
  const files: SourceFile[] = [];
  const walk = (relative: string): void => {
    const absolute = join(ROOT, relative);
    if (statSync(absolute).isDirectory()) {
      for (const name of readdirSync(absolute).sort()) walk(posix.join(relative, name));
    } else if (TEXT.test(relative)) {
      files.push({ path: relative, text: readFileSync(absolute, "utf8") });
    }
  };
  for (const entry of SCANNED) {
    try {
      statSync(join(ROOT, entry));
    } catch {
      continue;
    }
    walk(entry);
  }
  return files;
}

test("the source tree follows every rule", () => {
  const tree = readTree();
  expect(tree.filter((f) => f.path.startsWith("src/")).length).toBeGreaterThan(100);
  const violations = checkTree(tree, { lineBudget: LINE_BUDGET, lineExceptions: LINE_BUDGET_EXCEPTIONS });
  expect(violations.map(format)).toEqual([]);
});

// ---- canaries: the checker can fail -------------------------------------------------------

const mod = (path: string, body: string): [string, string] => [path, `/**\n * @module ${path.slice(4, -3)} — test.\n */\n${body}`];

/** A small tree that follows every rule, in the shape of the real one. */
const CLEAN: Record<string, string> = Object.fromEntries([
  ["src/main.ts", `#!/usr/bin/env bun\n/**\n * @module main — entry.\n */\nimport { run } from "./cli/run.ts";\nrun();\n`],
  mod("src/lib/assert.ts", `export function assert(ok: unknown): asserts ok {}\n`),
  mod("src/lib/log.ts", `import { writeSync } from "node:fs";\nexport const log = (s: string) => writeSync(2, s);\n`),
  mod("src/wire/dst/codec.ts", `import { assert } from "../../lib/assert.ts";\nimport { HEADER } from "./constants.ts";\nexport const decode = (b: Uint8Array) => { assert(b.length >= HEADER); return b[0]; };\n`),
  mod("src/wire/dst/constants.ts", `export const HEADER = 56;\n`),
  mod("src/crypto/suites.ts", `import { BlockList, isIPv4 } from "node:net";\nexport const SUITES = ["aes-256-gcm"] as const;\nexport const local = new BlockList();\nexport const v4 = isIPv4;\n`),
  mod("src/engine/options.ts", `export const ENGINE_DEFAULTS = { inflight: 64 };\n`),
  mod("src/engine/engine.ts", `// The driver calls setTimeout for us; we never do.\nimport { decode } from "../wire/dst/codec.ts";\nimport { SUITES } from "../crypto/suites.ts";\nimport type { Sink } from "../transport/types.ts";\nimport type { Socket } from "bun";\nexport class Engine { constructor(readonly sink: Sink, readonly s?: Socket) {} tick(now: number) { return decode(new Uint8Array(now)) ?? SUITES[0]; } }\n`),
  mod("src/export/server.ts", `import { describePeer, type Sink } from "../transport/types.ts";\nimport type { Guard } from "../transport/guard.ts";\nexport function serve(sink: Sink, guard?: Guard, defer: (f: () => void) => void = queueMicrotask) { defer(() => sink.write(describePeer())); return Bun.hash.xxHash3("x"); }\n`),
  mod("src/transport/types.ts", `export interface Sink { write(s: string): void }\nexport const describePeer = () => "peer";\n`),
  mod("src/transport/guard.ts", `export interface Guard { admit(): void }\nexport const later = () => setTimeout(() => {}, 1);\n`),
  mod("src/transport/tcp.ts", `export const listen = () => Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });\n`),
  mod("src/kernel/genl-socket.ts", `export const adopt = (fd: number) => Bun.connect({ fd, socket: { data() {} } });\n`),
  mod("src/status/http.ts", `import { listen } from "../transport/tcp.ts";\nexport const serve = () => listen();\n`),
  mod("src/sys/libc.ts", `import { dlopen } from "bun:ffi";\nexport const lib = () => dlopen("libc.so.6", {});\n`),
  mod("src/config/types.ts", `import type { SUITES } from "../crypto/suites.ts";\nexport interface Config { suites: typeof SUITES }\n`),
  mod("src/config/defaults.ts", `import { ENGINE_DEFAULTS } from "../engine/options.ts";\nexport const DEFAULT_INFLIGHT = ENGINE_DEFAULTS.inflight;\n`),
  mod("src/config/validate.ts", `import type { Config } from "./types.ts";\nimport { DEFAULT_INFLIGHT } from "./defaults.ts";\nexport const validate = (raw: unknown): Config | number => (raw ? DEFAULT_INFLIGHT : DEFAULT_INFLIGHT);\n`),
  mod("src/config/load.ts", `import { readFileSync } from "node:fs";\nimport { validate } from "./validate.ts";\nexport const load = (p: string) => validate(Bun.TOML.parse(readFileSync(p, "utf8")));\n`),
  mod("src/daemon/node.ts", `import { load } from "../config/load.ts";\nimport { Engine } from "../engine/engine.ts";\nexport const start = (p: string) => [load(p), Engine];\n`),
  mod("src/cli/run.ts", `import { start } from "../daemon/node.ts";\nexport const run = () => start("dstd.toml");\n`),
  ["docs/protocol.md", "# DST\n\nSee docs/security.md and NetworkBlockDevice/nbd doc/proto.md.\n"],
  ["test/engine.test.ts", `// The engine (src/engine/engine.ts) never sets a timer.\n`],
]);

const NO_EXCEPTIONS: TidyOptions = { lineBudget: 40, lineExceptions: {} };

function check(patch: Record<string, string | null>, options: TidyOptions = NO_EXCEPTIONS): Violation[] {
  const tree = { ...CLEAN, ...patch };
  const files = Object.entries(tree).flatMap(([path, text]) => (text === null ? [] : [{ path, text }]));
  return checkTree(files, options);
}

describe("canaries", () => {
  test("the clean synthetic tree passes", () => {
    expect(check({}).map(format)).toEqual([]);
  });

  const cases: [Rule, string, Record<string, string | null>, TidyOptions?][] = [
    ["wire-is-pure", "a codec imports the transport", Object.fromEntries([mod("src/wire/dst/codec.ts", `import type { Sink } from "../../transport/types.ts";\nexport type S = Sink;\n`)])],
    ["wire-is-pure", "a codec imports a lib module that reads files", Object.fromEntries([mod("src/wire/dst/codec.ts", `import { log } from "../../lib/log.ts";\nexport const d = () => log("x");\n`)])],
    ["wire-is-pure", "a codec sets a timer", Object.fromEntries([mod("src/wire/dst/codec.ts", `export const d = () => setTimeout(() => {}, 5);\n`)])],
    ["engine-is-sans-io", "the engine sets a timer", Object.fromEntries([mod("src/engine/resend.ts", `export const arm = (f: () => void) => setTimeout(f, 1000);\n`)])],
    ["engine-is-sans-io", "the engine sleeps", Object.fromEntries([mod("src/engine/resend.ts", `export const wait = () => Bun.sleep(10);\n`)])],
    ["engine-is-sans-io", "the engine reads a file", Object.fromEntries([mod("src/engine/replay.ts", `import { readFileSync } from "node:fs";\nexport const r = () => readFileSync("/x");\n`)])],
    ["engine-is-sans-io", "the engine writes with Bun.write", Object.fromEntries([mod("src/engine/replay.ts", `export const r = () => Bun.write("/x", "y");\n`)])],
    ["engine-is-sans-io", "the engine runs a shell command", Object.fromEntries([mod("src/engine/replay.ts", "export const r = () => Bun.$`sync`;\n")])],
    ["engine-is-sans-io", "the engine imports the socket layer", Object.fromEntries([mod("src/engine/link.ts", `import { listen } from "../transport/tcp.ts";\nexport const l = listen;\n`)])],
    ["engine-is-sans-io", "the engine reaches the socket layer through crypto", Object.fromEntries([mod("src/crypto/suites.ts", `import { listen } from "../transport/tcp.ts";\nexport const SUITES = ["aes-256-gcm"] as const;\nexport const l = listen;\n`)])],
    ["export-is-sans-io", "the export sets an interval", Object.fromEntries([mod("src/export/sweep.ts", `export const sweep = () => setInterval(() => {}, 1000);\n`)])],
    ["export-is-sans-io", "the export opens the backing file", Object.fromEntries([mod("src/export/open.ts", `import { openSync } from "node:fs";\nexport const o = () => openSync("/x", "r");\n`)])],
    ["ffi-only-in-sys", "bun:ffi outside sys/", Object.fromEntries([mod("src/kernel/probe.ts", `import { dlopen } from "bun:ffi";\nexport const p = () => dlopen("libc.so.6", {});\n`)])],
    ["sockets-only-in-transport", "Bun.connect in the client", Object.fromEntries([mod("src/client/dial.ts", `export const dial = () => Bun.connect({ hostname: "h", port: 1, socket: { data() {} } });\n`)])],
    ["sockets-only-in-transport", "a second HTTP listener", Object.fromEntries([mod("src/daemon/metrics.ts", `export const m = () => Bun.serve({ fetch: () => new Response("") });\n`)])],
    ["sockets-only-in-transport", "Bun.serve for the metrics endpoint (no connection cap)", Object.fromEntries([mod("src/status/http.ts", `export const serve = () => Bun.serve({ fetch: () => new Response("") });\n`)])],
    ["sockets-only-in-transport", "node:net for a socket", Object.fromEntries([mod("src/client/dial.ts", `import { createConnection } from "node:net";\nexport const d = () => createConnection(1);\n`)])],
    ["sockets-only-in-transport", "node:http", Object.fromEntries([mod("src/status/push.ts", `import * as http from "node:http";\nexport const h = http;\n`)])],
    ["cli-is-the-top", "a root imports the command line", Object.fromEntries([mod("src/daemon/node.ts", `import { run } from "../cli/run.ts";\nexport const start = () => run;\n`)])],
    ["daemon-only-under-cli", "the export imports a composition root, even as a type", Object.fromEntries([mod("src/export/server.ts", `import type { start } from "../daemon/node.ts";\nexport type S = typeof start;\n`)])],
    ["config-is-low", "config imports the transport", Object.fromEntries([mod("src/config/validate.ts", `import type { Sink } from "../transport/types.ts";\nexport type S = Sink;\n`)])],
    ["config-io-in-load", "config reads a file outside load.ts", Object.fromEntries([mod("src/config/defaults.ts", `import { existsSync } from "node:fs";\nexport const DEFAULT_INFLIGHT = existsSync("/x") ? 1 : 64;\n`)])],
    ["config-io-in-load", "a second TOML reader", Object.fromEntries([mod("src/cli/args.ts", `export const raw = (t: string) => Bun.TOML.parse(t);\n`)])],
    ["config-is-acyclic", "a leaf imports the root", Object.fromEntries([mod("src/config/types.ts", `import type { validate } from "./validate.ts";\nexport interface Config { v: typeof validate }\n`)])],
    ["module-header", "no header", { "src/lib/size.ts": `export const KiB = 1024;\n` }],
    ["module-header", "a header naming another file", { "src/lib/size.ts": `/**\n * @module lib/sizes — units.\n */\nexport const KiB = 1024;\n` }],
    ["no-outside-docs", "a comment cites the shared notes", Object.fromEntries([mod("src/lib/assert.ts", `// see ../shared/reference/landscape.md §2.4\nexport function assert(ok: unknown): asserts ok {}\n`)])],
    ["no-outside-docs", "a doc cites a measurement note", { "docs/protocol.md": "# DST\n\nNumbers: perf-anchors, batching.\n" }],
    ["no-outside-docs", "a test cites a pain point by its number", { "test/engine.test.ts": "// landscape P8: never block the loop\n" }],
    ["line-budget", "a file over the budget", Object.fromEntries([mod("src/lib/big.ts", "export const x = 1;\n".repeat(50))])],
    ["line-budget", "an exception past its cap", Object.fromEntries([mod("src/lib/big.ts", "export const x = 1;\n".repeat(50))]), { lineBudget: 40, lineExceptions: { "src/lib/big.ts": { cap: 45, why: "test" } } }],
    ["line-budget", "an exception no longer needed", {}, { lineBudget: 40, lineExceptions: { "src/lib/assert.ts": { cap: 45, why: "test" } } }],
    ["line-budget", "an exception for a file that is gone", {}, { lineBudget: 40, lineExceptions: { "src/lib/gone.ts": { cap: 45, why: "test" } } }],
  ];
  for (const [rule, what, patch, options] of cases) {
    test(`${rule}: ${what}`, () => {
      const violations = check(patch, options);
      expect(violations.length).toBeGreaterThan(0);
      expect(violations.filter((v) => v.rule !== rule).map(format)).toEqual([]);
    });
  }

  test("type-only imports and comments are not run-time dependencies", () => {
    const patch = Object.fromEntries([
      mod("src/engine/link.ts", `// Unlike transport/tcp.ts we call no setTimeout( and no Bun.connect(.\nimport type { listen } from "../transport/tcp.ts";\nimport { type Guard } from "../transport/guard.ts";\nexport type L = typeof listen | Guard;\n`),
    ]);
    expect(check(patch).map(format)).toEqual([]);
  });
});

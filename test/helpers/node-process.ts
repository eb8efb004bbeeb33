/**
 * @module test/helpers/node-process — a `dstd up` child process for tests: its stderr is
 * collected as it comes, so a test can wait for a logged event instead of a guessed time.
 */
import { spawn, type Subprocess } from "bun";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ensureBinary } from "./binary.ts";
import { freeLoopbackPort } from "./ports.ts";
import { until } from "./wait.ts";

export interface NodeProcess {
  child: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything written to stderr so far. */
  stderr(): string;
  waitForLog(match: RegExp | string, what: string, limitMs?: number): Promise<void>;
  /** SIGTERM (or `signal`), then the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number>;
}

export function startNode(args: string[], env: Record<string, string | undefined> = {}): NodeProcess {
  const child = spawn([ensureBinary(), "up", ...args], {
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
    env: { ...process.env, ...env },
  });
  let text = "";
  const decoder = new TextDecoder();
  void (async () => {
    for await (const chunk of child.stderr) text += decoder.decode(chunk);
  })();
  return {
    child,
    stderr: () => text,
    async waitForLog(match, what, limitMs = 15_000) {
      await until(() => (typeof match === "string" ? text.includes(match) : match.test(text)) || child.exitCode !== null, what, limitMs);
      if (!(typeof match === "string" ? text.includes(match) : match.test(text))) throw new Error(`dstd up exited (${child.exitCode}) before ${what}:\n${text}`);
    },
    async stop(signal = "SIGTERM") {
      if (child.exitCode === null) child.kill(signal);
      return await child.exited;
    },
  };
}

/**
 * A `dstd up` node in `dir` serving one sparse file export "disk" of `size` to anonymous
 * loopback clients (rw) on a free loopback port, for DST (`listen`) or NBD (`nbd_listen`), with
 * `frame_timeout` set; resolves once it is ready. The bounds tests of test/security use it.
 */
export async function startDiskNode(dir: string, tag: string, options: { protocol: "dst" | "nbd"; size: string; frameTimeout: string }): Promise<{ node: NodeProcess; port: number }> {
  const port = freeLoopbackPort();
  const config = join(dir, `${tag}.toml`);
  writeFileSync(
    config,
    `state_dir = "${join(dir, `${tag}-state`)}"
[limits]
frame_timeout = "${options.frameTimeout}"
[[export]]
name = "disk"
file = "${join(dir, `${tag}.img`)}"
size = "${options.size}"
${options.protocol === "dst" ? "listen" : "nbd_listen"} = "127.0.0.1:${port}"
allow = ["127.0.0.1:rw"]
`,
  );
  const node = startNode(["--config", config]);
  try {
    await node.waitForLog("ready:", "node ready", 30_000);
  } catch (error) {
    await node.stop();
    throw error;
  }
  return { node, port };
}

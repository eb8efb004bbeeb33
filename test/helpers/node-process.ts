/**
 * @module test/helpers/node-process — a `dstd up` child process for tests: its stderr is
 * collected as it comes, so a test can wait for a logged event instead of a guessed time.
 */
import { spawn, type Subprocess } from "bun";
import { ensureBinary } from "./binary.ts";
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

/**
 * @module cli/detach — `dstd detach DEVICE`: ask the attachment's daemon to flush and stop
 * (SIGTERM), and wait for it. Idempotent: detaching what is not attached says so and
 * succeeds. `--force` clears the record of an attachment whose daemon is gone.
 */
import { defineCommand } from "citty";
import { daemonAlive, defaultStateDir, listStates, removeState } from "../daemon/attach-state.ts";
import { DstdError } from "../lib/errors.ts";
import { commonArgs, readRawConfig, validateMerged } from "./args.ts";

export default defineCommand({
  meta: { name: "detach", description: "Detach an attachment (flush, then stop its daemon)" },
  args: {
    ...commonArgs,
    device: { type: "positional", description: "/dev/nbdN or the NBD endpoint shown by dstd list", required: true },
    force: { type: "boolean", description: "clear an attachment whose daemon is gone" },
    "state-dir": { type: "string", description: "attachment state directory", valueHint: "DIR" },
  },
  async run({ args }) {
    const { raw, source, baseDir } = readRawConfig(args.config);
    const config = validateMerged(raw, source, baseDir);
    const stateDir = args["state-dir"] ?? defaultStateDir(config.stateDir);
    const state = listStates(stateDir).find((s) => s.device === args.device);
    if (state === undefined) {
      process.stdout.write(`${args.device} is not attached; nothing to do\n`);
      return;
    }
    if (!daemonAlive(state.pid)) {
      if (!args.force) {
        throw new DstdError("E_DETACH", `the daemon of ${args.device} (pid ${state.pid}) is gone; use --force to clear it`);
      }
      removeState(stateDir, state.device);
      process.stdout.write(`cleared ${args.device} (its daemon was gone)\n`);
      return;
    }
    process.kill(state.pid, "SIGTERM");
    for (let i = 0; i < 600 && daemonAlive(state.pid); i++) await Bun.sleep(50);
    if (daemonAlive(state.pid)) throw new DstdError("E_DETACH", `the daemon of ${args.device} (pid ${state.pid}) did not stop within 30 s`);
    process.stdout.write(`detached ${args.device}\n`);
  },
});

/**
 * @module cli/demo — the README's main-job command (`npm start`): export a 1 GiB sparse
 * disk image from ./data on the loopback address, print how to copy to it, stop on Ctrl-C.
 * The printed command lines name this executable by its absolute path, so they work as
 * written from any directory (a relative `bun src/main.ts` would not).
 */
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import type { ConfigInput } from "../config/types.ts";
import { validateConfig } from "../config/validate.ts";
import { startExportNode } from "../daemon/export-node.ts";
import { acceptNbdForExports } from "../daemon/nbd-front.ts";
import { DST_DEFAULT_PORT, NBD_DEFAULT_PORT, parsePort, type ListenAddress } from "../lib/address.ts";
import { DstdError } from "../lib/errors.ts";
import { createLog } from "../lib/log.ts";
import { defineDstdCommand } from "./command.ts";
import { UsageError } from "./parse.ts";
import { waitForSignal } from "./signals.ts";

/** A word the shell passes through unchanged, quoted when it needs to be. */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_./:=@%+,-]+$/.test(word) ? word : `'${word.replaceAll("'", "'\\''")}'`;
}

/**
 * How to run this dstd again from anywhere: the compiled executable's absolute path, or (run
 * from source) the absolute paths of the bun executable and of src/main.ts.
 */
export function selfCommand(): string {
  const compiled = Bun.main.startsWith("/$bunfs/");
  return compiled ? shellQuote(process.execPath) : `${shellQuote(process.execPath)} ${shellQuote(Bun.main)}`;
}

export default defineDstdCommand({
  meta: {
    name: "demo",
    description:
      "Export ./data/disk.img (1 GiB, sparse; created when missing) on 127.0.0.1, over DST and NBD, to loopback clients only. Prints how to copy to and from it; Ctrl-C stops it.",
  },
  args: {
    dir: { type: "string", description: "data folder (default ./data)", valueHint: "DIR" },
    port: { type: "string", alias: "p", description: "DST port (default 10810; NBD uses 10809 with it, PORT+1 with any other PORT; 0: any free ports)", valueHint: "PORT" },
  },
  examples: ["npm start", "dstd demo --dir /var/tmp/dstd-demo -p 20810"],
  async run({ args }) {
    const port = args.port === undefined ? DST_DEFAULT_PORT : parsePort(args.port);
    if (typeof port === "string") throw new UsageError(`--port: ${port}`);
    if (port === 65535) throw new UsageError(`--port: ${port} leaves no room for the NBD port; use 1..65534 (or 0 for any free ports)`);
    const dir = resolve(args.dir ?? "data");
    mkdirSync(dir, { recursive: true });
    const nbdPort = port === DST_DEFAULT_PORT ? NBD_DEFAULT_PORT : port === 0 ? 0 : port + 1;
    const input: ConfigInput = {
      export: [
        {
          name: "disk",
          file: `${dir}/disk.img`,
          size: "1GiB",
          listen: [`127.0.0.1:${port}`],
          nbd_listen: [`127.0.0.1:${nbdPort}`],
          allow: ["127.0.0.1/32:rw", "::1/128:rw"],
          description: "dstd demo disk",
        },
      ],
    };
    const result = validateConfig(input);
    if (!("config" in result)) throw new DstdError("E_CONFIG", result.issues.map((i) => `${i.path}: ${i.message}`).join("\n"));
    const log = createLog("info", "demo");
    const signalled = waitForSignal(); // before "listening" is logged (cli/export.ts says why)
    const node = await startExportNode({ exports: result.config.exports, log, nbdAccept: acceptNbdForExports, limits: result.config.limits });
    const bound = (address: ListenAddress | undefined) => (address?.transport === "tcp" ? address.port : 0);
    const url = `dst://127.0.0.1:${bound(node.dstAddresses[0])}/disk`;
    const dstd = selfCommand();
    const sample = shellQuote(`${dir}/sample.img`);
    const back = shellQuote(`${dir}/back.img`);
    process.stdout.write(
      [
        "",
        `dstd is serving export 'disk' (1 GiB sparse file ${dir}/disk.img) at ${url}`,
        `and as standard NBD at nbd://127.0.0.1:${bound(node.nbdAddresses[0])}/disk (nbdinfo, nbdcopy, qemu-img work against it)`,
        "Try, from another terminal (in any directory):",
        `  head -c 64M /dev/urandom > ${sample}`,
        `  ${dstd} copy ${sample} ${url} --progress`,
        `  ${dstd} copy ${url} ${back} --progress && cmp -n 67108864 ${sample} ${back}`,
        "Press Ctrl-C to stop.",
        "",
      ].join("\n"),
    );
    const signal = await signalled;
    log.info(`${signal}: stopping`);
    await node.stop();
  },
});

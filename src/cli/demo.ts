/**
 * @module cli/demo — the README's main-job command (`npm start`): export a 1 GiB sparse
 * disk image from ./data on the loopback address, print how to copy to it, stop on Ctrl-C.
 */
import { defineCommand } from "citty";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { validateConfig } from "../config/schema.ts";
import { startExportNode } from "../daemon/export-node.ts";
import { acceptNbdForExports } from "../daemon/nbd-front.ts";
import { createLog } from "../lib/log.ts";
import { waitForSignal } from "./signals.ts";

export default defineCommand({
  meta: { name: "demo", description: "Export ./data/disk.img (1 GiB, sparse) on 127.0.0.1 — the quick start" },
  args: {
    dir: { type: "string", description: "data folder (default ./data)", valueHint: "DIR" },
    port: { type: "string", description: "DST port (default 10810)", valueHint: "PORT" },
  },
  async run({ args }) {
    const dir = resolve(args.dir ?? "data");
    mkdirSync(dir, { recursive: true });
    const port = Number(args.port ?? 10810);
    const nbdPort = port === 10810 ? 10809 : port + 1;
    const result = validateConfig({
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
    });
    if (!("config" in result)) throw new Error(result.issues.map((i) => `${i.path}: ${i.message}`).join("\n"));
    const log = createLog("info", "demo");
    const node = await startExportNode({ exports: result.config.exports, log, nbdAccept: acceptNbdForExports, limits: result.config.limits });
    const url = `dst://127.0.0.1:${port}/disk`;
    process.stdout.write(
      [
        "",
        `dstd is serving export 'disk' (1 GiB sparse file ${dir}/disk.img) at ${url}`,
        `and as standard NBD at nbd://127.0.0.1:${nbdPort}/disk (nbdinfo, nbdcopy, qemu-img work against it)`,
        "Try, from another terminal:",
        `  head -c 64M /dev/urandom > /tmp/sample.img`,
        `  npx bun src/main.ts copy /tmp/sample.img ${url} --progress`,
        `  npx bun src/main.ts copy ${url} /tmp/back.img --progress && cmp -n 67108864 /tmp/sample.img /tmp/back.img`,
        "Press Ctrl-C to stop.",
        "",
      ].join("\n"),
    );
    const signal = await waitForSignal();
    log.info(`${signal}: stopping`);
    await node.stop();
  },
});

/**
 * @module cli/index — the root `dstd` command: subcommands are loaded lazily so
 * `dstd --version` stays fast.
 */
import { defineCommand } from "citty";
import { VERSION } from "../version.ts";

export const main = defineCommand({
  meta: {
    name: "dstd",
    version: VERSION,
    description: "Network block storage node: serve disks over the DST transaction protocol and NBD, copy to and from them",
  },
  subCommands: {
    export: () => import("./export.ts").then((m) => m.default),
    copy: () => import("./copy.ts").then((m) => m.default),
    "check-config": () => import("./check-config.ts").then((m) => m.default),
    demo: () => import("./demo.ts").then((m) => m.default),
    keygen: () => import("./keygen.ts").then((m) => m.default),
    attach: () => import("./attach.ts").then((m) => m.default),
    detach: () => import("./detach.ts").then((m) => m.default),
    list: () => import("./list.ts").then((m) => m.default),
    status: () => import("./status.ts").then((m) => m.default),
    up: () => import("./up.ts").then((m) => m.default),
    events: () => import("./events.ts").then((m) => m.default),
    reload: () => import("./reload.ts").then((m) => m.default),
  },
});

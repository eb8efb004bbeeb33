/**
 * @module cli/index — the table of `dstd` subcommands: name, one-line summary (the root help)
 * and a lazy loader, so `dstd --version` and `dstd help` load no command code.
 */
import type { DstdCommand } from "./command.ts";

export interface CommandEntry {
  summary: string;
  load: () => Promise<DstdCommand>;
}

const load = <T>(module: Promise<{ default: T }>) => module.then((m) => m.default as DstdCommand);

export const COMMANDS: Readonly<Record<string, CommandEntry>> = {
  export: { summary: "serve a sparse file, a block device or a memory disk over DST (and NBD)", load: () => load(import("./export.ts")) },
  copy: { summary: "copy between a local file, device or stdin/stdout and an export, or between exports", load: () => load(import("./copy.ts")) },
  "check-config": { summary: "validate a config file and check what export and attach would refuse", load: () => load(import("./check-config.ts")) },
  demo: { summary: "export ./data/disk.img (1 GiB, sparse) on 127.0.0.1: the quick start", load: () => load(import("./demo.ts")) },
  keygen: { summary: "create an identity key file (mode 0600) for authenticated sessions", load: () => load(import("./keygen.ts")) },
  attach: { summary: "attach a remote export as /dev/nbdN, or serve it as a local NBD endpoint", load: () => load(import("./attach.ts")) },
  detach: { summary: "flush and detach an attachment", load: () => load(import("./detach.ts")) },
  list: { summary: "show attachments and their counters (--json for scripts)", load: () => load(import("./list.ts")) },
  status: { summary: "what a running node (dstd up) is doing, and the attachments (--json for scripts)", load: () => load(import("./status.ts")) },
  up: { summary: "run every export and attachment of a config file in one supervised process", load: () => load(import("./up.ts")) },
  events: { summary: "stream a running node's state changes as JSON lines (--follow)", load: () => load(import("./events.ts")) },
  resize: { summary: "grow (or shrink) an export of the running node while its clients stay connected", load: () => load(import("./resize.ts")) },
  leg: { summary: "suspend a mirror leg of the running node for maintenance, or resume it", load: () => load(import("./leg.ts")) },
  replica: { summary: "replication of the running node's exports: status, pause/resume, promote, demote, resync", load: () => load(import("./replica.ts")) },
  reload: { summary: "make a running node re-read its config (as SIGHUP), reporting what changed", load: () => load(import("./reload.ts")) },
  help: { summary: "show help for dstd or for one command", load: () => load(import("./help.ts")) },
  version: { summary: "print the version", load: () => load(import("./version.ts")) },
};

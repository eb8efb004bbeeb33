/**
 * @module cli/up — `dstd up --config FILE`: run everything the node's config names in one
 * long-lived process (daemon/node.ts). Signals: SIGHUP reloads (as `dstd reload`);
 * SIGTERM/SIGINT stop (attachments flush; kernel devices are detached); SIGUSR2 stops but
 * hands kernel devices over (they stay attached for the next `dstd up` or `dstd attach`).
 * `--root-storage-daemon` re-executes as "@dstd" first (sys/argv0.ts).
 */
import { defineCommand } from "citty";
import { parseListenAddress, type ListenAddress } from "../lib/address.ts";
import { DstdError, errorMessage } from "../lib/errors.ts";
import { createLog, defaultLogFormat, isLogFormat, isLogLevel, type LogFormat, type LogLevel } from "../lib/log.ts";
import { loadConfigFile } from "../config/load.ts";
import { startCryptoThreads } from "./args.ts";
import { DEFAULT_METRICS_PORT } from "../config/defaults.ts";
import { Node } from "../daemon/node.ts";
import type { StopMode } from "../daemon/supervisor.ts";
import { SystemdNotifier } from "../status/notify.ts";
import { becomeStorageDaemon } from "../sys/argv0.ts";

export default defineCommand({
  meta: {
    name: "up",
    description:
      "Run every export and attachment of a config file in one process, with a control socket (dstd status/events/reload), Prometheus metrics and systemd notification. SIGHUP reloads; SIGTERM stops; SIGUSR2 stops but leaves kernel devices attached",
  },
  args: {
    config: { type: "string", description: "the node's TOML config file", valueHint: "FILE", required: true },
    "state-dir": { type: "string", description: "state directory: control socket, attachment records (default: $DSTD_STATE_DIR, else the config's state_dir, else /var/lib/dstd)", valueHint: "DIR" },
    "metrics-listen": { type: "string", description: "serve Prometheus metrics on HOST:PORT/metrics (default: the config's metrics_listen)", valueHint: "ADDR" },
    "log-level": { type: "string", description: "error | warn | info | debug | trace (default: the config's log_level)", valueHint: "LEVEL" },
    "log-format": { type: "string", description: "text | json (default: $DSTD_LOG_FORMAT, else the config's log_format, else text)", valueHint: "FORMAT" },
    "root-storage-daemon": { type: "boolean", description: "re-execute as '@dstd' so a system shutdown leaves this process serving the root disk until it is unmounted" },
  },
  async run({ args }) {
    if (args["root-storage-daemon"]) becomeStorageDaemon();
    const configPath = args.config;
    const config = loadConfigFile(configPath); // the node validates it whole again; this picks the log settings
    const level = chooseLevel(args["log-level"]);
    const format = chooseFormat(args["log-format"], config.logFormat);
    const log = createLog(level ?? config.logLevel, undefined, { format });
    await startCryptoThreads(config.cryptoThreads, log);
    const metricsListen = args["metrics-listen"] === undefined ? undefined : parseMetricsListen(args["metrics-listen"]);
    const stateDir = args["state-dir"] ?? (process.env.DSTD_STATE_DIR || null); // an empty variable counts as unset

    // Signals are taken before the (possibly long) start, so none of them kills us half-way.
    let stopWanted: StopMode | null = null;
    let wake: () => void = () => {};
    let node: Node | null = null;
    let reloadWanted = false;
    const onStop = (mode: StopMode, signal: string) => () => {
      log.info(`${signal}: ${mode === "handover" ? "stopping; kernel devices stay attached" : "stopping"}`);
      stopWanted ??= mode;
      wake();
    };
    const handlers: Array<[NodeJS.Signals, () => void]> = [
      ["SIGTERM", onStop("stop", "SIGTERM")],
      ["SIGINT", onStop("stop", "SIGINT")],
      ["SIGUSR2", onStop("handover", "SIGUSR2")],
      [
        "SIGHUP",
        () => {
          if (stopWanted !== null) return log.info("SIGHUP: stopping; no reload");
          if (node === null) reloadWanted = true;
          else node.reload().catch((error: unknown) => log.warn(`SIGHUP: no reload: ${errorMessage(error)}`)); // the outcome itself is logged by the node
        },
      ],
    ];
    for (const [signal, handler] of handlers) process.on(signal, handler);
    try {
      const notifier = SystemdNotifier.fromEnvironment(log.child("systemd"));
      node = await Node.start({ configPath, stateDir, metricsListen, logLevel: level, log, notifier });
      if (reloadWanted && stopWanted === null) node.reload().catch((error: unknown) => log.warn(`SIGHUP: no reload: ${errorMessage(error)}`));
      if (stopWanted === null) await new Promise<void>((resolve) => (wake = resolve));
      await node.stop(stopWanted ?? "stop");
      log.info("stopped");
    } finally {
      for (const [signal, handler] of handlers) process.off(signal, handler);
    }
  },
});

function chooseLevel(text: string | undefined): LogLevel | undefined {
  if (text === undefined) return undefined;
  if (!isLogLevel(text)) throw new DstdError("E_USAGE", `--log-level: '${text}' is not one of error, warn, info, debug, trace`);
  return text;
}

function chooseFormat(text: string | undefined, configured: LogFormat): LogFormat {
  if (text === undefined) return process.env.DSTD_LOG_FORMAT !== undefined ? defaultLogFormat() : configured;
  if (!isLogFormat(text)) throw new DstdError("E_USAGE", `--log-format: '${text}' is not one of text, json`);
  return text;
}

function parseMetricsListen(text: string): ListenAddress {
  const address = parseListenAddress(text, DEFAULT_METRICS_PORT);
  if (typeof address === "string") throw new DstdError("E_USAGE", `--metrics-listen: ${address}`);
  if (address.transport !== "tcp") throw new DstdError("E_USAGE", "--metrics-listen: metrics are served over TCP only (HOST:PORT)");
  return address;
}

/**
 * @module cli/signals — wait for SIGINT or SIGTERM (the daemons' clean-stop path). The
 * handlers are installed when this is called, so call it before starting the daemon: a
 * signal that arrives while it starts then stops it cleanly once it is up.
 */
export function waitForSignal(): Promise<string> {
  return new Promise((resolve) => {
    const done = (signal: string) => {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
      resolve(signal);
    };
    const onInt = () => done("SIGINT");
    const onTerm = () => done("SIGTERM");
    process.on("SIGINT", onInt);
    process.on("SIGTERM", onTerm);
  });
}

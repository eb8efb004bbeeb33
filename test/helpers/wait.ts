/**
 * @module test/helpers/wait — wait for a condition another process or the event loop will
 * make true (a log line, a socket close), instead of sleeping a guessed time. Fails with
 * `what` when it does not happen within the limit.
 */
export async function until(condition: () => boolean, what: string, limitMs = 5000): Promise<void> {
  const end = performance.now() + limitMs;
  while (!condition()) {
    if (performance.now() > end) throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    await Bun.sleep(2);
  }
}

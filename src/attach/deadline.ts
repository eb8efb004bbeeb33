/**
 * @module attach/deadline — awaiting with a deadline, for the attach lifecycle's waits on
 * the kernel and the export (a takeover verdict, a detach flush, a socket close).
 *
 * Must not: cancel what it waits for (the promise keeps running after "timeout").
 */

/** `promise`, or "timeout" after `ms` (the promise keeps running). */
export async function within<T>(promise: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<"timeout">((resolve) => (timer = setTimeout(() => resolve("timeout"), ms)));
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * @module lib/errors — operational errors with stable codes. Programmer errors are assertions
 * (lib/assert.ts); everything a user, a peer or the disk can cause is a DstdError whose
 * message names the problem and, where it helps, the fix.
 */
export class DstdError extends Error {
  /** Stable machine-readable code, e.g. "E_CONFIG", "E_REFUSED", "E_IO". */
  readonly code: string;
  /** errno to report on the wire when this error answers a request (EIO when unsure). */
  readonly errno: number;

  constructor(code: string, message: string, options: { errno?: number; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = "DstdError";
    this.code = code;
    this.errno = options.errno ?? 5;
  }
}

/** A backend operation failed; `errno` is what the client will see. */
export class BackendError extends DstdError {
  constructor(message: string, errno: number, cause?: unknown) {
    super("E_BACKEND", message, { errno, cause });
    this.name = "BackendError";
  }
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

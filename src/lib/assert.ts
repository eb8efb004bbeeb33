/**
 * @module lib/assert — programmer-error checks. A failed assertion means dstd itself is wrong:
 * it throws AssertionError, which crashes the process (and fails a simulation seed). Never
 * use it for peer or user input: those get a DstdError or a reason string.
 */
export class AssertionError extends Error {
  constructor(message: string) {
    super(`assertion failed: ${message}`);
    this.name = "AssertionError";
  }
}

export function assert(condition: unknown, message = "unexpected state"): asserts condition {
  if (!condition) throw new AssertionError(message);
}

export function assertNever(value: never, message = "unexpected variant"): never {
  throw new AssertionError(`${message}: ${JSON.stringify(value)}`);
}

/**
 * @module storage/tree/join — completion plumbing shared by the mapping layers: joining the
 * completions of the pieces one request was split into (first error wins, `done` exactly
 * once), and running a chain of asynchronous steps without growing the stack when the
 * ports below complete synchronously (a memory leg answers inside the call).
 */
import type { Done } from "../port.ts";

/**
 * A completion to be called `count` times; calls `done` once after the last call, with the
 * first non-zero errno seen (0 if none). Callers that issue pieces in a loop pass
 * `pieces + 1` and call the returned function once more after the loop (an issue guard), so
 * synchronous completions inside the loop cannot finish the request early.
 */
export function joinCompletions(count: number, done: Done): Done {
  let remaining = count;
  let errno = 0;
  return (result: number) => {
    if (result !== 0 && errno === 0) errno = result;
    remaining--;
    if (remaining === 0) done(errno);
  };
}

/**
 * Run `step(i, next)` for i = 0, 1, … until a step calls `next(false)` or `count` steps ran,
 * then `finish()`. A step that completes synchronously does not recurse: the loop picks up the
 * next step, so thousands of synchronous steps use constant stack.
 */
export function sequence(count: number, step: (index: number, next: (more: boolean) => void) => void, finish: () => void): void {
  let index = 0;
  let looping = false;
  let resumed = false;
  let stopped = false;
  const next = (more: boolean) => {
    if (!more) stopped = true;
    index++;
    if (looping) {
      resumed = true;
      return;
    }
    loop();
  };
  const loop = () => {
    looping = true;
    for (;;) {
      if (stopped || index >= count) {
        looping = false;
        finish();
        return;
      }
      resumed = false;
      step(index, next);
      if (!resumed) break; // asynchronous: `next` will call loop() later
    }
    looping = false;
  };
  loop();
}

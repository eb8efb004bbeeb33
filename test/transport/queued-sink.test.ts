/**
 * transport/queued-sink.ts: freeze() stops reading for good. A kernel attachment's handover
 * (attach/leave.ts) stops taking the kernel's requests this way; a plain pause() was undone by
 * the NBD connection's own flow control at its next completion (nbd/transmission.ts calls
 * resume() whenever it is no longer blocked), and requests kept coming in during the handover.
 */
import { expect, test } from "bun:test";
import { QueuedSink, type RawSocket } from "../../src/transport/queued-sink.ts";

function socket(): RawSocket & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    write: (bytes: Uint8Array) => bytes.length,
    end: () => void calls.push("end"),
    terminate: () => void calls.push("terminate"),
    pause: () => void calls.push("pause"),
    resume: () => void calls.push("resume"),
  };
}

test("pause() is undone by resume(); freeze() is not", () => {
  const raw = socket();
  const sink = new QueuedSink(raw);
  sink.pause();
  sink.resume();
  expect(raw.calls).toEqual(["pause", "resume"]);
  sink.freeze();
  sink.resume(); // the protocol's flow control, no longer blocked
  sink.resume();
  expect(raw.calls).toEqual(["pause", "resume", "pause"]);
  sink.write(new Uint8Array(8)); // replies still go out
  sink.thaw(); // a handover given up: reading goes on
  expect(raw.calls).toEqual(["pause", "resume", "pause", "resume"]);
});

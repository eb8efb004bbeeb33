/**
 * attach/leave.ts: a handover or detach reports a final flush the export did not confirm
 * (the daemon then exits non-zero naming it) instead of taking a timeout for success, and a
 * handover waits for every request it took, on every link, before its sockets close.
 */
import { expect, test } from "bun:test";
import type { ExportLink } from "../../src/attach/export-link.ts";
import type { KernelLinks } from "../../src/attach/kernel-links.ts";
import { flushExport, handOver, type LeaveStep } from "../../src/attach/leave.ts";
import type { NbdControl } from "../../src/kernel/device.ts";
import { recordingLog } from "../helpers/log.ts";

function step(link: Partial<ExportLink>, events: string[]): LeaveStep {
  const links = {
    pauseAll: () => void events.push("pause"),
    resumeAll: () => void events.push("resume"),
    terminateAll: () => void events.push("terminate"),
    queuedBytes: 0,
  } as unknown as KernelLinks;
  // Copied as descriptors: a getter stays a getter.
  const exportLink = Object.defineProperties({ deadlineMs: 50, outstanding: 0, flush: async () => {} }, Object.getOwnPropertyDescriptors(link)) as unknown as ExportLink;
  return { control: {} as NbdControl, links, exportLink, index: 0, device: "/dev/nbd0", log: { ...recordingLog(), error() {} } };
}

test("a flush the export refuses or never answers is reported, not taken for success", async () => {
  expect(await flushExport(step({}, []).exportLink)).toBeNull();
  expect(await flushExport(step({ flush: () => Promise.reject(new Error("EIO: the export's disk failed")) }, []).exportLink)).toBe("EIO: the export's disk failed");
  const never = step({ flush: () => new Promise<void>(() => {}) }, []).exportLink;
  expect(await flushExport(never)).toMatch(/^no answer within \d+(\.\d+)? s$/);
}, 20_000);

test("a handover waits until every request taken is answered, then flushes, then closes the sockets", async () => {
  const events: string[] = [];
  let outstanding = 3;
  const s = step(
    {
      deadlineMs: 10_000, // far past the test's own steps: the wait ends when the requests are answered
      get outstanding() {
        return outstanding;
      },
      flush: async () => void events.push(`flush with ${outstanding} outstanding`),
    },
    events,
  );
  const left = handOver(s);
  await Bun.sleep(20);
  expect(events).toEqual(["pause"]); // still waiting for the three
  outstanding = 0;
  expect(await left).toBeNull();
  expect(events).toEqual(["pause", "flush with 0 outstanding", "terminate"]);
});

test("a handover whose requests are never answered reports them", async () => {
  const s = step({ outstanding: 2 }, []);
  expect(await handOver(s)).toBe("2 requests still unanswered");
}, 20_000);

test("a handover whose flush fails, allowed to stay, reads the kernel's sockets again instead of closing them", async () => {
  const events: string[] = [];
  const failing = { flush: () => Promise.reject(new Error("EIO")) };
  expect(await handOver(step(failing, events), true)).toBe("EIO");
  expect(events).toEqual(["pause", "resume"]); // still serving, its replay log intact
  const leaving: string[] = [];
  expect(await handOver(step(failing, leaving))).toBe("EIO");
  expect(leaving).toEqual(["pause", "terminate"]); // dstd up, stopping: it cannot stay
});

/**
 * @module test/helpers/log — a logger that records lines instead of printing them, so
 * tests can assert on the clear messages dstd promises (refusals, protocol errors).
 */
export interface RecordingLog {
  lines: string[];
  info(message: string): void;
  warn(message: string): void;
  debug(message: string): void;
}

export function recordingLog(echo = process.env.DSTD_TEST_LOG === "1"): RecordingLog {
  const lines: string[] = [];
  const add = (level: string) => (message: string) => {
    lines.push(`${level}: ${message}`);
    if (echo) console.log(`${level}: ${message}`);
  };
  return { lines, info: add("info"), warn: add("warn"), debug: add("debug") };
}

/**
 * @module test/helpers/tools — external tools a test needs. A missing tool makes the test
 * skip with a message naming the Debian package; under CI (DSTD_REQUIRE_TOOLS=1, set by
 * .ci/run after installing the packages) a missing tool is an error instead, so nothing
 * silently skips there.
 */
export function haveTools(tools: Record<string, string>): boolean {
  const missing = Object.entries(tools).filter(([tool]) => Bun.which(tool) === null);
  if (missing.length === 0) return true;
  const text = missing.map(([tool, pkg]) => `${tool} (Debian package ${pkg})`).join(", ");
  if (process.env.DSTD_REQUIRE_TOOLS === "1") throw new Error(`required test tools missing: ${text}`);
  console.warn(`skipping: needs ${text}`);
  return false;
}

/** The system Python, which python3-libnbd installs into (not a version manager's python3 earlier on PATH). */
export const SYSTEM_PYTHON = "/usr/bin/python3";

/** true when libnbd's Python binding can be imported; else skips (or, under CI, fails) naming the Debian package. */
export function haveLibnbdPython(): boolean {
  if (Bun.spawnSync([SYSTEM_PYTHON, "-c", "import nbd"], { stdout: "ignore", stderr: "ignore" }).exitCode === 0) return true;
  if (process.env.DSTD_REQUIRE_TOOLS === "1") throw new Error("required test library missing: python3 module nbd (Debian package python3-libnbd)");
  console.warn("skipping: needs the python3 module nbd (Debian package python3-libnbd)");
  return false;
}

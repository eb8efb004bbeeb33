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

/**
 * @module build — `bun run build`: compile dstd into one executable, dist/dstd.
 * The source map is embedded so stack traces name our files and lines; names are kept
 * (no identifier minification) so they stay readable too.
 */
import { $ } from "bun";
import pkg from "./package.json" with { type: "json" };

const outfile = process.env.DSTD_OUTFILE ?? "dist/dstd";
const target = process.env.DSTD_TARGET ?? "bun-linux-x64";

await $`mkdir -p ${outfile.split("/").slice(0, -1).join("/") || "."}`;
const result = await Bun.build({
  // Workers are embedded only as extra entry points (kernel/resize.ts, sys/librbd-offload.ts and
  // transport/crypto-pool.ts look for their workers there).
  entrypoints: ["./src/main.ts", "./src/kernel/resize-worker.ts", "./src/sys/librbd-worker.ts", "./src/sys/crypto-worker.ts"],
  compile: { target: target as "bun-linux-x64", outfile },
  minify: { whitespace: true, syntax: true, identifiers: false },
  sourcemap: "linked",
  define: { "process.env.DSTD_BUILD_VERSION": JSON.stringify(pkg.version) },
});
if (!result.success) {
  for (const log of result.logs) console.error(log);
  process.exit(1);
}
const version = (await $`${outfile} --version`.text()).trim();
if (version !== pkg.version) {
  console.error(`built ${outfile} reports version '${version}', expected '${pkg.version}'`);
  process.exit(1);
}
console.log(`built ${outfile} (dstd ${version}, ${target})`);

/**
 * @module cli/keygen — `dstd keygen --identity NAME --out FILE`: a new identity key
 * (256-bit random secret), written with mode 0600 and never over an existing file.
 */
import { defineCommand } from "citty";
import { generateKeyFile, writeKeyFile } from "../crypto/keys.ts";

export default defineCommand({
  meta: { name: "keygen", description: "Create an identity key file (copy it to both ends; keep it secret)" },
  args: {
    identity: { type: "string", description: "identity name: 1-64 of A-Z a-z 0-9 . _ -", required: true, valueHint: "NAME" },
    out: { type: "string", description: "file to create (mode 0600)", required: true, valueHint: "FILE" },
    force: { type: "boolean", description: "replace an existing file" },
  },
  run({ args }) {
    writeKeyFile(args.out, generateKeyFile(args.identity), { force: args.force === true });
    process.stdout.write(`wrote key for identity '${args.identity}' to ${args.out} (mode 0600)\n`);
  },
});

/**
 * @module cli/keygen — `dstd keygen --identity NAME --out FILE`: a new identity key
 * (256-bit random secret), written with mode 0600 and never over an existing file.
 */
import { generateKeyFile, writeKeyFile } from "../crypto/keys.ts";
import { defineDstdCommand } from "./command.ts";

export default defineDstdCommand({
  meta: { name: "keygen", description: "Create an identity key file: a random 256-bit secret for one identity, written with mode 0600. Copy it to both ends (the export names it with --key-file or [[key]]) and keep it secret." },
  examples: ["dstd keygen --identity alice --out alice.key"],
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

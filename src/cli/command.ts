/**
 * @module cli/command — what a dstd command is: a citty command definition (meta, args, run)
 * plus the few facts the strict parser and the help renderer need that citty has no field for:
 * which flags may be given more than once, hints for flags people bring from other tools,
 * and example lines for the help text.
 */
import type { ArgsDef, CommandDef } from "citty";

export interface DstdCommand<T extends ArgsDef = ArgsDef> extends CommandDef<T> {
  /** Flags that may be given more than once (`--listen A --listen B`); every other flag once. */
  repeatable?: readonly string[];
  /**
   * Flags of other tools that users type by habit, mapped to what to write instead:
   * `{ port: "--listen HOST:PORT" }` turns `--port`/`-p` into a usage error that says so.
   */
  habits?: Readonly<Record<string, string>>;
  /** Example command lines shown at the end of the help. */
  examples?: readonly string[];
}

/** Identity with the richer type (citty's defineCommand would drop the extra fields' type). */
export function defineDstdCommand<const T extends ArgsDef>(def: DstdCommand<T>): DstdCommand<T> {
  return def;
}

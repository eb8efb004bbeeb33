/**
 * @module cli/parse — the strict command-line parser. citty's own parser accepts anything
 * (unknown flags are kept, extra positionals dropped), so `--alow`, `-p 10820` or an unquoted
 * `--size 10 GB` would silently change what runs. Here every token must mean something:
 * an unknown flag, a missing value, an extra argument or a flag given twice is a UsageError
 * that names it (and the nearest known flag). The config file is just as strict about its keys
 * (config/fields.ts checkKeys); the command line must not be looser.
 *
 * Grammar: `--name VALUE`, `--name=VALUE`, `-x VALUE` (declared aliases), booleans as
 * `--name`, `--name=true|false`, `--no-name`; `--` ends the options; `-` alone is a positional
 * (stdin/stdout). A value that looks like a flag (`--size --allow …`) is a missing value.
 */
import type { ArgDef, ArgsDef } from "citty";
import { suggest } from "../config/fields.ts";
import { quoteInput } from "../lib/size.ts";
import { DstdError } from "../lib/errors.ts";
import type { DstdCommand } from "./command.ts";

/** A mistake in what was typed: printed as one line (plus the command's usage when asked), exit 2. */
export class UsageError extends DstdError {
  constructor(
    message: string,
    /** Print the command's usage after the message (a required argument is missing). */
    readonly showUsage = false,
  ) {
    super("E_USAGE", message, { errno: 22 });
    this.name = "UsageError";
  }
}

export interface ParsedCommandLine {
  /** citty-shaped values: `_` the positionals, each flag its (last) value, positionals by name. */
  args: Record<string, unknown> & { _: string[] };
  /** Canonical form, one `--name=value` per value given: what `repeated()` reads. */
  rawArgs: string[];
  /** `--help` or `-h` was given (help wins over other mistakes). */
  help: boolean;
}

interface Flag {
  name: string;
  def: ArgDef;
  takesValue: boolean;
}

/** "--alow" → "--allow": the known flag nearest to an unknown one, when it is a likely typo. */
export function nearestFlag(name: string, known: readonly string[]): string | null {
  // "--key" → "--key-file": an unambiguous start of a flag is what was meant.
  const prefixed = known.filter((k) => name.length >= 3 && k.startsWith(name));
  if (prefixed.length === 1) return prefixed[0]!;
  return suggest(name, known);
}

function flagTable(argsDef: ArgsDef): { long: Map<string, Flag>; short: Map<string, Flag> } {
  const long = new Map<string, Flag>();
  const short = new Map<string, Flag>();
  for (const [name, def] of Object.entries(argsDef)) {
    if (def.type === "positional") continue;
    const flag = { name, def, takesValue: def.type !== "boolean" };
    long.set(name, flag);
    const aliases = "alias" in def && def.alias !== undefined ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : [];
    for (const alias of aliases) (alias.length === 1 ? short : long).set(alias, flag);
  }
  return { long, short };
}

/** What was typed, as it goes into a message: as is when plain, else quoted and cut short. */
function shown(token: string): string {
  return token.length <= 64 && !/[\u0000-\u001f\u007f]/.test(token) ? token : quoteInput(token, 64);
}

function looksLikeFlag(token: string): boolean {
  return token.startsWith("--") || /^-[A-Za-z]/.test(token);
}

/** Parse `tokens` (what follows the command name) against the command's declared arguments. */
export function parseCommandLine(tokens: readonly string[], command: DstdCommand, commandName: string): ParsedCommandLine {
  const argsDef = (command.args ?? {}) as ArgsDef;
  const { long, short } = flagTable(argsDef);
  const repeatable = new Set(command.repeatable ?? []);
  const habits = command.habits ?? {};
  const positionalDefs = Object.entries(argsDef).filter(([, def]) => def.type === "positional");
  const args: Record<string, unknown> & { _: string[] } = { _: [] };
  const rawArgs: string[] = [];
  const seen = new Map<string, string>();
  let help = false;
  let firstError: UsageError | null = null;
  const fail = (message: string) => {
    firstError ??= new UsageError(message);
  };
  const unknown = (spelled: string, bare: string) => {
    const habit = habits[bare];
    if (habit !== undefined) return fail(`there is no ${spelled} option: use ${habit}`);
    const guess = nearestFlag(bare, [...long.keys()]);
    const hint = guess === null ? "" : ` (did you mean --${guess}?)`;
    fail(`unknown option ${shown(spelled)}${hint}; see 'dstd ${commandName} --help'`);
  };
  const setValue = (flag: Flag, spelled: string, value: string | boolean) => {
    const previous = seen.get(flag.name);
    if (flag.takesValue && previous !== undefined && !repeatable.has(flag.name)) {
      fail(`${spelled} was given twice ('${shown(previous)}' and '${shown(String(value))}'); give it once`);
    }
    seen.set(flag.name, String(value));
    args[flag.name] = value;
    rawArgs.push(`--${flag.name}=${String(value)}`);
  };
  /** The token after a value flag is its value, unless it is missing or is itself a flag. */
  const takeValue = (flag: Flag, spelled: string, index: number): number => {
    const next = tokens[index + 1];
    if (next === undefined || looksLikeFlag(next) || next === "--") {
      const hint = "valueHint" in flag.def && flag.def.valueHint ? ` ${flag.def.valueHint}` : " VALUE";
      fail(`${spelled} needs a value: ${spelled}${hint}`);
      return index;
    }
    setValue(flag, spelled, next);
    return index + 1;
  };
  let afterFlag: string | null = null;
  let optionsEnded = false;
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const positional = optionsEnded || token === "-" || !token.startsWith("-");
    if (positional) {
      const index = args._.length;
      args._.push(token);
      if (index >= positionalDefs.length) {
        const expected = positionalDefs.length === 0 ? "takes no arguments" : `takes ${positionalDefs.map(([n]) => n.toUpperCase()).join(" ")}`;
        // Only for plain, short words: the hint repeats them.
        const flagText = afterFlag ?? "";
        const plain = afterFlag !== null && shown(flagText) === flagText && shown(token) === token;
        const [flagName, ...flagValue] = flagText.split(" ");
        const quote = plain ? ` after ${flagText} (a value with a space must be quoted: ${flagName} "${flagValue.join(" ")} ${token}")` : "";
        fail(`unexpected argument '${shown(token)}'${quote}; ${commandName} ${expected}`);
      }
      afterFlag = null;
      continue;
    }
    afterFlag = null;
    if (token === "--") {
      optionsEnded = true;
      continue;
    }
    if (token === "--help" || token === "-h") {
      help = true;
      continue;
    }
    if (token.startsWith("--")) {
      const eq = token.indexOf("=");
      const name = eq < 0 ? token.slice(2) : token.slice(2, eq);
      const inline = eq < 0 ? undefined : token.slice(eq + 1);
      let flag = long.get(name);
      if (flag === undefined && name.startsWith("no-")) {
        const negated = long.get(name.slice(3));
        if (negated !== undefined && !negated.takesValue && inline === undefined) {
          setValue(negated, token, false);
          continue;
        }
      }
      if (flag === undefined) {
        unknown(`--${name}`, name);
        continue;
      }
      const spelled = `--${name}`;
      if (!flag.takesValue) {
        if (inline === undefined || inline === "true") setValue(flag, spelled, true);
        else if (inline === "false") setValue(flag, spelled, false);
        else fail(`${spelled} takes no value (got '${inline}')`);
        continue;
      }
      if (inline !== undefined) {
        setValue(flag, spelled, inline);
        afterFlag = `${spelled} ${inline}`;
        continue;
      }
      const before = i;
      i = takeValue(flag, spelled, i);
      if (i > before) afterFlag = `${spelled} ${tokens[i]}`;
      continue;
    }
    // A short option: exactly one letter, declared as an alias.
    const letter = token.slice(1, 2);
    const flag = token.length === 2 ? short.get(letter) : undefined;
    if (flag === undefined) {
      unknown(token, token.slice(1));
      continue;
    }
    if (!flag.takesValue) {
      setValue(flag, token, true);
      continue;
    }
    const before = i;
    i = takeValue(flag, token, i);
    if (i > before) afterFlag = `${token} ${tokens[i]}`;
  }
  if (help) return { args, rawArgs, help };
  if (firstError !== null) throw firstError;
  for (const [name, def] of Object.entries(argsDef)) {
    if (def.type === "positional") continue;
    if (args[name] === undefined && def.default !== undefined) args[name] = def.default;
    if (def.required === true && args[name] === undefined) {
      const hint = "valueHint" in def && def.valueHint ? ` ${def.valueHint}` : "";
      throw new UsageError(`missing --${name}${hint}`, true);
    }
  }
  positionalDefs.forEach(([name, def], index) => {
    const value = args._[index];
    if (value !== undefined) args[name] = value;
    else if (def.default !== undefined) args[name] = def.default;
    else if (def.required !== false) throw new UsageError(`missing ${name.toUpperCase()}`, true);
  });
  return { args, rawArgs, help };
}

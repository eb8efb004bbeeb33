/**
 * @module cli/usage — help text for the root command and each subcommand, wrapped to the
 * terminal's width (80 columns when the output is not a terminal) and without escape codes
 * unless it goes to a terminal (and NO_COLOR is unset, https://no-color.org is the convention
 * the NO_COLOR variable follows). citty's renderer pads every line to the longest description
 * and colours regardless of the output, which is why dstd renders its own.
 */
import type { ArgDef, ArgsDef } from "citty";
import type { DstdCommand } from "./command.ts";

export interface Output {
  /** Columns available; text is wrapped to this. */
  width: number;
  /** Bold headings allowed (a terminal, NO_COLOR unset). */
  styled: boolean;
}

/** How to render for this stream: its width if a terminal, else 80 columns and no styling. */
export function outputOf(stream: { isTTY?: boolean; columns?: number }): Output {
  const tty = stream.isTTY === true;
  const columns = tty && typeof stream.columns === "number" && stream.columns > 0 ? stream.columns : 80;
  return { width: Math.max(40, columns), styled: tty && !process.env.NO_COLOR };
}

/** Greedy word wrap; words longer than the width stay whole on their own line. */
export function wrap(text: string, width: number, indent = 0, firstIndent = indent): string[] {
  const lines: string[] = [];
  let line = " ".repeat(firstIndent);
  let empty = true;
  for (const word of text.split(/\s+/).filter(Boolean)) {
    const candidate = empty ? line + word : `${line} ${word}`;
    if (!empty && candidate.length > width) {
      lines.push(line);
      line = " ".repeat(indent) + word;
    } else line = candidate;
    empty = false;
  }
  lines.push(line);
  return lines;
}

/** Two columns: names, then wrapped descriptions; a long name puts its description below it. */
function table(rows: Array<[string, string]>, width: number): string[] {
  const column = Math.min(Math.max(...rows.map(([name]) => name.length)) + 4, 30);
  const out: string[] = [];
  for (const [name, description] of rows) {
    const head = `  ${name}`;
    if (head.length + 2 > column) {
      out.push(head);
      out.push(...wrap(description, width, column));
    } else {
      const body = wrap(description, width, column, column);
      body[0] = head.padEnd(column) + body[0]!.slice(column);
      out.push(...body);
    }
  }
  return out;
}

function heading(text: string, out: Output): string {
  return out.styled ? `\u001B[1m${text}\u001B[22m` : text;
}

function valueHint(def: ArgDef): string {
  return "valueHint" in def && def.valueHint ? ` ${def.valueHint}` : def.type === "boolean" ? "" : " VALUE";
}

function flagLabel(name: string, def: ArgDef): string {
  const aliases = "alias" in def && def.alias !== undefined ? (Array.isArray(def.alias) ? def.alias : [def.alias]) : [];
  const short = aliases.find((a) => a.length === 1);
  // Long-only flags line up under the long names of flags that have a short form.
  return `${short === undefined ? "    " : `-${short}, `}--${name}${valueHint(def)}`;
}

/** The one-line synopsis: "dstd copy [OPTIONS] SOURCE TARGET". */
export function synopsis(name: string, command: DstdCommand): string {
  const argsDef = (command.args ?? {}) as ArgsDef;
  const parts = [`dstd ${name}`];
  const required = Object.entries(argsDef).filter(([, d]) => d.type !== "positional" && d.required === true);
  for (const [flag, def] of required) parts.push(`--${flag}${valueHint(def)}`);
  if (Object.values(argsDef).some((d) => d.type !== "positional" && d.required !== true)) parts.push("[OPTIONS]");
  for (const [arg, def] of Object.entries(argsDef)) {
    if (def.type !== "positional") continue;
    parts.push(def.required === false ? `[${arg.toUpperCase()}]` : arg.toUpperCase());
  }
  return parts.join(" ");
}

/** Full help of one subcommand. */
export function renderCommandUsage(name: string, command: DstdCommand, description: string, out: Output): string {
  const argsDef = (command.args ?? {}) as ArgsDef;
  const repeatable = new Set(command.repeatable ?? []);
  const lines: string[] = [];
  lines.push(...wrap(`${heading("Usage:", out)} ${synopsis(name, command)}`, out.width, 4, 0));
  lines.push("", ...wrap(description, out.width));
  const positionals = Object.entries(argsDef).filter(([, d]) => d.type === "positional");
  if (positionals.length > 0) {
    lines.push("", heading("Arguments:", out));
    lines.push(...table(positionals.map(([arg, def]) => [arg.toUpperCase(), def.description ?? ""]), out.width));
  }
  const flags = Object.entries(argsDef).filter(([, d]) => d.type !== "positional");
  lines.push("", heading("Options:", out));
  const rows: Array<[string, string]> = flags.map(([flag, def]) => {
    const notes = [def.required === true ? "(required)" : "", repeatable.has(flag) ? "(repeatable)" : ""].filter(Boolean);
    return [flagLabel(flag, def), [def.description ?? "", ...notes].join(" ")];
  });
  rows.push(["-h, --help", "show this help"]);
  if (!flags.some(([, def]) => "alias" in def && def.alias !== undefined)) for (const row of rows) row[0] = row[0].replace(/^ {4}/, "");
  lines.push(...table(rows, out.width));
  if (command.examples && command.examples.length > 0) {
    lines.push("", heading("Examples:", out));
    for (const example of command.examples) lines.push(...wrap(example, out.width, 4, 2));
  }
  return `${lines.join("\n")}\n`;
}

/** Help of the root command: the commands and where to go next. */
export function renderRootUsage(version: string, commands: Array<[string, string]>, out: Output): string {
  const lines: string[] = [];
  lines.push(
    ...wrap(`dstd ${version}: a network block storage node. Serves disks over the DST transaction protocol and NBD, and copies to and from them.`, out.width),
  );
  lines.push("", `${heading("Usage:", out)} dstd COMMAND [OPTIONS]`);
  lines.push("", heading("Commands:", out));
  lines.push(...table(commands, out.width));
  lines.push("", heading("Options:", out));
  lines.push(...table([["-h, --help", "show this help"], ["-V, --version", "print the version"]], out.width));
  lines.push("", ...wrap("Run 'dstd help COMMAND' (or 'dstd COMMAND --help') for a command's options. Quick start: README.md; config keys: docs/config.md.", out.width));
  return `${lines.join("\n")}\n`;
}

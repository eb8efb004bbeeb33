/**
 * @module replication/role-file — what a replicated export is, kept durably in its log
 * directory (`role.state`, two alternating slots: state-file.ts) so a promotion or a
 * demotion outlives a restart: the configured role is only the role of a new log directory
 * (docs/replication.md §11).
 */
import type { LogDirectory } from "./files.ts";
import { StateFile } from "./state-file.ts";

export const ROLE_FILE = "role.state";
export const ROLE_STATE_KIND = 3;

export type Role = "primary" | "secondary" | "diverged";

export interface RoleState {
  role: Role;
  /** The generation this node last knew (a promotion starts a new one). */
  generation: number;
  /** Why (diverged: the fork; otherwise the last transition). */
  reason: string | null;
  /**
   * A sync (initial sync, resync) was begun and its state file may not record it yet: a
   * restart before it does starts a full sync (the disk and the log directory no longer say
   * what the disk holds).
   */
  syncing?: boolean;
}

function validateRole(value: unknown): RoleState | string {
  if (typeof value !== "object" || value === null) return "not an object";
  const v = value as Record<string, unknown>;
  if (v.role !== "primary" && v.role !== "secondary" && v.role !== "diverged") return "role is not primary, secondary or diverged";
  if (typeof v.generation !== "number" || !Number.isSafeInteger(v.generation) || v.generation < 0) return "generation is not a non-negative integer";
  if (v.reason !== null && typeof v.reason !== "string") return "reason is not a string or null";
  return { role: v.role, generation: v.generation, reason: v.reason as string | null, syncing: v.syncing === true };
}

export async function readRole(dir: LogDirectory): Promise<RoleState | null> {
  const file = await StateFile.open(dir, ROLE_FILE, ROLE_STATE_KIND, validateRole);
  await file.close();
  return file.value;
}

export async function saveRole(dir: LogDirectory, value: RoleState): Promise<void> {
  const file = await StateFile.open(dir, ROLE_FILE, ROLE_STATE_KIND, validateRole);
  try {
    await file.saveNow(value);
  } finally {
    await file.close();
  }
}

/**
 * @module engine/lifecycle — the client engine's states and the transitions between them
 * (drawn in engine/client-engine.ts's module comment). Pure.
 */

export type EngineState = "idle" | "connecting" | "handshaking" | "ready" | "failed" | "closed";

/** Allowed transitions; anything else is a bug (ClientEngine.setState asserts). */
export const TRANSITIONS: Readonly<Record<EngineState, readonly EngineState[]>> = {
  idle: ["connecting", "failed", "closed"],
  connecting: ["handshaking", "idle", "failed", "closed"],
  handshaking: ["ready", "idle", "failed", "closed"],
  ready: ["idle", "failed", "closed"],
  failed: [],
  closed: [],
};

/**
 * @module status/events — the node's event stream: state changes of the node and its
 * services, reloads, restarts, connections. Each event gets a sequence number and a time;
 * the last HISTORY events are kept so `dstd events` can show what just happened and a
 * follower can resume after a given sequence number. Subscribers are called synchronously;
 * the control socket bounds what each one may have queued (control/server.ts).
 * Schema: docs/status.md "Events".
 */

export const EVENT_HISTORY = 256;

export const NODE_EVENT_TYPES = [
  "node.starting",
  "node.ready",
  "node.reloading",
  "node.reloaded",
  "node.reload_failed",
  "node.stopping",
  "service.state",
  "service.restart_scheduled",
  "service.added",
  "service.removed",
  "connection.open",
  "connection.close",
  "export.resized",
  "export.leg",
] as const;
export type NodeEventType = (typeof NODE_EVENT_TYPES)[number];

export type EventFields = Readonly<Record<string, string | number | boolean | null>>;

export interface NodeEvent {
  seq: number;
  time: string;
  type: NodeEventType;
  [field: string]: string | number | boolean | null;
}

export type EventListener = (event: NodeEvent) => void;

export class EventBus {
  private seq = 0;
  private readonly history: NodeEvent[] = [];
  private readonly listeners = new Set<EventListener>();

  constructor(
    private readonly historySize = EVENT_HISTORY,
    private readonly now: () => Date = () => new Date(),
  ) {}

  emit(type: NodeEventType, fields: EventFields = {}): NodeEvent {
    const event: NodeEvent = { seq: ++this.seq, time: this.now().toISOString(), type };
    for (const [key, value] of Object.entries(fields)) if (!(key in event)) event[key] = value;
    this.history.push(event);
    if (this.history.length > this.historySize) this.history.shift();
    for (const listener of [...this.listeners]) listener(event);
    return event;
  }

  /** Kept events with seq > `after` (all kept ones for 0). */
  since(after = 0): NodeEvent[] {
    return this.history.filter((event) => event.seq > after);
  }

  get lastSeq(): number {
    return this.seq;
  }

  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  get subscribers(): number {
    return this.listeners.size;
  }
}

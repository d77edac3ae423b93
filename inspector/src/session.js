// One watched run: how it was started or joined, every event as it arrived (lane, id, time),
// dropping and resuming its connection, cancelling it, and checking what arrived against the
// server's own log. Protocol v1 (run streams) and v2 (thread streams) alike.
import { readEvents } from "./api.js";

const TERMINAL = new Set(["completed", "failed", "interrupted", "cancelled", "error"]);

export function uuid4() {
  return crypto.randomUUID ? crypto.randomUUID() : fallbackUuid();
}

function fallbackUuid() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// "/threads/<t>/runs/<r>" or "/runs/<r>", as content-location says.
function runFromLocation(location) {
  const m = /(?:\/threads\/([^/]+))?\/runs\/([^/?]+)/.exec(location || "");
  return m ? { threadId: m[1] || null, runId: m[2] } : { threadId: null, runId: null };
}

export class Session {
  constructor(api, options, onChange) {
    this.api = api;
    this.options = options; // {protocol, assistantId, modes, subgraphs, config, threadId}
    this.onChange = onChange;
    this.protocol = options.protocol;
    this.threadId = options.threadId || null;
    this.runId = null;
    this.events = [];
    this.status = "idle";
    this.error = "";
    this.cursor = null; // v1: last event id; v2: last seq
    this.connections = 0;
    this.startedAt = performance.now();
    this.firstAt = null;
    this.lastAt = null;
    this.check = null;
    this.interrupts = [];
    this.controller = null;
  }

  changed() {
    this.onChange(this);
  }

  // --- starting and joining ----------------------------------------------------------------

  async start(input, command = undefined) {
    this.startedAt = performance.now();
    if (this.protocol === "v2") return this._startV2(input);
    const body = {
      assistant_id: this.options.assistantId,
      input: command ? null : input,
      stream_mode: this.options.modes,
      stream_subgraphs: this.options.subgraphs,
      // So a dropped connection can be resumed, and a joiner can replay from any id.
      stream_resumable: true,
      on_disconnect: "continue",
    };
    if (this.options.config) body.config = this.options.config;
    if (command) {
      body.command = command;
      // The interrupted run's stream ends a moment before the server stores it as ended; a
      // resume sent in that moment waits its turn instead of being refused as a double-text.
      body.multitask_strategy = "enqueue";
    }
    const path = this.threadId ? `/threads/${this.threadId}/runs/stream` : "/runs/stream";
    await this._follow(() => this.api.request("POST", path, body, {}, this.controller.signal));
  }

  async _startV2(input) {
    this.threadId = this.threadId || uuid4();
    const answer = await this.command("run.start", {
      assistant_id: this.options.assistantId,
      input,
      ...(this.options.config ? { config: this.options.config } : {}),
    });
    this.runId = answer.run_id;
    await this._streamV2(null);
  }

  async command(method, params) {
    const answer = await this.api.json("POST", `/threads/${this.threadId}/commands`, {
      id: Date.now() % 1e9,
      method,
      params,
    });
    if (answer.type === "error") throw new Error(`${answer.error}: ${answer.message}`);
    return answer.result;
  }

  // v1: live (from = null) or from an event id (Last-Event-ID); v2: a seq (`since`).
  async join(from) {
    this.startedAt = performance.now();
    if (this.protocol === "v2") return this._streamV2(from);
    return this._joinV1(from);
  }

  async _joinV1(from) {
    const path = this.threadId
      ? `/threads/${this.threadId}/runs/${this.runId}/stream`
      : `/runs/${this.runId}/stream`;
    const headers = from === null || from === "" ? {} : { "Last-Event-ID": String(from) };
    await this._follow(() => this.api.request("GET", path, undefined, headers, this.controller.signal));
  }

  _v2Body(since) {
    const body = { channels: this.options.modes };
    if (!this.options.subgraphs) Object.assign(body, { namespaces: [[]], depth: 0 });
    if (since !== null && since !== "") body.since = Number(since);
    return body;
  }

  async _streamV2(since) {
    const path = `/threads/${this.threadId}/stream/events`;
    await this._follow(() =>
      this.api.request("POST", path, this._v2Body(since), {}, this.controller.signal),
    );
  }

  // --- the connection ------------------------------------------------------------------------

  async _follow(open) {
    this.controller = new AbortController();
    const controller = this.controller;
    this.status = "connecting";
    this.error = "";
    this.changed();
    try {
      const response = await open();
      this.connections += 1;
      const where = runFromLocation(response.headers.get("content-location"));
      if (where.runId) {
        this.runId = where.runId;
        this.threadId = where.threadId || this.threadId;
      }
      this.status = "streaming";
      this.changed();
      for await (const frame of readEvents(response)) {
        if (this._receive(frame)) {
          controller.abort();
          break;
        }
      }
      if (this.controller === controller && this.status === "streaming") this.status = "ended";
    } catch (error) {
      if (controller.signal.aborted && this.status === "dropped") return;
      if (!(controller.signal.aborted && this.status === "ended")) {
        this.status = "error";
        this.error = error.message;
      }
    }
    this.changed();
    if (this.status === "ended") await this._afterEnd();
  }

  // Records one frame; true when it ends the run (v2 streams stay open across runs).
  _receive(frame) {
    const now = performance.now();
    let data;
    try {
      data = JSON.parse(frame.data);
    } catch {
      data = frame.data;
    }
    this.firstAt ??= now;
    this.lastAt = now;
    let event;
    if (this.protocol === "v2" && data.type === "error") {
      // The stream's own errors (a gap in what it can replay, a bus outage), as sent.
      event = { name: "error", mode: "error", lane: "error", id: null, data };
      this.error = `${data.error}: ${data.message}`;
    } else if (this.protocol === "v2") {
      const params = data.params || {};
      const namespace = (params.namespace || []).join("|");
      event = { name: data.method, mode: channelOf(data.method), lane: laneOf(channelOf(data.method), namespace), id: String(data.seq), data: params.data };
      this.cursor = data.seq ?? this.cursor;
      // Our event ids are "<run id>:<n>": the run an event belongs to, across runs on a thread.
      const run = /^([0-9a-f-]{36}):\d+$/.exec(data.event_id || "");
      if (run) this.runId = run[1];
      if (data.method === "input.requested") {
        this.interrupts.push({ id: params.data.interrupt_id, value: params.data.payload, namespace: params.namespace || [] });
      }
    } else {
      const [mode, ...spaces] = frame.event.split("|");
      event = { name: frame.event, mode, lane: laneOf(mode, spaces.join("|")), id: frame.id, data };
      if (frame.id !== null) this.cursor = frame.id;
      if (frame.event === "metadata" && data && data.run_id) this.runId ??= data.run_id;
      if (frame.event === "error") this.error = `run error: ${data.error}: ${data.message}`;
    }
    if (this.protocol === "v2" && event.lane === "lifecycle" && event.data?.event === "failed") {
      this.error = `run failed: ${event.data.error}`;
    }
    event.at = now - this.startedAt;
    event.n = this.events.length;
    this.events.push(event);
    this.changed();
    return this.protocol === "v2" && isRootTerminal(event);
  }

  drop() {
    if (this.status !== "streaming" && this.status !== "connecting") return;
    this.status = "dropped";
    this.controller.abort();
    this.changed();
  }

  async resume() {
    this.check = null;
    if (this.protocol === "v2") return this._streamV2(this.cursor);
    return this._joinV1(this.cursor ?? "0");
  }

  async cancel() {
    if (this.threadId && this.runId) {
      await this.api.request("POST", `/threads/${this.threadId}/runs/${this.runId}/cancel`);
    } else {
      await this.api.request("POST", "/runs/cancel", { run_ids: [this.runId] });
    }
  }

  async _afterEnd() {
    if (this.connections > 1) await this.verify();
    if (this.threadId && this.protocol === "v1") await this.readInterrupts();
  }

  async readInterrupts() {
    try {
      const state = await this.api.json("GET", `/threads/${this.threadId}/state`);
      const found = [];
      for (const task of state.tasks || []) {
        for (const i of task.interrupts || []) found.push({ id: i.id, value: i.value, namespace: [] });
      }
      this.interrupts = found;
    } catch (error) {
      if (error.status !== 404) this.error = error.message; // a stateless run's thread is gone
    }
    this.changed();
  }

  // --- did anything go missing? --------------------------------------------------------------

  // Reads the run's log again from the server and compares its ids with what arrived.
  async verify() {
    const seen = this.events.filter((e) => e.id !== null).map((e) => e.id);
    if (!seen.length) return;
    const logged = this.protocol === "v2" ? await this._loggedV2(seen) : await this._loggedV1();
    if (!logged.length) {
      // A v1 run not created with stream_resumable keeps no log to replay.
      this.check = { unavailable: true };
      this.changed();
      return;
    }
    const counts = new Map();
    for (const id of seen) counts.set(id, (counts.get(id) || 0) + 1);
    const first = logged.indexOf(seen[0]);
    const expected = first < 0 ? logged : logged.slice(first);
    this.check = {
      logged: expected.length,
      received: seen.length,
      missing: expected.filter((id) => !counts.has(id)),
      repeated: [...counts].filter(([, n]) => n > 1).map(([id]) => id),
    };
    this.changed();
  }

  async _loggedV1() {
    const path = this.threadId
      ? `/threads/${this.threadId}/runs/${this.runId}/stream`
      : `/runs/${this.runId}/stream`;
    const response = await this.api.request("GET", path, undefined, { "Last-Event-ID": "0" });
    const ids = [];
    for await (const frame of readEvents(response)) if (frame.id !== null) ids.push(frame.id);
    return ids;
  }

  async _loggedV2(seen) {
    const last = Number(seen[seen.length - 1]);
    const controller = new AbortController();
    const path = `/threads/${this.threadId}/stream/events`;
    const body = this._v2Body(Number(seen[0]) - 1);
    const response = await this.api.request("POST", path, body, {}, controller.signal);
    const ids = [];
    try {
      for await (const frame of readEvents(response)) {
        const seq = JSON.parse(frame.data).seq;
        if (seq === undefined) continue; // an error frame: what it lacks shows up as missing
        if (seq > last) break;
        ids.push(String(seq));
        if (seq === last) break;
      }
    } finally {
      controller.abort();
    }
    return ids;
  }

  // --- figures ---------------------------------------------------------------------------------

  get ttfe() {
    return this.firstAt === null ? null : this.firstAt - this.startedAt;
  }

  get rate() {
    if (this.events.length < 2 || this.lastAt === this.firstAt) return null;
    return (this.events.length - 1) / ((this.lastAt - this.firstAt) / 1000);
  }

  lanes() {
    const lanes = new Map();
    for (const e of this.events) {
      if (!lanes.has(e.lane)) lanes.set(e.lane, []);
      lanes.get(e.lane).push(e);
    }
    return lanes;
  }
}

// v2 methods are channel names, but for `input.requested` on channel `input`.
function channelOf(method) {
  return method === "input.requested" ? "input" : method;
}

function laneOf(mode, namespace) {
  return namespace ? `${mode} @ ${namespace}` : mode;
}

function isRootTerminal(event) {
  return event.lane === "lifecycle" && event.data && TERMINAL.has(event.data.event);
}

// What an event says in a few words: the token of a message chunk, a lifecycle's event name.
export function summary(event) {
  const data = event.data;
  const token = tokenOf(event);
  if (token !== null) return token;
  if (event.mode === "lifecycle" && data) return data.event;
  if (event.mode === "messages" && data && data.event) return data.event;
  const text = typeof data === "string" ? data : JSON.stringify(data);
  return text.length > 160 ? `${text.slice(0, 160)}…` : text;
}

// The text a streamed message adds, or null when the event is no token.
export function tokenOf(event) {
  const data = event.data;
  if (event.mode === "messages" && Array.isArray(data) && data[0]) return textOf(data[0].content);
  if (event.mode === "messages" && data && data.event === "content-block-delta") {
    return data.delta && data.delta.text !== undefined ? data.delta.text : null;
  }
  return null;
}

function textOf(content) {
  if (typeof content === "string") return content;
  if (Array.isArray(content)) return content.map((b) => (typeof b === "string" ? b : b.text || "")).join("");
  return "";
}

// The streamed messages of a lane, each as its text so far: v1 chunks name their message,
// v2 opens each with a message-start.
export function messageTexts(events) {
  const texts = new Map();
  let current = 0;
  for (const e of events) {
    if (e.data && e.data.event === "message-start") current += 1;
    const token = tokenOf(e);
    if (token === null) continue;
    const key = Array.isArray(e.data) ? e.data[0].id || current : current;
    texts.set(key, (texts.get(key) || "") + token);
  }
  return [...texts.values()];
}

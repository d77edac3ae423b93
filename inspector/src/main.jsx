// The inspector page: credentials, assistants with their graph and input schema, a run started
// or joined and watched event by event, and the threads with their state, history and runs.
import "./style.css";
import { render } from "preact";
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { Api } from "./api.js";
import { GraphView } from "./graph.jsx";
import { Session, messageTexts, summary } from "./session.js";

const V1_MODES = ["values", "updates", "messages-tuple", "messages", "custom", "events", "debug", "tasks", "checkpoints"];
const V1_DEFAULT = ["values", "updates", "messages-tuple", "custom"];
const V2_CHANNELS = ["lifecycle", "values", "messages", "input", "custom", "updates", "tools", "tasks", "checkpoints"];
const SHOWN = 500; // rows per lane; a long run's earlier events still count in the figures
const V2_DEFAULT = ["lifecycle", "values", "messages", "input", "custom"];

function stored(key, fallback) {
  try {
    return sessionStorage.getItem(`agentstream.inspector.${key}`) ?? fallback;
  } catch {
    return fallback;
  }
}

function store(key, value) {
  try {
    sessionStorage.setItem(`agentstream.inspector.${key}`, value);
  } catch {
    // private mode: not remembered
  }
}

function pretty(value) {
  return JSON.stringify(value, null, 2);
}

function templateFor(schemas) {
  const props = schemas && schemas.input_schema && schemas.input_schema.properties;
  if (props && props.messages) return pretty({ messages: [{ role: "human", content: "hello" }] });
  return "{}";
}

// Re-render on a session's changes at most once a frame, however fast events arrive.
function useSession() {
  const [session, setSession] = useState(null);
  const [, setTick] = useState(0);
  const pending = useRef(false);
  const onChange = () => {
    if (pending.current) return;
    pending.current = true;
    requestAnimationFrame(() => {
      pending.current = false;
      setTick((t) => t + 1);
    });
  };
  return [session, setSession, onChange];
}

function App() {
  const [apiKey, setApiKey] = useState(stored("apiKey", ""));
  const [headers, setHeaders] = useState(stored("headers", ""));
  const [creds, setCreds] = useState({ apiKey, headers });
  const api = useMemo(() => new Api(location.origin, creds.apiKey, creds.headers), [creds]);
  const [error, setError] = useState("");
  const [tab, setTab] = useState("run");
  const [assistants, setAssistants] = useState([]);
  const [assistantId, setAssistantId] = useState("");
  const [watch, setWatch] = useState(null); // a run picked in the threads view, to join

  const guard = async (action) => {
    setError("");
    try {
      await action();
    } catch (e) {
      if (e.name !== "AbortError") setError(e.message);
    }
  };

  useEffect(() => {
    guard(async () => {
      setAssistants([]);
      const found = await api.json("POST", "/assistants/search", { limit: 100 });
      found.sort((a, b) => (a.name || a.graph_id).localeCompare(b.name || b.graph_id));
      setAssistants(found);
      // ?assistant=<graph id, name or assistant id> picks one, for links and bookmarks.
      const wanted = new URLSearchParams(location.search).get("assistant") || assistantId;
      const pick = found.find((a) => [a.assistant_id, a.graph_id, a.name].includes(wanted)) || found[0];
      if (pick) setAssistantId(pick.assistant_id);
    });
  }, [api]);

  const connect = (event) => {
    event.preventDefault();
    store("apiKey", apiKey);
    store("headers", headers);
    setCreds({ apiKey, headers });
  };

  return (
    <div class="app">
      <header>
        <h1>agentstream inspector</h1>
        <form class="creds" onSubmit={connect}>
          <label>
            API key <input id="api-key" type="password" value={apiKey} onInput={(e) => setApiKey(e.target.value)} placeholder="sent as x-api-key" />
          </label>
          <label>
            Headers <textarea id="headers" rows={1} value={headers} onInput={(e) => setHeaders(e.target.value)} placeholder="Authorization: Bearer …" />
          </label>
          <button id="connect" type="submit">Use</button>
        </form>
        <nav>
          <button id="tab-run" class={tab === "run" ? "on" : ""} onClick={() => setTab("run")}>Run</button>
          <button id="tab-threads" class={tab === "threads" ? "on" : ""} onClick={() => setTab("threads")}>Threads</button>
        </nav>
      </header>
      <div id="error" class="error" hidden={!error}>{error}</div>
      <main>
        <aside>
          <Assistants api={api} list={assistants} selected={assistantId} onSelect={setAssistantId} guard={guard} />
        </aside>
        <section class="work">
          {tab === "run" ? (
            <RunPanel api={api} assistantId={assistantId} guard={guard} watch={watch} />
          ) : (
            <Threads
              api={api}
              guard={guard}
              onJoin={(thread, run) => {
                setWatch({ thread, run });
                setTab("run");
              }}
            />
          )}
        </section>
      </main>
    </div>
  );
}

function Assistants({ api, list, selected, onSelect, guard }) {
  const [graph, setGraph] = useState(null);
  const [schemas, setSchemas] = useState(null);
  useEffect(() => {
    setGraph(null);
    setSchemas(null);
    if (!selected) return;
    let stale = false;
    guard(async () => {
      const [g, s] = await Promise.all([
        api.json("GET", `/assistants/${selected}/graph`),
        api.json("GET", `/assistants/${selected}/schemas`),
      ]);
      if (!stale) {
        setGraph(g);
        setSchemas(s);
      }
    });
    return () => {
      stale = true;
    };
  }, [api, selected]);
  return (
    <div class="assistants">
      <h2>Assistant</h2>
      <select id="assistant" value={selected} onChange={(e) => onSelect(e.target.value)}>
        {list.map((a) => (
          <option value={a.assistant_id}>{a.name || a.graph_id} ({a.assistant_id.slice(0, 8)})</option>
        ))}
      </select>
      <h3>Graph</h3>
      <GraphView graph={graph} />
      <h3>Input schema</h3>
      <InputSchema schema={schemas && schemas.input_schema} />
    </div>
  );
}

function InputSchema({ schema }) {
  if (!schema) return <p id="input-schema" class="muted">none</p>;
  const props = schema.properties || {};
  const required = new Set(schema.required || []);
  return (
    <div id="input-schema">
      <ul class="props">
        {Object.entries(props).map(([name, p]) => (
          <li data-prop={name}>
            <code>{name}</code>{required.has(name) ? "*" : ""} <small>{p.type || (p.$ref ? p.$ref.split("/").pop() : p.anyOf ? "any of" : "")}</small>
          </li>
        ))}
      </ul>
      <details>
        <summary>JSON schema</summary>
        <pre class="json">{pretty(schema)}</pre>
      </details>
    </div>
  );
}

function RunPanel({ api, assistantId, guard, watch }) {
  const [protocol, setProtocol] = useState("v1");
  const [modes, setModes] = useState(V1_DEFAULT);
  const [subgraphs, setSubgraphs] = useState(false);
  const [target, setTarget] = useState("stateless");
  const [threadId, setThreadId] = useState("");
  const [input, setInput] = useState("");
  const [config, setConfig] = useState("");
  const [join, setJoin] = useState({ thread: "", run: "", from: "" });
  const [session, setSession, onChange] = useSession();

  // The input starts as a template for the assistant's schema, unless the user wrote one for it.
  const [templated, setTemplated] = useState("");
  const edited = useRef("");
  useEffect(() => {
    if (!assistantId) return;
    let stale = false; // another assistant was picked before this one's schemas came
    guard(async () => {
      const schemas = await api.json("GET", `/assistants/${assistantId}/schemas`);
      if (stale) return;
      if (edited.current !== assistantId) setInput(templateFor(schemas));
      setTemplated(assistantId);
    });
    return () => {
      stale = true;
    };
  }, [api, assistantId]);
  const write = (text) => {
    edited.current = assistantId;
    setInput(text);
  };

  const choose = (p) => {
    setProtocol(p);
    setModes(p === "v1" ? V1_DEFAULT : V2_DEFAULT);
    if (p === "v2" && target === "stateless") setTarget("new");
  };
  const toggle = (mode) => setModes(modes.includes(mode) ? modes.filter((m) => m !== mode) : [...modes, mode]);
  const fresh = (thread) => {
    if (session) session.drop();
    const runConfig = config.trim() ? JSON.parse(config) : null;
    const options = { protocol, assistantId, modes, subgraphs, config: runConfig, threadId: thread };
    const s = new Session(api, options, onChange);
    setSession(s);
    return s;
  };

  const start = (event) => {
    event.preventDefault();
    guard(async () => {
      const parsed = JSON.parse(input || "null");
      let thread = null;
      if (target === "new" && protocol === "v1") thread = (await api.json("POST", "/threads", {})).thread_id;
      if (target === "thread") thread = threadId.trim();
      await fresh(thread).start(parsed);
    });
  };

  const follow = (wanted) =>
    guard(async () => {
      const s = fresh(wanted.thread.trim() || null);
      s.runId = wanted.run.trim() || null;
      await s.join(wanted.from.trim() === "" ? null : wanted.from.trim());
    });
  const joinRun = (event) => {
    event.preventDefault();
    follow(join);
  };
  // A run picked in the threads view: joined live on v1, from where the run is now.
  useEffect(() => {
    if (!watch) return;
    const wanted = { thread: watch.thread, run: watch.run, from: "" };
    setJoin(wanted);
    if (protocol === "v1") follow(wanted);
  }, [watch]);

  const modeList = protocol === "v1" ? V1_MODES : V2_CHANNELS;
  return (
    <div>
      <div class="forms">
        <form id="run-form" class="card" onSubmit={start}>
          <h2>Start a run</h2>
          <div class="row">
            <label><input type="radio" id="protocol-v1" name="protocol" checked={protocol === "v1"} onChange={() => choose("v1")} /> v1 run stream</label>
            <label><input type="radio" id="protocol-v2" name="protocol" checked={protocol === "v2"} onChange={() => choose("v2")} /> v2 thread stream</label>
          </div>
          <div class="row">
            <select id="target" value={target} onChange={(e) => setTarget(e.target.value)}>
              <option value="stateless" disabled={protocol === "v2"}>stateless</option>
              <option value="new">on a new thread</option>
              <option value="thread">on thread…</option>
            </select>
            {target === "thread" && <input id="thread-id" value={threadId} placeholder="thread id" onInput={(e) => setThreadId(e.target.value)} />}
          </div>
          <div class="row modes">
            {modeList.map((m) => (
              <label><input type="checkbox" name="mode" value={m} checked={modes.includes(m)} onChange={() => toggle(m)} /> {m}</label>
            ))}
            <label><input type="checkbox" id="subgraphs" checked={subgraphs} onChange={() => setSubgraphs(!subgraphs)} /> subgraphs</label>
          </div>
          <textarea id="input" rows={5} value={input} data-for={templated} onInput={(e) => write(e.target.value)} />
          <textarea id="config" rows={1} value={config} placeholder='config (optional), e.g. {"configurable": {"delay": 0.1}}' onInput={(e) => setConfig(e.target.value)} />
          <button id="start" type="submit" disabled={!assistantId}>Start</button>
        </form>
        <form id="join-form" class="card" onSubmit={joinRun}>
          <h2>Join a run</h2>
          <input id="join-thread" placeholder="thread id (empty: stateless)" value={join.thread} onInput={(e) => setJoin({ ...join, thread: e.target.value })} />
          <input id="join-run" placeholder={protocol === "v1" ? "run id" : "run id (not needed on v2)"} value={join.run} onInput={(e) => setJoin({ ...join, run: e.target.value })} />
          <input id="join-from" placeholder={protocol === "v1" ? "from event id (empty: live)" : "since seq (empty: latest run)"} value={join.from} onInput={(e) => setJoin({ ...join, from: e.target.value })} />
          <button id="join" type="submit">Join</button>
        </form>
      </div>
      {session && <Watch session={session} guard={guard} onAnswer={(s) => setSession(s)} onChange={onChange} />}
    </div>
  );
}

function Watch({ session, guard, onAnswer, onChange }) {
  const s = session;
  const live = s.status === "streaming" || s.status === "connecting";
  const rate = s.rate;
  return (
    <div class="watch">
      <div class="stats">
        <span>status <b id="status" data-status={s.status}>{s.status}</b></span>
        <span>protocol <b id="protocol">{s.protocol}</b></span>
        <span>thread <b id="watch-thread">{s.threadId || "—"}</b></span>
        <span>run <b id="watch-run">{s.runId || "—"}</b></span>
        <span>events <b id="event-count">{s.events.length}</b></span>
        <span>first event <b id="ttfe">{s.ttfe === null ? "—" : `${s.ttfe.toFixed(0)} ms`}</b></span>
        <span>rate <b id="rate">{rate === null ? "—" : `${rate.toFixed(1)}/s`}</b></span>
        <span>connections <b id="connections">{s.connections}</b></span>
        <span>cursor <b id="cursor">{s.cursor ?? "—"}</b></span>
      </div>
      <div class="row">
        <button id="drop" disabled={!live} onClick={() => s.drop()}>Drop connection</button>
        <button id="resume" disabled={s.status !== "dropped"} onClick={() => guard(() => s.resume())}>Resume</button>
        <button id="cancel" disabled={!s.runId} onClick={() => guard(() => s.cancel())}>Cancel run</button>
        <button id="verify" disabled={live || !s.events.length} onClick={() => guard(() => s.verify())}>Check against the log</button>
      </div>
      {s.error && <div id="run-error" class="error">{s.error}</div>}
      {s.check && <Check check={s.check} />}
      {s.interrupts.length > 0 && !live && <Interrupt session={s} guard={guard} onAnswer={onAnswer} onChange={onChange} />}
      <Lanes session={s} />
    </div>
  );
}

function Check({ check }) {
  if (check.unavailable) {
    return <div id="check" class="check">The server keeps no log of this run to compare with (not created resumable).</div>;
  }
  const ok = check.missing.length === 0 && check.repeated.length === 0;
  return (
    <div id="check" class={ok ? "check ok" : "check bad"} data-missing={check.missing.length} data-repeated={check.repeated.length}>
      {ok
        ? `Nothing lost: all ${check.logged} events of the server's log arrived, none twice.`
        : `Missing ${check.missing.length} (${check.missing.join(", ")}), repeated ${check.repeated.length} (${check.repeated.join(", ")}) of ${check.logged} logged events.`}
    </div>
  );
}

function Interrupt({ session, guard, onAnswer, onChange }) {
  const [answer, setAnswer] = useState('"yes"');
  const first = session.interrupts[0];
  const send = (event) => {
    event.preventDefault();
    guard(async () => {
      const value = JSON.parse(answer);
      const next = new Session(session.api, { ...session.options, threadId: session.threadId }, onChange);
      onAnswer(next);
      if (session.protocol === "v2") {
        next.runId = session.runId;
        await next.command("input.respond", { interrupt_id: first.id, namespace: first.namespace, response: value });
        await next.join(session.cursor);
      } else {
        await next.start(null, { resume: value });
      }
    });
  };
  return (
    <form id="interrupt" class="card interrupt" onSubmit={send}>
      <h2>Interrupted</h2>
      <pre id="interrupt-value" class="json">{pretty(first.value)}</pre>
      <input id="interrupt-answer" value={answer} onInput={(e) => setAnswer(e.target.value)} />
      <button id="interrupt-send" type="submit">Answer and resume</button>
    </form>
  );
}

function Lanes({ session }) {
  const [shown, show] = useState(null);
  const lanes = session.lanes();
  const picked = shown === null ? null : session.events[shown];
  return (
    <div>
    {picked && (
      <div class="card" id="event-detail">
        <h3>{picked.name} · id {picked.id ?? "none"} · +{picked.at.toFixed(1)} ms</h3>
        <pre class="json">{pretty(picked.data)}</pre>
      </div>
    )}
    <div class="lanes">
      {[...lanes].map(([name, events]) => {
        const texts = messageTexts(events);
        return (
          <div class="lane" data-lane={name}>
            <h3>{name} <small>{events.length}</small></h3>
            {texts.map((text) => <div class="tokens">{text}</div>)}
            {events.length > SHOWN && <p class="muted">{events.length - SHOWN} earlier events not listed</p>}
            <ol>
              {events.slice(-SHOWN).map((e) => (
                <li class={e.n === shown ? "event shown" : "event"} data-id={e.id ?? ""} data-n={e.n} title={e.name} onClick={() => show(e.n === shown ? null : e.n)}>
                  <span class="id">{e.id ?? "·"}</span>
                  <span class="at">+{e.at.toFixed(0)}ms</span>
                  <span class="summary">{summary(e)}</span>
                </li>
              ))}
            </ol>
          </div>
        );
      })}
    </div>
    </div>
  );
}

function Threads({ api, guard, onJoin }) {
  const [threads, setThreads] = useState([]);
  const [detail, setDetail] = useState(null);
  const load = () => guard(async () => setThreads(await api.json("POST", "/threads/search", { limit: 50, sort_by: "updated_at", sort_order: "desc" })));
  useEffect(load, [api]);
  const open = (id) =>
    guard(async () => {
      const [state, history, runs] = await Promise.all([
        api.json("GET", `/threads/${id}/state`),
        api.json("POST", `/threads/${id}/history`, { limit: 10 }),
        api.json("GET", `/threads/${id}/runs`),
      ]);
      setDetail({ id, state, history, runs });
    });
  const cancel = (thread, run) =>
    guard(async () => {
      await api.request("POST", `/threads/${thread}/runs/${run}/cancel`);
      await open(thread);
    });
  return (
    <div class="threads">
      <div class="card">
        <h2>Threads <button id="threads-reload" onClick={load}>Reload</button></h2>
        <ul id="thread-list">
          {threads.map((t) => (
            <li class="thread" data-thread={t.thread_id}>
              <button onClick={() => open(t.thread_id)}>{t.thread_id}</button> <span class="status">{t.status}</span> <small>{t.updated_at}</small>
            </li>
          ))}
        </ul>
      </div>
      {detail && (
        <div class="card" id="thread-detail" data-thread={detail.id}>
          <h2>Thread {detail.id}</h2>
          <h3>Runs</h3>
          <ul id="thread-runs">
            {detail.runs.map((r) => (
              <li class="run" data-run={r.run_id} data-status={r.status}>
                {r.run_id} <b>{r.status}</b>{" "}
                {(r.status === "running" || r.status === "pending") && (
                  <>
                    <button class="join" onClick={() => onJoin(detail.id, r.run_id)}>Join</button>{" "}
                    <button class="cancel" onClick={() => cancel(detail.id, r.run_id)}>Cancel</button>
                  </>
                )}
              </li>
            ))}
          </ul>
          <h3>State</h3>
          <pre id="thread-state" class="json">{pretty(detail.state)}</pre>
          <h3>History ({detail.history.length} checkpoints)</h3>
          <ol id="thread-history">
            {detail.history.map((h) => (
              <li>
                <code>{h.checkpoint && h.checkpoint.checkpoint_id}</code> next: {(h.next || []).join(", ") || "—"}, step {h.metadata && h.metadata.step}
              </li>
            ))}
          </ol>
        </div>
      )}
    </div>
  );
}

render(<App />, document.getElementById("root"));

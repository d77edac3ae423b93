// A chat page on @langchain/react's useStream, which speaks protocol v2 (SSE or WebSocket, from
// the query string). The thread id is kept in sessionStorage, so a reload rejoins the thread.
// Each text the last AI message shows is recorded in window.seen, for the test to check that a
// reply streams in token by token.
import React, { useEffect, useState } from "react";
import { createRoot } from "react-dom/client";
import { useStream } from "@langchain/react";

const params = new URLSearchParams(window.location.search);
const assistantId = params.get("assistant") || "agent";
const key = `thread:${assistantId}`;
window.seen = [];

function text(message) {
  const content = message.content;
  if (typeof content === "string") return content;
  return content.map((block) => block.text ?? "").join("");
}

function App() {
  const thread = useStream({
    apiUrl: params.get("api"),
    assistantId,
    transport: params.get("transport") || "sse",
    threadId: sessionStorage.getItem(key),
    onThreadId: (id) => sessionStorage.setItem(key, id),
  });
  const [draft, setDraft] = useState("");
  const ai = thread.messages.filter((m) => m.type === "ai").map(text);
  const last = ai.length ? ai[ai.length - 1] : "";
  useEffect(() => {
    if (last && window.seen[window.seen.length - 1] !== last) window.seen.push(last);
  }, [last]);
  const send = (event) => {
    event.preventDefault();
    const input = assistantId === "hitl"
      ? { question: draft }
      : { messages: [{ type: "human", content: draft }] };
    const delay = Number(params.get("delay") || 0);
    thread.submit(input, { config: { configurable: { delay } } });
    setDraft("");
  };
  return (
    <main>
      <ul id="messages">
        {thread.messages.map((m, i) => (
          <li key={m.id ?? i} className={`message ${m.type}`}>{text(m)}</li>
        ))}
      </ul>
      <p id="status">{thread.isLoading ? "loading" : "idle"}</p>
      <p id="error">{thread.error ? String(thread.error) : ""}</p>
      <p id="interrupt">{thread.interrupt ? JSON.stringify(thread.interrupt.value) : ""}</p>
      <p id="answer">{thread.values?.answer ?? ""}</p>
      <button id="approve" type="button" onClick={() => thread.respond("yes")}>Approve</button>
      <form onSubmit={send}>
        <input id="draft" value={draft} onChange={(e) => setDraft(e.target.value)} />
        <button id="send" type="submit">Send</button>
      </form>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<App />);

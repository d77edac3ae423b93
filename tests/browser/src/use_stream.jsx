// A chat page on LangChain's useStream (@langchain/langgraph-sdk/react), as a user's frontend
// would have it; the API's URL comes from the page's own query string.
import React, { useState } from "react";
import { createRoot } from "react-dom/client";
import { useStream } from "@langchain/langgraph-sdk/react";

const params = new URLSearchParams(window.location.search);

function text(message) {
  return typeof message.content === "string" ? message.content : JSON.stringify(message.content);
}

function App() {
  const thread = useStream({
    apiUrl: params.get("api"),
    assistantId: params.get("assistant") || "agent",
    messagesKey: "messages",
  });
  const [draft, setDraft] = useState("");
  const send = (event) => {
    event.preventDefault();
    thread.submit({ messages: [{ type: "human", content: draft }] });
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
      <form onSubmit={send}>
        <input id="draft" value={draft} onChange={(e) => setDraft(e.target.value)} />
        <button id="send" type="submit">Send</button>
      </form>
    </main>
  );
}

createRoot(document.getElementById("root")).render(<App />);

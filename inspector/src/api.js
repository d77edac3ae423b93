// The server's HTTP API as the inspector calls it: the user's credentials on every request,
// errors worded as the server words them, and SSE read frame by frame with each event's id.

export class ApiError extends Error {
  constructor(status, detail) {
    super(status ? `HTTP ${status}: ${detail}` : detail);
    this.status = status;
    this.detail = detail;
  }
}

// "Name: value" lines, as a user would copy them from curl or a browser's network tab.
export function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf(":");
    if (at > 0) headers[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return headers;
}

export class Api {
  constructor(base, apiKey, extraHeaders) {
    this.base = base;
    this.headers = { ...parseHeaders(extraHeaders || "") };
    if (apiKey) this.headers["x-api-key"] = apiKey;
  }

  async request(method, path, body, extra = {}, signal = undefined) {
    const headers = { ...this.headers, ...extra };
    if (body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(this.base + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal,
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(0, `${method} ${path}: ${error.message}`);
    }
    if (!response.ok) throw new ApiError(response.status, await wording(response));
    return response;
  }

  async json(method, path, body) {
    const response = await this.request(method, path, body);
    if (response.status === 204) return null;
    const text = await response.text();
    return text ? JSON.parse(text) : null;
  }
}

async function wording(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body && body.detail !== undefined) {
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    }
    if (body && body.message) return body.message;
  } catch {
    // not JSON: the text as sent
  }
  return text || response.statusText;
}

// Yields {event, data, id} for each frame of a text/event-stream body; comments are skipped.
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let frame = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r\n|\n|\r/)) >= 0) {
      const line = buffer.slice(0, end);
      const width = buffer.startsWith("\r\n", end) ? 2 : 1;
      if (buffer[end] === "\r" && width === 1 && end === buffer.length - 1) break; // CR of CRLF
      buffer = buffer.slice(end + width);
      if (line === "") {
        if (frame.data.length) yield { event: frame.event, data: frame.data.join("\n"), id: frame.id };
        frame = { event: "message", data: [], id: null };
      } else if (!line.startsWith(":")) {
        const at = line.indexOf(":");
        const field = at < 0 ? line : line.slice(0, at);
        const text = at < 0 ? "" : line.slice(at + 1).replace(/^ /, "");
        if (field === "event") frame.event = text;
        else if (field === "data") frame.data.push(text);
        else if (field === "id") frame.id = text;
      }
    }
  }
}

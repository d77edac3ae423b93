// Shared by the scripts: a client for the server named on the command line, one JSON line out.
import { Client } from "@langchain/langgraph-sdk";

export const HI = { messages: [{ role: "user", content: "hi there" }] };

export function client() {
  const url = process.argv[2];
  if (!url) {
    throw new Error("usage: node <script>.mjs <server url>");
  }
  return new Client({ apiUrl: url, apiKey: null });
}

export function emit(record) {
  process.stdout.write(JSON.stringify(record) + "\n");
}

export async function main(body) {
  try {
    await body();
  } catch (error) {
    emit({ failed: String(error?.stack ?? error) });
    process.exitCode = 1;
  }
}

// runs.wait: stateless, threaded twice (the conversation grows), and a failing graph.
import { HI, client as makeClient, emit, main } from "./common.mjs";

await main(async () => {
  const client = makeClient();
  emit({ case: "stateless", values: await client.runs.wait(null, "agent", { input: HI }) });

  const thread = await client.threads.create();
  await client.runs.wait(thread.thread_id, "agent", { input: HI });
  const again = { messages: [{ role: "user", content: "again" }] };
  const values = await client.runs.wait(thread.thread_id, "agent", { input: again });
  emit({ case: "threaded", values });

  try {
    await client.runs.wait(null, "failing", { input: {} });
    emit({ case: "failing", raised: null });
  } catch (error) {
    emit({ case: "failing", raised: String(error.message) });
  }
  const kept = await client.runs.wait(null, "failing", { input: {}, raiseError: false });
  emit({ case: "failing-no-raise", values: kept });
});

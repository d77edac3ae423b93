// runs.joinStream on a background ticker run: joiner "all" follows every mode; once it has
// seen tick `after`, joiner "custom" joins with streamMode ["custom"]. Each part names its
// joiner, and "joined" records the last tick "all" had seen before "custom" asked to join.
import { client as makeClient, emit, main } from "./common.mjs";

async function follow(parts, joiner, onTick) {
  for await (const part of parts) {
    emit({ joiner, event: part.event, data: part.data });
    if (part.event === "custom") {
      onTick(part.data.tick);
    }
  }
}

await main(async () => {
  const client = makeClient();
  const n = Number(process.argv[3] ?? 60);
  const after = Number(process.argv[4] ?? 5);
  const thread = await client.threads.create();
  const run = await client.runs.create(thread.thread_id, "ticker", {
    input: { n, delay: 0.05 },
    streamMode: ["custom", "values"],
  });
  emit({ run_id: run.run_id, thread_id: thread.thread_id, status: run.status });

  let second;
  const first = follow(client.runs.joinStream(thread.thread_id, run.run_id), "all", (tick) => {
    if (second === undefined && tick >= after) {
      emit({ joined: tick });
      const parts = client.runs.joinStream(thread.thread_id, run.run_id, {
        streamMode: ["custom"],
      });
      second = follow(parts, "custom", () => {});
    }
  });
  await first;
  await second;
  const finished = await client.runs.get(thread.thread_id, run.run_id);
  emit({ final_status: finished.status });
});

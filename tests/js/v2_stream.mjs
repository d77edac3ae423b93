// client.threads.stream (protocol v2) over the transport named on the command line: a reply
// token by token, a second turn on the same thread, an interrupt answered.
import { client, emit, main } from "./common.mjs";

const transport = process.argv[3];

async function turn(c, threadId, content) {
  const options = { assistantId: "agent", transport };
  const thread = threadId ? c.threads.stream(threadId, options) : c.threads.stream(options);
  await thread.run.start({ input: { messages: [{ role: "user", content }] } });
  const readers = [];
  for await (const message of thread.messages) {
    readers.push((async () => {
      const deltas = [];
      for await (const delta of message.text) deltas.push(delta);
      return deltas;
    })());
  }
  emit({ deltas: await Promise.all(readers) });
  emit({ output: await thread.output });
  await thread.close();
  return thread.threadId;
}

await main(async () => {
  const c = client();
  const threadId = await turn(c, null, "hi from js");
  await turn(c, threadId, "second turn");
  const hitl = c.threads.stream({ assistantId: "hitl", transport });
  await hitl.run.start({ input: { question: "js?" } });
  for await (const _ of hitl.values) {
    // ends when the run pauses for input
  }
  const [asked] = hitl.interrupts;
  emit({ asked: asked.payload });
  await hitl.input.respond({ interrupt_id: asked.interruptId, namespace: [], response: "yes" });
  await hitl.close();
  // The resumed run is the thread's latest: a new stream reads it.
  const after = c.threads.stream(hitl.threadId, { assistantId: "hitl", transport });
  emit({ output: await after.output });
  await after.close();
});

// client.threads.stream (protocol v2) over the transport named on the command line: a reply
// token by token, a second turn on the same thread, an interrupt answered.
import { client, emit, main } from "./common.mjs";

const transport = process.argv[3];

// The text deltas of each streamed message, each message read in its own task.
async function tokens(thread) {
  const readers = [];
  for await (const message of thread.messages) {
    readers.push((async () => {
      const deltas = [];
      for await (const delta of message.text) deltas.push(delta);
      return deltas;
    })());
  }
  return Promise.all(readers);
}

await main(async () => {
  const c = client();
  const options = { assistantId: "agent", transport };
  const chat = c.threads.stream(options);
  // Read from before the run starts: the client ends a projection it opens only after the
  // run's end without handing it the run's events.
  const reading = tokens(chat);
  await chat.run.start({ input: { messages: [{ role: "user", content: "hi from js" }] } });
  emit({ deltas: await reading });
  emit({ output: await chat.output });
  await chat.close();
  // A second turn: a stream opened before its run.start would show the thread's latest run,
  // the first one; run.start opens the output's projection itself.
  const again = c.threads.stream(chat.threadId, options);
  await again.run.start({ input: { messages: [{ role: "user", content: "second turn" }] } });
  emit({ output: await again.output });
  await again.close();
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

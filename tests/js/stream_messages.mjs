// runs.stream in ["messages-tuple"] mode: every part, in order.
import { HI, client, emit, main } from "./common.mjs";

await main(async () => {
  const parts = client().runs.stream(null, "agent", { input: HI, streamMode: ["messages-tuple"] });
  for await (const part of parts) {
    emit({ event: part.event, data: part.data });
  }
});

// Opens the useStream page (served from its own origin) in headless Chromium, sends one or more
// messages, and prints what the page shows as one JSON line: the messages, any error, and the
// cross-origin requests the browser made.
import { chromium } from "playwright-core";

const [pageUrl, ...texts] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new"],
});
try {
  const page = await browser.newPage();
  const failures = [];
  // The SDK aborts its own fetch once a stream has ended; anything else failing is a failure.
  page.on("requestfailed", (r) => {
    if (r.failure()?.errorText !== "net::ERR_ABORTED") {
      failures.push(`${r.method()} ${r.url()} ${r.failure()?.errorText}`);
    }
  });
  page.on("console", (m) => m.type() === "error" && failures.push(`console: ${m.text()}`));
  page.on("pageerror", (e) => failures.push(`page: ${e.message}`));
  await page.goto(pageUrl);
  for (const text of texts) {
    await page.fill("#draft", text);
    await page.click("#send");
    try {
      // The agent example answers "echo: <text>", then "bye".
      await page.waitForFunction(
        (echo) => [...document.querySelectorAll("#messages li")].some((li) => li.textContent === echo) &&
          document.querySelector("#status").textContent === "idle",
        `echo: ${text}`,
        { timeout: 20000 },
      );
    } catch (error) {
      failures.push(`waiting for the reply to ${text}: ${error.message.split("\n")[0]}`);
      break;
    }
  }
  const messages = await page.$$eval("#messages li", (items) =>
    items.map((li) => [li.className.replace("message ", ""), li.textContent]));
  const error = await page.textContent("#error");
  console.log(JSON.stringify({ messages, error, failures }));
} finally {
  await browser.close();
}

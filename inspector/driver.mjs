// Headless Chromium (Debian's, through playwright-core) driven one JSON command per stdin line,
// one JSON answer per stdout line: tests/test_inspector.py and scripts/screenshots.py use it to
// keep one browser open across many page visits.
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new"],
});
let context = null;
let page = null;
let failures = [];

async function open({ url, width = 1400, height = 900 }) {
  if (context) await context.close();
  failures = [];
  context = await browser.newContext({ viewport: { width, height } });
  page = await context.newPage();
  // The inspector aborts its own fetches on drop and at a v2 run's end; nothing else may fail.
  page.on("requestfailed", (r) => {
    if (r.failure()?.errorText !== "net::ERR_ABORTED") failures.push(`${r.method()} ${r.url()} ${r.failure()?.errorText}`);
  });
  page.on("pageerror", (e) => failures.push(`page: ${e.message}`));
  // Offline means offline: the page asks nothing of any other origin (no CDN, no fonts).
  const origin = new URL(url).origin;
  page.on("request", (r) => {
    const to = new URL(r.url());
    if (to.protocol !== "data:" && to.origin !== origin) failures.push(`external request: ${r.url()}`);
  });
  await page.goto(url);
  return page.url();
}

const ops = {
  open,
  click: ({ selector }) => page.click(selector),
  fill: ({ selector, value }) => page.fill(selector, value),
  check: ({ selector, on = true }) => page.setChecked(selector, on),
  select: ({ selector, value }) => page.selectOption(selector, value).then(() => null),
  waitFor: ({ selector, timeout = 20000 }) => page.waitForSelector(selector, { timeout }).then(() => null),
  until: ({ expression, timeout = 20000 }) => page.waitForFunction(expression, null, { timeout }).then(() => null),
  eval: ({ expression }) => page.evaluate(expression),
  text: ({ selector }) => page.textContent(selector),
  screenshot: ({ path, selector }) =>
    (selector ? page.locator(selector).screenshot({ path }) : page.screenshot({ path })).then(() => path),
  failures: () => failures,
};

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const command = JSON.parse(line);
  let answer;
  try {
    const value = await ops[command.op](command);
    answer = { ok: true, value: value ?? null };
  } catch (error) {
    answer = { ok: false, error: error.message.split("\n").slice(0, 6).join("\n") };
  }
  process.stdout.write(`${JSON.stringify(answer)}\n`);
}
await browser.close();

// Drives the protocol v2 useStream page (v2.html) in headless Chromium over one transport, and
// prints what it saw as one JSON line: a reply token by token and a second turn, a reload in the
// middle of a reply, and an interrupt answered from the page.
import { chromium } from "playwright-core";

const [origin, api, transport] = process.argv.slice(2);
const base = `${origin}/v2.html?api=${api}&transport=${transport}`;
const failures = [];

function watch(page, name) {
  page.on("requestfailed", (r) => {
    if (r.failure()?.errorText !== "net::ERR_ABORTED") {
      failures.push(`${name}: ${r.method()} ${r.url()} ${r.failure()?.errorText}`);
    }
  });
  page.on("pageerror", (e) => failures.push(`${name}: page: ${e.message}`));
}

async function send(page, text) {
  await page.fill("#draft", text);
  await page.click("#send");
}

// Until an AI message shows `echo` (or starts with it, with `partial`) and the run has ended.
async function until(page, echo, { partial = false, idle = true } = {}) {
  await page.waitForFunction(
    ([echo, partial, idle]) =>
      [...document.querySelectorAll("#messages li.ai")].some((li) =>
        partial ? li.textContent.startsWith(echo) : li.textContent === echo) &&
      (!idle || document.querySelector("#status").textContent === "idle"),
    [echo, partial, idle],
    { timeout: 20000 },
  );
}

const messages = (page) =>
  page.$$eval("#messages li", (items) => items.map((li) => [li.className.replace("message ", ""), li.textContent]));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--headless=new"],
});
const result = {};
try {
  result.step = "first turn";
  const chat = await browser.newPage();
  watch(chat, "chat");
  // 0.2 s a token: the page must render the reply between tokens, and on a loaded machine
  // (two test processes, their servers and Chromium on two cores) 0.05 s once let three
  // tokens arrive in one render.
  await chat.goto(`${base}&delay=0.2`);
  await send(chat, "one two three four");
  await until(chat, "echo: one two three four");
  result.seen = await chat.evaluate(() => window.seen);
  result.step = "second turn";
  await send(chat, "again");
  await until(chat, "echo: again");
  result.turns = await messages(chat);
  result.error = await chat.textContent("#error");

  result.step = "reload mid-reply";
  const reload = await browser.newPage();
  watch(reload, "reload");
  // Slow enough (7 tokens, 0.5 s apart) that the run outlasts the page's reload on a busy
  // machine: this step is about resuming a reply in flight.
  await reload.goto(`${base}&delay=0.5`);
  await send(reload, "a b c d e f g");
  await until(reload, "echo: a b", { partial: true, idle: false });
  result.beforeReload = await reload.evaluate(() => window.seen);
  await reload.reload();
  await until(reload, "echo: a b c d e f g");
  await reload.waitForFunction(() => document.querySelector("#messages li:last-child")?.textContent === "bye");
  result.reloaded = await messages(reload);
  result.seenAfterReload = await reload.evaluate(() => window.seen);

  result.step = "interrupt";
  const hitl = await browser.newPage();
  watch(hitl, "hitl");
  await hitl.goto(`${base}&assistant=hitl`);
  await send(hitl, "proceed?");
  await hitl.waitForFunction(() => document.querySelector("#interrupt").textContent !== "");
  result.asked = JSON.parse(await hitl.textContent("#interrupt"));
  await hitl.click("#approve");
  await hitl.waitForFunction(() => document.querySelector("#answer").textContent === "yes!");
  result.answer = await hitl.textContent("#answer");
  result.step = "done";
} catch (error) {
  failures.push(`driver: ${error.message.split("\n")[0]}`);
} finally {
  await browser.close();
}
console.log(JSON.stringify({ ...result, failures }));

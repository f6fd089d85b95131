#!/usr/bin/env node
// ohd's built-in page in headless Chromium, against a running ohd.
//
// Scenarios (--scenario):
//   agent (default)  ohd runs with a scripted model that answers, in order:
//                      1. execute_bash `echo hello-from-agent`
//                      2. str_replace_editor create notes.txt, 3. str_replace in it (a diff)
//                      4. execute_bash `sleep 30`            5. finish
//                    The page creates a conversation, sends a task, shows the command and its
//                    output and the diff, Stop interrupts the sleep, the socket drops while another
//                    client talks to the agent (the finish turn) and the page resumes with exactly
//                    the events it missed, and a reload shows the same history.
//   auth             ohd runs with SESSION_API_KEY=--api-key and no agent: the page asks for the
//                    key, then lists, creates, joins and sends with it.
//   demo             `ohd demo`: a message shows the commands, the file made and edited (a diff),
//                    their output and the finish; Settings shows the demo's model.
//   no-model         ohd runs with no model: a message gets the error once (in the conversation,
//                    no notice, the state note without the text again); "Choose a model" opens
//                    Settings, which saves --model with --base-url and --model-key; a new
//                    conversation then works with it (the scripted model finishes).
//   unreachable      ohd's model refuses connections: the state says "could not reach the model,
//                    retrying", retry notices replace each other (never two at once), and the
//                    failure is said once, with no error notice.
//   confirm          ohd runs in confirmation mode with a scripted model that answers
//                    1. execute_bash `echo yes > confirmed.txt`  2. execute_bash `echo no > rejected.txt`
//                    The page shows each waiting command with Confirm and Reject; the first is
//                    confirmed and runs, the second is rejected and does not.
//
// Output: one JSON object per line on stdout ({"kind":"step",...}, {"kind":"result",...} last).
// Exit codes: 0 passed, 1 failed (the reason on stderr and in {"kind":"failed"}), 2 usage.
//
// Usage: node page.test.mjs --url http://127.0.0.1:3000 [--artifacts DIR] [--scenario agent|auth]
//          [--api-key KEY] [--chromium /usr/bin/chromium] [--timeout-ms 20000]

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

function parseArgs(argv) {
  const opts = {
    url: null,
    artifacts: "artifacts",
    scenario: "agent",
    apiKey: null,
    chromium: "/usr/bin/chromium",
    timeoutMs: 20000,
    model: null,
    baseUrl: null,
    modelKey: null,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) usage(`${flag} needs a value`);
    switch (flag) {
      case "--url": opts.url = value.replace(/\/$/, ""); break;
      case "--artifacts": opts.artifacts = value; break;
      case "--scenario": opts.scenario = value; break;
      case "--api-key": opts.apiKey = value; break;
      case "--chromium": opts.chromium = value; break;
      case "--timeout-ms": opts.timeoutMs = Number(value); break;
      case "--model": opts.model = value; break;
      case "--base-url": opts.baseUrl = value; break;
      case "--model-key": opts.modelKey = value; break;
      default: usage(`unknown flag ${flag}`);
    }
  }
  if (!opts.url) usage("--url is required");
  if (!["agent", "auth", "confirm", "demo", "no-model", "unreachable"].includes(opts.scenario)) usage(`unknown scenario ${opts.scenario}`);
  if (opts.scenario === "no-model" && !(opts.model && opts.baseUrl && opts.modelKey)) usage("--scenario no-model needs --model, --base-url and --model-key");
  if (opts.scenario === "auth" && !opts.apiKey) usage("--scenario auth needs --api-key");
  return opts;
}

function usage(message) {
  process.stderr.write(`page.test: ${message}\n`);
  process.exit(2);
}

const opts = parseArgs(process.argv.slice(2));
const emit = (kind, fields = {}) => process.stdout.write(JSON.stringify({ kind, ...fields }) + "\n");

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

mkdirSync(opts.artifacts, { recursive: true });

/** Installed before the page's own script: keeps every WebSocket the page opens, and can make new
 *  ones fail (a network outage) until `window.__ohdTest.blocked` is false again. */
function instrumentWebSockets() {
  const Native = window.WebSocket;
  const test = { sockets: [], urls: [], blocked: false, Native };
  window.__ohdTest = test;
  window.WebSocket = class extends Native {
    constructor(url, protocols) {
      // Port 9 (discard) on the loopback refuses at once: the page sees a socket that closes.
      // Another loopback address than the server's, so that the browser's holding back of
      // connections to a host that failed does not reach the server's.
      super(test.blocked ? "ws://127.0.0.2:9/" : url, protocols);
      test.urls.push(test.blocked ? "blocked" : String(url));
      test.sockets.push(this);
    }
  };
}

/** Ids of the events on the page, in page order. */
function pageIds(page) {
  return page.$$eval("[data-event-id]", (nodes) => nodes.map((n) => Number(n.dataset.eventId)));
}

/** What the page shows for each event, to compare before and after a reload. */
function pageSignature(page) {
  return page.$$eval("[data-event-id]", (nodes) =>
    nodes.map((n) => `${n.dataset.eventId}|${n.className}|${n.hidden}|${n.textContent.replace(/running…$/, "")}`));
}

function assertDenseAndUnique(ids, what) {
  const unique = new Set(ids);
  check(unique.size === ids.length, `${what}: duplicate event ids on the page: ${JSON.stringify(ids)}`);
  const sorted = [...ids].sort((a, b) => a - b);
  sorted.forEach((id, i) => check(id === i, `${what}: event ids are not 0..${ids.length - 1}: ${JSON.stringify(sorted)}`));
}

async function shot(page, name) {
  const path = join(opts.artifacts, `${opts.scenario}-${name}.png`);
  await page.screenshot({ path, fullPage: false });
  emit("screenshot", { path });
}

async function step(name, action) {
  const started = Date.now();
  await action();
  emit("step", { name, ms: Date.now() - started });
}

/** Sends a user message on a second, plain connection (another tab, another client) and waits
 *  until the agent has answered it and come to rest. Runs inside the page. */
function talkOnTheSide({ conversation, after, key, text, timeoutMs }) {
  return new Promise((resolve, reject) => {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const query = new URLSearchParams({
      EIO: "4", transport: "websocket", conversation_id: conversation, latest_event_id: String(after),
    });
    const ws = new window.__ohdTest.Native(`${scheme}//${location.host}/socket.io/?${query}`);
    const events = [];
    let working = false;
    const timer = setTimeout(() => { ws.close(); reject(new Error(`side client timed out: ${JSON.stringify(events)}`)); }, timeoutMs);
    ws.onmessage = ({ data }) => {
      if (data.startsWith("0")) ws.send("40" + (key ? JSON.stringify({ session_api_key: key }) : ""));
      else if (data === "2") ws.send("3");
      else if (data.startsWith("40")) {
        ws.send("42" + JSON.stringify(["oh_user_action", { action: "message", args: { content: text } }]));
      } else if (data.startsWith("42")) {
        const [name, event] = JSON.parse(data.slice(2));
        if (name !== "oh_event" || !Number.isInteger(event.id)) return;
        events.push({ id: event.id, kind: event.action || event.observation, state: event.extras?.agent_state });
        const state = event.extras?.agent_state;
        if (state === "running") working = true;
        if (working && ["finished", "awaiting_user_input", "error", "stopped"].includes(state)) {
          clearTimeout(timer);
          ws.close();
          resolve(events);
        }
      } else if (data.startsWith("44")) {
        clearTimeout(timer);
        reject(new Error(`side client refused: ${data}`));
      }
    };
  });
}

async function agentScenario(page, timeout) {
  const task = "Say hello from the shell, keep notes, then wait.";

  await step("open the page", async () => {
    await page.goto(opts.url + "/");
    await page.getByRole("button", { name: "New conversation" }).waitFor({ timeout });
    check(await page.locator("#welcome").isVisible(), "the welcome text is not shown");
  });
  await shot(page, "01-home");

  let conversation;
  await step("create a conversation", async () => {
    await page.getByRole("button", { name: "New conversation" }).click();
    await page.waitForURL(/#\/conversations\/[0-9a-f]+$/, { timeout });
    conversation = new URL(page.url()).hash.split("/").pop();
    await page.locator("#connection[data-status='connected']").waitFor({ timeout });
    await page.locator(`.conversation-link[data-conversation-id='${conversation}'][aria-current='page']`).waitFor({ timeout });
    await page.locator("#composer-input:enabled").waitFor({ timeout });
  });
  emit("conversation", { id: conversation });

  await step("send a task", async () => {
    await page.locator("#composer-input").fill(task);
    await page.locator("#composer-input").press("Enter");
    await page.locator(".event.message.user .bubble", { hasText: task }).waitFor({ timeout });
    check((await page.locator("#composer-input").inputValue()) === "", "the message box was not cleared");
  });

  await step("the command and its output", async () => {
    const run = page.locator(".event.action.run", { hasText: "echo hello-from-agent" });
    await run.locator(".observation.run pre.output", { hasText: "hello-from-agent" }).waitFor({ timeout });
    const status = await run.locator(".status").textContent();
    check(status.includes("exit 0"), `the command's status says ${JSON.stringify(status)}`);
    await page.locator(".event.message.agent, .thought", { hasText: "Let me say hello first." }).first().waitFor({ timeout });
  });

  await step("the file edit and its diff", async () => {
    const edit = page.locator(".event.action.edit", { hasText: "notes.txt" }).last();
    await edit.locator(".diff-line.add", { hasText: "hello, world" }).waitFor({ timeout });
    await edit.locator(".diff-line.del", { hasText: "hello" }).first().waitFor({ timeout });
  });

  await step("the running command, then Stop", async () => {
    const sleeping = page.locator(".event.action.run", { hasText: "sleep 30" });
    await sleeping.locator(".status.pending").waitFor({ timeout });
    await page.locator("#agent-state[data-state='running']").waitFor({ timeout });
    await page.locator("#working:not([hidden])").waitFor({ timeout });
    await shot(page, "02-command-output");
    await page.getByRole("button", { name: "Stop" }).click();
    await page.locator("#agent-state[data-state='stopped']").waitFor({ timeout });
    await page.locator(".event.note", { hasText: "You stopped the agent." }).waitFor({ timeout });
    await sleeping.locator(".status.failed").waitFor({ timeout });
    check(await page.getByRole("button", { name: "Stop" }).isDisabled(), "Stop is still enabled once stopped");
  });
  await shot(page, "03-stopped");

  const stoppedIds = await pageIds(page);
  assertDenseAndUnique(stoppedIds, "after Stop");

  await step("the socket drops while another client talks; the page resumes", async () => {
    const last = Math.max(...stoppedIds);
    const socketsBefore = await page.evaluate(() => window.__ohdTest.sockets.length);
    await page.evaluate(() => {
      window.__ohdTest.blocked = true;
      window.__ohdTest.sockets.at(-1).close();
    });
    await page.locator("#connection[data-status='offline']").waitFor({ timeout });
    check(await page.locator("#composer-input").isDisabled(), "the message box stays enabled while offline");
    const side = await page.evaluate(talkOnTheSide, {
      conversation, after: last, key: opts.apiKey, text: "Thanks, that is all.", timeoutMs: timeout,
    });
    emit("side_client", { events: side });
    check(side.some((e) => e.kind === "finish"), `the agent did not finish: ${JSON.stringify(side)}`);
    await shot(page, "04-offline");
    await page.evaluate(() => { window.__ohdTest.blocked = false; });
    await page.locator("#connection[data-status='connected']").waitFor({ timeout: timeout + 10000 });
    const urls = await page.evaluate(() => window.__ohdTest.urls);
    const resumed = urls.filter((u) => u !== "blocked").at(-1);
    check(urls.length > socketsBefore, "the page did not reconnect");
    check(new URL(resumed).searchParams.get("latest_event_id") === String(last),
      `the page resumed from ${resumed}, not from the last event ${last}`);
    await page.locator(".event.message.user .bubble", { hasText: "Thanks, that is all." }).waitFor({ timeout });
    await page.locator(".event.message.agent", { hasText: "All done: the shell said hello." }).waitFor({ timeout });
    await page.locator("#agent-state[data-state='finished']").waitFor({ timeout });
  });

  const ids = await pageIds(page);
  assertDenseAndUnique(ids, "after the resume");
  const signature = await pageSignature(page);
  await shot(page, "05-resumed");

  await step("a reload shows the same history", async () => {
    await page.reload();
    await page.locator("#connection[data-status='connected']").waitFor({ timeout });
    await page.waitForFunction((n) => document.querySelectorAll("[data-event-id]").length >= n, ids.length, { timeout });
    await page.locator("#agent-state[data-state='finished']").waitFor({ timeout });
    // Anything late would arrive now.
    await page.waitForTimeout(500);
    const again = await pageIds(page);
    assertDenseAndUnique(again, "after the reload");
    check(JSON.stringify(again) === JSON.stringify(ids),
      `after the reload the page shows ${JSON.stringify(again)}, before ${JSON.stringify(ids)}`);
    const signatureAgain = await pageSignature(page);
    const differing = signature.filter((s, i) => s !== signatureAgain[i]);
    check(differing.length === 0, `the history looks different after the reload: ${JSON.stringify(differing)}`);
  });
  await shot(page, "06-after-reload");
  return { conversation, ids };
}

/** Opens the page, creates a conversation and sends `text`; returns the conversation's id. */
async function startConversation(page, timeout, text) {
  await page.goto(opts.url + "/");
  await page.getByRole("button", { name: "New conversation" }).click();
  await page.waitForURL(/#\/conversations\/[0-9a-f]+$/, { timeout });
  const conversation = new URL(page.url()).hash.split("/").pop();
  await page.locator("#connection[data-status='connected']").waitFor({ timeout });
  await page.locator("#composer-input:enabled").waitFor({ timeout });
  await page.locator("#composer-input").fill(text);
  await page.locator("#composer-input").press("Enter");
  await page.locator(".event.message.user .bubble", { hasText: text }).waitFor({ timeout });
  return conversation;
}

/** How many times `text` is visible on the page, in the conversation and in notices. */
function timesShown(page, text) {
  return page.evaluate((needle) => {
    const places = [...document.querySelectorAll("#events .error-text, #events .state-note, #notices .notice-text")];
    return places.filter((n) => n.offsetParent !== null)
      .map((n) => n.textContent.split(needle).length - 1)
      .reduce((a, b) => a + b, 0);
  }, text);
}

async function demoScenario(page, timeout) {
  let conversation;
  await step("send a first message", async () => {
    conversation = await startConversation(page, timeout, "Show me what you can do.");
  });
  await step("the commands and their output", async () => {
    const look = page.locator(".event.action.run", { hasText: "rm -f hello.sh; pwd; ls -A" });
    await look.locator(".status", { hasText: "exit 0" }).waitFor({ timeout });
    const first = page.locator(".event.action.run", { hasText: "sh hello.sh" }).first();
    await first.locator(".observation.run pre.output", { hasText: "Hello from the sandbox" }).waitFor({ timeout });
  });
  await step("the file made and edited", async () => {
    await page.locator(".event.action.edit", { hasText: "hello.sh" }).first().waitFor({ timeout });
    const edit = page.locator(".event.action.edit", { hasText: "hello.sh" }).last();
    await edit.locator(".diff-line.add", { hasText: "Hello again from the sandbox" }).waitFor({ timeout });
    await edit.locator(".diff-line.del", { hasText: "Hello from the sandbox" }).waitFor({ timeout });
    const again = page.locator(".event.action.run", { hasText: "sh hello.sh && ls -l hello.sh" });
    await again.locator(".observation.run pre.output", { hasText: "Hello again from the sandbox" }).waitFor({ timeout });
  });
  await step("the finish", async () => {
    await page.locator(".event.message.agent", { hasText: "Done: I looked at the workspace" }).waitFor({ timeout });
    await page.locator("#agent-state[data-state='finished']").waitFor({ timeout });
    check(await page.locator(".notice.error").count() === 0, "an error notice is shown");
  });
  await shot(page, "01-finished");
  await step("a second message plays the task again, without an error", async () => {
    await page.locator("#composer-input").fill("Once more, please.");
    await page.locator("#composer-input").press("Enter");
    await page.locator(".event.message.agent", { hasText: "Done: I looked at the workspace" }).nth(1).waitFor({ timeout });
    await page.locator("#agent-state[data-state='finished']").waitFor({ timeout });
    check(await page.locator(".observation.error, .error-text").count() === 0, "an error is shown");
    check(await page.locator(".notice.error").count() === 0, "an error notice is shown");
  });
  await step("Settings shows the demo's model", async () => {
    await page.getByRole("button", { name: "Settings" }).click();
    await page.locator("#settings-form:not([hidden])").waitFor({ timeout });
    const model = await page.locator("#settings-form").getByLabel("Model", { exact: true }).inputValue();
    check(model === "ohd/demo", `Settings shows the model ${JSON.stringify(model)}`);
    const baseUrl = await page.locator("#settings-form").getByLabel("Base URL").inputValue();
    check(baseUrl === "", `Settings shows a base URL ${JSON.stringify(baseUrl)}`);
    const key = await page.locator("#settings-form").getByLabel("API key").inputValue();
    check(key === "", "Settings shows a key");
  });
  const ids = await pageIds(page);
  assertDenseAndUnique(ids, "the demo");
  return { conversation, ids };
}

async function noModelScenario(page, timeout) {
  let first;
  await step("a message without a model gets one error", async () => {
    first = await startConversation(page, timeout, "hello?");
    await page.locator("#agent-state[data-state='error']").waitFor({ timeout });
    await page.locator(".state-note.state-error").waitFor({ timeout });
    const badge = await page.locator("#agent-state").textContent();
    check(badge === "Error", `the state says ${JSON.stringify(badge)}`);
    // Anything said late would arrive now.
    await page.waitForTimeout(500);
    const times = await timesShown(page, "No language model is configured");
    check(times === 1, `the missing model is said ${times} times`);
    check(await page.locator(".notice.error").count() === 0, "an error notice repeats the conversation's error");
  });
  await shot(page, "01-one-error");
  await step("Choose a model opens Settings, which saves one", async () => {
    await page.getByRole("button", { name: "Choose a model" }).click();
    await page.locator("#settings-form:not([hidden])").waitFor({ timeout });
    check(await page.locator("#settings-form").getByLabel("Model", { exact: true }).inputValue() === "", "Settings shows a model before one is saved");
    await page.locator("#settings-form").getByLabel("Model", { exact: true }).fill(opts.model);
    await page.locator("#settings-form").getByLabel("API key").fill(opts.modelKey);
    await page.locator("#settings-form").getByLabel("Base URL").fill(opts.baseUrl);
    await shot(page, "02-settings");
    await page.locator("#settings-form").getByRole("button", { name: "Save" }).click();
    await page.locator("#settings-form[hidden]").waitFor({ state: "attached", timeout });
    await page.locator(".notice.info", { hasText: "Saved." }).waitFor({ timeout });
  });
  await step("Settings shows the saved model, and the key only as saved", async () => {
    await page.getByRole("button", { name: "Settings" }).click();
    await page.locator("#settings-form:not([hidden])").waitFor({ timeout });
    check(await page.locator("#settings-form").getByLabel("Model", { exact: true }).inputValue() === opts.model, "the saved model is not shown");
    check(await page.locator("#settings-form").getByLabel("API key").inputValue() === "", "the key is shown");
    const placeholder = await page.locator("#settings-form").getByLabel("API key").getAttribute("placeholder");
    check(placeholder.includes("saved"), `the key field does not say a key is saved: ${placeholder}`);
    await page.locator("#settings-close").click();
  });
  await step("the same conversation now works with the saved model", async () => {
    await page.locator("#composer-input").fill("and now?");
    await page.locator("#composer-input").press("Enter");
    await page.locator(".event.message.agent", { hasText: "The saved model answered." }).waitFor({ timeout });
    await page.locator("#agent-state[data-state='finished']").waitFor({ timeout });
  });
  let conversation;
  await step("the next conversation uses the saved model", async () => {
    conversation = await startConversation(page, timeout, "now with a model");
    await page.locator(".event.message.agent", { hasText: "The saved model answered." }).waitFor({ timeout });
    await page.locator("#agent-state[data-state='finished']").waitFor({ timeout });
  });
  await shot(page, "03-working");
  return { conversation, first, ids: await pageIds(page) };
}

async function unreachableScenario(page, timeout) {
  let conversation;
  let mostRetryNotices = 0;
  let retryNotices = 0;
  await step("the state says the model cannot be reached", async () => {
    conversation = await startConversation(page, timeout, "anyone there?");
    const badge = page.locator("#agent-state[data-state='rate_limited']");
    await badge.waitFor({ timeout });
    const label = await badge.textContent();
    check(label === "Could not reach the model, retrying", `the state says ${JSON.stringify(label)}`);
  });
  await shot(page, "01-retrying");
  await step("retry notices replace each other; the failure is said once", async () => {
    const deadline = Date.now() + timeout;
    while (Date.now() < deadline) {
      const count = await page.locator("#notices .notice[data-key='STATUS$LLM_RETRY']").count();
      mostRetryNotices = Math.max(mostRetryNotices, count);
      const text = await page.locator("#notices .notice[data-key='STATUS$LLM_RETRY'] .notice-text").allTextContents();
      if (text.some((t) => /retry 2 in/.test(t))) retryNotices = 2;
      if (await page.locator("#agent-state[data-state='error']").count() > 0) break;
      await page.waitForTimeout(50);
    }
    await page.locator("#agent-state[data-state='error']").waitFor({ timeout: 1000 });
    check(mostRetryNotices === 1, `${mostRetryNotices} retry notices were shown at once`);
    check(retryNotices === 2, "the second retry's notice was not seen");
    await page.waitForTimeout(500);
    check(await page.locator(".notice.error").count() === 0, "an error notice repeats the conversation's error");
    check(await page.locator("#notices .notice[data-key='STATUS$LLM_RETRY']").count() === 0,
      "the last retry's notice stays after the agent gave up");
    const times = await timesShown(page, "not reach the LLM provider");
    check(times === 1, `the failure is said ${times} times`);
    const said = await page.locator(".state-note.state-error").textContent();
    check(/cannot connect to 127\.0\.0\.1:\d+: connection refused/.test(said), `the failure says ${JSON.stringify(said)}`);
    // The badge and the notice said it while it lasted; the history keeps only the failure.
    const notes = await page.locator(".state-note.state-rate_limited").count();
    check(notes === 0, `${notes} retry notes stay in the history`);
  });
  await shot(page, "02-gave-up");
  return { conversation, ids: await pageIds(page) };
}

async function confirmScenario(page, timeout) {
  let conversation;
  await step("create a conversation and send a task", async () => {
    await page.goto(opts.url + "/");
    await page.getByRole("button", { name: "New conversation" }).click();
    await page.waitForURL(/#\/conversations\/[0-9a-f]+$/, { timeout });
    conversation = new URL(page.url()).hash.split("/").pop();
    await page.locator("#connection[data-status='connected']").waitFor({ timeout });
    await page.locator("#composer-input").fill("Write two files, asking first.");
    await page.locator("#composer-input").press("Enter");
  });
  await step("the first command waits; Confirm runs it", async () => {
    const waiting = page.locator(".event.action.run", { hasText: "echo yes > confirmed.txt" }).first();
    await waiting.locator(".confirm-bar").waitFor({ timeout });
    await page.locator("#agent-state[data-state='awaiting_user_confirmation']").waitFor({ timeout });
    await shot(page, "01-waiting");
    await waiting.getByRole("button", { name: "Confirm" }).click();
    await waiting.locator(".status.ok", { hasText: "confirmed" }).waitFor({ timeout });
    check(await waiting.locator(".confirm-bar").count() === 0, "the buttons stay after the answer");
    // The confirmed copy runs and gets the result.
    const ran = page.locator(".event.action.run", { hasText: "echo yes > confirmed.txt" }).last();
    await ran.locator(".status.ok", { hasText: "exit 0" }).waitFor({ timeout });
  });
  await step("the second command waits; Reject refuses it", async () => {
    const waiting = page.locator(".event.action.run", { hasText: "echo no > rejected.txt" }).first();
    await waiting.locator(".confirm-bar").waitFor({ timeout });
    await waiting.getByRole("button", { name: "Reject" }).click();
    await waiting.locator(".status.failed", { hasText: "rejected" }).waitFor({ timeout });
    await page.locator(".observation.user_rejected", { hasText: "rejected by the user" }).waitFor({ timeout });
    await page.locator("#agent-state[data-state='awaiting_user_input']").waitFor({ timeout });
  });
  await shot(page, "02-answered");
  return { conversation, ids: await pageIds(page) };
}

async function authScenario(page, timeout, keyGiven) {
  await step("the page asks for the key", async () => {
    await page.goto(opts.url + "/");
    await page.locator("#key-form:not([hidden])").waitFor({ timeout });
  });
  await shot(page, "01-key-form");
  await step("save the key", async () => {
    keyGiven();
    await page.getByLabel("Session API key").fill(opts.apiKey);
    await page.getByRole("button", { name: "Save" }).click();
    await page.locator("#key-form[hidden]").waitFor({ state: "attached", timeout });
  });
  let conversation;
  await step("create, join and send with the key", async () => {
    await page.getByRole("button", { name: "New conversation" }).click();
    await page.waitForURL(/#\/conversations\/[0-9a-f]+$/, { timeout });
    conversation = new URL(page.url()).hash.split("/").pop();
    await page.locator("#connection[data-status='connected']").waitFor({ timeout });
    await page.locator("#composer-input").fill("hello with a key");
    await page.getByRole("button", { name: "Send" }).click();
    await page.locator(".event.message.user .bubble", { hasText: "hello with a key" }).waitFor({ timeout });
    const urls = await page.evaluate(() => window.__ohdTest.urls);
    check(urls.every((u) => !u.includes(opts.apiKey)), "the key is in a socket URL");
  });
  await shot(page, "02-joined");
  const ids = await pageIds(page);
  assertDenseAndUnique(ids, "with a key");
  return { conversation, ids };
}

async function main() {
  const browser = await chromium.launch({
    executablePath: opts.chromium,
    args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const problems = [];
  // Before the auth scenario saves the key, the page's requests are refused on purpose.
  let refusalsExpected = opts.scenario === "auth";
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
    await context.addInitScript(instrumentWebSockets);
    page = await context.newPage();
    page.on("pageerror", (error) => problems.push(`page error: ${error.message}`));
    page.on("console", (message) => {
      // The refused socket of the simulated outage is expected; anything else is not.
      const text = message.text();
      const expected = text.includes("ws://127.0.0.2:9/") || (refusalsExpected && text.includes("status of 401"))
        // A first run's settings are 404 until a model is saved (as the original answers).
        || (opts.scenario === "no-model" && text.includes("status of 404"));
      if (message.type() === "error" && !expected) {
        problems.push(`console error: ${text}`);
      }
    });
    const timeout = opts.timeoutMs;
    const scenarios = {
      agent: () => agentScenario(page, timeout),
      confirm: () => confirmScenario(page, timeout),
      demo: () => demoScenario(page, timeout),
      "no-model": () => noModelScenario(page, timeout),
      unreachable: () => unreachableScenario(page, timeout),
      auth: () => authScenario(page, timeout, () => { refusalsExpected = false; }),
    };
    const result = await scenarios[opts.scenario]();
    check(problems.length === 0, `the browser reported problems: ${JSON.stringify(problems)}`);
    emit("result", { ok: true, ...result });
  } catch (error) {
    if (page) await shot(page, "failure").catch(() => {});
    const message = error instanceof Failure ? error.message : String(error?.stack || error);
    emit("failed", { message, problems });
    process.stderr.write(`page.test: ${message}\n`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

await main();

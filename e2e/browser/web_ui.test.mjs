#!/usr/bin/env node
// The OpenHands web UI (a built 0.59 frontend served by ohd with --web-ui) in headless Chromium:
// the settings page's Git and Secrets tabs and the home page's repository picker, against ohd's
// REST and a provider stand-in the test runs.
//
// What it does, as a user would:
//   1. Git tab (/settings/integrations): types a GitHub token and the host of the provider
//      stand-in, saves, and sees the token reported as set.
//   2. Secrets tab (/settings/secrets): adds a secret with a description and sees it listed
//      (name and description only).
//   3. Home page: opens the repository list, picks --repo, opens the branch list, picks
//      --branch, presses Launch, and lands on the new conversation's page.
//
// Output: one JSON object per line ({"kind":"step"|"screenshot",...}, {"kind":"result",...} last,
// with the conversation id). Exit codes: 0 passed, 1 failed (the reason on stderr), 2 usage.
//
// Usage: node web_ui.test.mjs --url http://127.0.0.1:3000 --token T --host H --repo owner/name
//          --branch B --secret-name N --secret-value V [--artifacts DIR]
//          [--chromium /usr/bin/chromium] [--timeout-ms 20000]

import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

function usage(message) {
  process.stderr.write(`web_ui.test: ${message}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const opts = { artifacts: "artifacts", chromium: "/usr/bin/chromium", timeoutMs: 20000 };
  const names = {
    "--url": "url", "--token": "token", "--host": "host", "--repo": "repo", "--branch": "branch",
    "--secret-name": "secretName", "--secret-value": "secretValue", "--artifacts": "artifacts",
    "--chromium": "chromium", "--timeout-ms": "timeoutMs",
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = names[argv[i]];
    if (!key) usage(`unknown flag ${argv[i]}`);
    if (argv[i + 1] === undefined) usage(`${argv[i]} needs a value`);
    opts[key] = key === "timeoutMs" ? Number(argv[i + 1]) : argv[i + 1];
  }
  for (const needed of ["url", "token", "host", "repo", "branch", "secretName", "secretValue"]) {
    if (!opts[needed]) usage(`--${needed.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} is required`);
  }
  opts.url = opts.url.replace(/\/$/, "");
  return opts;
}

const opts = parseArgs(process.argv.slice(2));
const emit = (kind, fields = {}) => process.stdout.write(JSON.stringify({ kind, ...fields }) + "\n");
mkdirSync(opts.artifacts, { recursive: true });

class Failure extends Error {}
function check(condition, message) {
  if (!condition) throw new Failure(message);
}

async function shot(page, name) {
  const path = join(opts.artifacts, `web-ui-${name}.png`);
  await page.screenshot({ path, fullPage: false });
  emit("screenshot", { path });
}

async function step(name, action) {
  const started = Date.now();
  const value = await action();
  emit("step", { name, ms: Date.now() - started });
  return value;
}

/** The body of the first response to `method path` the page receives while `action` runs. */
async function answerTo(page, method, path, action) {
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.request().method() === method && new URL(r.url()).pathname === path,
      { timeout: opts.timeoutMs }),
    action(),
  ]);
  return { status: response.status(), body: await response.text() };
}

async function gitTab(page) {
  await page.goto(`${opts.url}/settings/integrations`);
  await page.getByTestId("git-settings-screen").waitFor({ timeout: opts.timeoutMs });
  await page.getByTestId("github-token-input").fill(opts.token);
  await page.getByTestId("github-host-input").fill(opts.host);
  const saved = await answerTo(page, "POST", "/api/add-git-providers",
    () => page.getByTestId("submit-button").click());
  check(saved.status === 200, `saving the token: ${saved.status} ${saved.body}`);
  // The page reloads the settings and marks the token as set, and clears the field.
  await page.getByTestId("gh-set-token-indicator").waitFor({ timeout: opts.timeoutMs });
  check(await page.getByTestId("github-token-input").inputValue() === "", "the token field kept the token");
  check(!(await page.content()).includes(opts.token), "the page shows the token");
  await shot(page, "git-tab");
}

async function secretsTab(page) {
  await page.goto(`${opts.url}/settings/secrets`);
  await page.getByTestId("secrets-settings-screen").waitFor({ timeout: opts.timeoutMs });
  await page.getByTestId("add-secret-button").click();
  await page.getByTestId("name-input").fill(opts.secretName);
  await page.getByTestId("value-input").fill(opts.secretValue);
  await page.getByTestId("description-input").fill("set from the web UI");
  const created = await answerTo(page, "POST", "/api/secrets",
    () => page.getByTestId("submit-button").click());
  check(created.status === 200 || created.status === 201, `adding the secret: ${created.status} ${created.body}`);
  await page.getByText(opts.secretName, { exact: true }).waitFor({ timeout: opts.timeoutMs });
  await page.getByText("set from the web UI").waitFor({ timeout: opts.timeoutMs });
  check(!(await page.content()).includes(opts.secretValue), "the page shows the secret's value");
  await shot(page, "secrets-tab");
}

async function repositoryPicker(page) {
  await page.goto(`${opts.url}/`);
  const repoInput = page.getByTestId("git-repo-dropdown");
  await repoInput.waitFor({ timeout: opts.timeoutMs });
  // The list fills from GET /api/user/repositories once the provider is known.
  await repoInput.click();
  const menu = page.getByTestId("git-repo-dropdown-menu");
  await menu.getByText(opts.repo, { exact: true }).click({ timeout: opts.timeoutMs });
  const branchInput = page.getByTestId("git-branch-dropdown-input");
  await page.waitForFunction(
    () => !document.querySelector('[data-testid="git-branch-dropdown-input"]')?.disabled,
    null, { timeout: opts.timeoutMs });
  await branchInput.click();
  const branches = page.getByTestId("git-branch-dropdown-menu");
  await branches.getByText(opts.branch, { exact: true }).click({ timeout: opts.timeoutMs });
  await shot(page, "picker");
  const launch = page.getByTestId("repo-launch-button");
  await page.waitForFunction(
    () => !document.querySelector('[data-testid="repo-launch-button"]')?.disabled,
    null, { timeout: opts.timeoutMs });
  const created = await answerTo(page, "POST", "/api/conversations", () => launch.click());
  check(created.status === 200, `creating the conversation: ${created.status} ${created.body}`);
  const body = JSON.parse(created.body);
  await page.waitForURL(`**/conversations/${body.conversation_id}`, { timeout: opts.timeoutMs });
  await shot(page, "conversation");
  return body.conversation_id;
}

async function main() {
  const browser = await chromium.launch({
    executablePath: opts.chromium,
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  const problems = [];
  let page;
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 820 } });
    page = await context.newPage();
    page.on("pageerror", (error) => {
      // React's #418 (a hydration mismatch) is the 0.59 build's own: its prerendered index.html
      // differs from the first client render, which comes before any answer of the API.
      if (!error.message.includes("Minified React error #418")) problems.push(`page error: ${error.message}`);
    });
    page.on("response", (response) => {
      // A 5xx from ohd is a failure whatever the page makes of it.
      if (response.status() >= 500) problems.push(`${response.status()} for ${response.url()}`);
    });
    await step("git tab", () => gitTab(page));
    await step("secrets tab", () => secretsTab(page));
    const conversation = await step("repository picker", () => repositoryPicker(page));
    check(problems.length === 0, `the browser saw problems: ${JSON.stringify(problems)}`);
    emit("result", { ok: true, conversation });
  } catch (error) {
    if (page) await shot(page, "failure").catch(() => {});
    const message = error instanceof Failure ? error.message : String(error?.stack || error);
    emit("failed", { message, problems });
    process.stderr.write(`web_ui.test: ${message}\n`);
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}

await main();

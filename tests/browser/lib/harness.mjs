// The browser tests' harness, shared by every spec: reads the ready file a
// running `gatehouse demo --keep-running --ready-file …` wrote, launches
// Debian's headless Chromium through playwright-core with a fresh profile,
// and talks to the simulator's control API. Nothing here is specific to
// one page, so a spec for another page (e.g. the wallet link) reuses it.

import { mkdtemp, mkdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "..", "..", "..");

/** The running system, as `gatehouse demo --ready-file` describes it. */
export async function ready() {
  const file = process.env.GATEHOUSE_READY_FILE;
  if (!file) throw new Error("GATEHOUSE_READY_FILE is not set: run the specs through scripts/browser-test");
  return JSON.parse(await readFile(file, "utf8"));
}

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/**
 * A fresh browser (its own throwaway profile directory: no cookie survives
 * from another test). Returns { context, page, consoleErrors, close }.
 */
export async function launch() {
  const profile = await mkdtemp(path.join(tmpdir(), "gatehouse-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 860 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(20_000);
  const consoleErrors = [];
  page.on("console", (message) => {
    if (message.type() === "error") consoleErrors.push(message.text());
  });
  page.on("pageerror", (error) => consoleErrors.push(String(error)));
  return {
    context,
    page,
    consoleErrors,
    async close() {
      await context.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

/** Saves a screenshot as docs/screenshots/<name>.png (committed; the docs show them). */
export async function screenshot(page, name) {
  const dir = process.env.GATEHOUSE_SCREENSHOTS || path.join(repoRoot, "docs", "screenshots");
  await mkdir(dir, { recursive: true });
  await page.screenshot({ path: path.join(dir, `${name}.png`), fullPage: true });
}

/** Polls `check` until it returns a truthy value; throws naming `what` after `ms`. */
export async function eventually(what, ms, check) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last})`);
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** The simulator's control API (`/_sim/…`). */
export function simulator(r) {
  const get = async (p) => {
    const response = await fetch(`${r.sim_url}/_sim${p}`);
    if (!response.ok) throw new Error(`GET /_sim${p}: ${response.status}`);
    return response.json();
  };
  return {
    members: (guild) => get(`/guilds/${guild}/members`),
    guild: (guild) => get(`/guilds/${guild}`),
  };
}

/**
 * Logs in through the dashboard's "Log in with Discord" and the simulator's
 * OAuth2 chooser, as `userId`; ends on the dashboard's community list.
 */
export async function loginAs(page, r, userId) {
  await page.goto(r.dashboard_url);
  await page.waitForURL(/\/login$/);
  await page.click("#login");
  // The simulator's chooser: one link per person who can log in.
  await page.click(`#login-${userId}`);
  await page.waitForURL(/\/dashboard$/);
}

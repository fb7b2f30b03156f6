// The dashboard in a real browser: an admin logs in through the
// simulator's OAuth2 chooser, creates a rule, previews it, saves it, and
// the simulated Discord members get the role; a member without Manage
// Server sees no community and gets 404 on one.

import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { eventually, launch, loginAs, ready, screenshot, simulator } from "../lib/harness.mjs";

let r;
before(async () => {
  r = await ready();
});

test("an admin creates a rule through preview and save, and members get the role", async () => {
  const browser = await launch();
  after(() => browser.close());
  const { page } = browser;
  const community = r.communities.find((c) => c.free_role_id);
  assert.ok(community, "a demo server with a role no rule grants");
  const role = community.free_role_id;
  const base = `${r.api_url}/dashboard/${community.guild_id}`;

  await loginAs(page, r, r.admin_user_id);
  for (const c of r.communities) {
    assert.ok(await page.isVisible(`#community-${c.guild_id}`), `server ${c.guild_id} is listed`);
  }
  await page.click(`#community-${community.guild_id}`);
  await page.waitForURL(base);
  await page.waitForSelector("#sync");
  await screenshot(page, "dashboard-overview");

  await page.goto(`${base}/rules`);
  await page.click("#new-rule");
  await page.fill("#role_id", role);
  await page.selectOption("#rule_type", "token_balance");
  await page.fill("#chain", r.token.chain);
  await page.fill("#contract_address", r.token.contract);
  await page.fill("#parameters", JSON.stringify({ min_balance: r.token.min_balance }));
  await page.click("#preview");
  await page.waitForSelector("#preview-result");
  const gain = Number(await page.getAttribute(`tr[data-role="${role}"] td[data-gain]`, "data-gain"));
  assert.ok(gain > 0, `the preview names members who would gain the role (${gain})`);
  await screenshot(page, "rules-preview");

  await page.click("#save");
  await page.waitForURL(/\/rules\?done=created$/);
  assert.match(await page.textContent("main"), /Rule saved/);
  assert.ok(await page.isVisible(`#rules tr:has-text("${role}")`));

  // The workers re-check the community and Discord (the simulator) follows.
  const sim = simulator(r);
  const holders = await eventually("members to get the role in the simulator", 90_000, async () => {
    const members = await sim.members(community.guild_id);
    const holding = members.filter((m) => m.roles.map(String).includes(role));
    return holding.length > 0 ? holding : null;
  });
  assert.ok(holders.length > 0);

  // The member's page says why they hold it.
  const holder = String(holders[0].user_id);
  await page.goto(`${base}/members?q=${holder}`);
  await page.waitForSelector("#standing");
  await eventually("the member's rule outcome to show", 30_000, async () => {
    await page.reload();
    const outcome = await page.$$eval(
      "#standing tbody tr",
      (rows, role) => rows.find((row) => row.querySelector("td code")?.textContent === role)?.querySelector(".pill")?.textContent,
      role,
    );
    return outcome === "eligible";
  });
  await screenshot(page, "member-detail");

  assert.deepEqual(
    browser.consoleErrors.filter((e) => /Content Security Policy|Refused to/.test(e)),
    [],
    "nothing was blocked by the Content-Security-Policy",
  );
});

test("a member without Manage Server sees no community and gets 404", async () => {
  const browser = await launch();
  after(() => browser.close());
  const { page } = browser;
  await loginAs(page, r, r.non_admin_user_id);
  assert.ok(await page.isVisible("#no-communities"));
  for (const c of r.communities) {
    assert.equal(await page.isVisible(`#community-${c.guild_id}`), false);
    const response = await page.goto(`${r.api_url}/dashboard/${c.guild_id}/rules`);
    assert.equal(response.status(), 404, `server ${c.guild_id}`);
  }
});

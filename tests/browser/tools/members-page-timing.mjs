// How long the dashboard's members page takes to load in a real browser,
// against a running `gatehouse demo --keep-running --ready-file …` (e.g. with
// --communities 1 --members 10000). Logs in as the demo's admin, loads the
// first community's members page `RUNS` times (default 30) and prints the
// median and 95th percentile of the time to the document's load event and
// of the server's response (request start to response end), in ms.
// QUERY adds the page's filters (e.g. QUERY=wallet=no, QUERY=role=<role id>).
//
//   GATEHOUSE_READY_FILE=/tmp/ready.json node tests/browser/tools/members-page-timing.mjs

import { launch, loginAs, ready } from "../lib/harness.mjs";

const runs = Number(process.env.RUNS || 30);
const r = await ready();
const browser = await launch();
try {
  const { page } = browser;
  await loginAs(page, r, r.admin_user_id);
  const guild = r.communities[0].guild_id;
  const url = `${r.api_url}/dashboard/${guild}/members${process.env.QUERY ? `?${process.env.QUERY}` : ""}`;
  const load = [];
  const server = [];
  let rows = 0;
  for (let i = 0; i < runs + 3; i++) {
    await page.goto(url, { waitUntil: "load" });
    const t = await page.evaluate(() => {
      const n = performance.getEntriesByType("navigation")[0];
      return { load: n.loadEventEnd - n.startTime, server: n.responseEnd - n.requestStart };
    });
    rows = await page.$$eval("table tbody tr", (trs) => trs.length);
    if (i >= 3) {
      // The first loads warm the connection and caches.
      load.push(t.load);
      server.push(t.server);
    }
  }
  const pct = (xs, p) => {
    const s = [...xs].sort((a, b) => a - b);
    return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
  };
  const members = await fetch(`${r.sim_url}/_sim/guilds/${guild}`).then((x) => x.json());
  console.log(
    JSON.stringify({
      url,
      runs,
      rows_on_page: rows,
      guild_members: members.member_count ?? null,
      load_ms: { p50: +pct(load, 50).toFixed(1), p95: +pct(load, 95).toFixed(1) },
      server_ms: { p50: +pct(server, 50).toFixed(1), p95: +pct(server, 95).toFixed(1) },
    }),
  );
} finally {
  await browser.close();
}

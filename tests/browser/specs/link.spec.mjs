// The wallet-link page in a real browser: a member runs /link-wallet in
// (simulated) Discord, opens the link, an injected EIP-1193 wallet signs the
// Sign-In with Ethereum message with a known key, and the role appears in
// Discord. And every way a link can be misused is refused with a clear
// message, storing nothing: a refusing wallet, a reused link, an expired
// link, a message for another site, a signature for another nonce, and a
// member no longer in the server.

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, test } from "node:test";

import { secp256k1 } from "@noble/curves/secp256k1";
import { keccak_256 } from "@noble/hashes/sha3";
import { bytesToHex, hexToBytes } from "@noble/hashes/utils";

import { eventually, launch, ready, screenshot, simulator } from "../lib/harness.mjs";

let r;
let link;
before(async () => {
  r = await ready();
  link = r.wallet_link;
  assert.ok(link, "the ready file describes a member who can link a funded wallet");
});

/** EIP-191 personal_sign of the hex-encoded UTF-8 message, as a wallet does it. */
function personalSign(privateKey, messageHex) {
  const message = hexToBytes(messageHex.replace(/^0x/, ""));
  const prefix = new TextEncoder().encode(`\x19Ethereum Signed Message:\n${message.length}`);
  const hash = keccak_256(new Uint8Array([...prefix, ...message]));
  const signature = secp256k1.sign(hash, hexToBytes(privateKey.replace(/^0x/, "")));
  return "0x" + bytesToHex(signature.toCompactRawBytes()) + (27 + signature.recovery).toString(16);
}

function addressOf(privateKey) {
  const publicKey = secp256k1.getPublicKey(hexToBytes(privateKey.replace(/^0x/, "")), false).slice(1);
  return "0x" + bytesToHex(keccak_256(publicKey).slice(-20));
}

/**
 * A browser with an injected EIP-1193 wallet. `sign(messageHex)` runs in
 * Node (the key never enters the page); `refuse` makes the wallet decline.
 */
async function withWallet({ privateKey, refuse = false }) {
  const browser = await launch();
  const address = addressOf(privateKey);
  await browser.page.exposeFunction("__testWalletSign", (messageHex) => personalSign(privateKey, messageHex));
  await browser.page.addInitScript(
    ({ address, chainId, refuse }) => {
      window.ethereum = {
        isTestWallet: true,
        async request({ method, params }) {
          switch (method) {
            case "eth_requestAccounts":
            case "eth_accounts":
              return [address];
            case "eth_chainId":
              return "0x" + chainId.toString(16);
            case "personal_sign":
              if (refuse) throw Object.assign(new Error("User rejected the request."), { code: 4001 });
              return window.__testWalletSign(params[0]);
            default:
              throw Object.assign(new Error(`unsupported method ${method}`), { code: 4200 });
          }
        },
      };
    },
    { address, chainId: link.chain_id, refuse },
  );
  return { ...browser, address };
}

/** Runs /link-wallet for `user` in the simulator and returns the link from the reply. */
async function linkWalletCommand(guildId, userId) {
  const created = await fetch(`${r.sim_url}/_sim/interactions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ guild_id: guildId, user_id: userId, command_name: "link-wallet" }),
  });
  assert.equal(created.status, 201, "the simulator took the interaction");
  const { id } = await created.json();
  const reply = await eventually("the bot's reply to /link-wallet", 30_000, async () => {
    const info = await (await fetch(`${r.sim_url}/_sim/interactions/${id}`)).json();
    return info.responses?.map((x) => x.body?.data?.content ?? x.body?.content ?? "").find((c) => c.includes("/link/"));
  });
  const url = reply.match(/https?:\/\/\S+\/link\/[0-9a-f]{64}/)?.[0];
  assert.ok(url, `a link in the reply: ${reply}`);
  return url;
}

/** Clicks "Connect" and waits for the page to say how it ended. */
async function connect(page) {
  await page.click("#connect");
  await page.waitForSelector("body[data-done=true]", { timeout: 90_000 });
  return page.textContent("#status");
}

/** The member's wallets as the page lists them (after loading `url`). */
async function walletsShown(page, url) {
  await page.goto(url);
  return page.$$eval("#wallets code", (codes) => codes.map((c) => c.textContent));
}

test("a member links a wallet in the browser and the role appears in Discord", async () => {
  const browser = await withWallet({ privateKey: link.private_key });
  after(() => browser.close());
  const { page } = browser;
  const url = await linkWalletCommand(link.guild_id, link.user_id);
  assert.ok(url.startsWith(r.public_url), `the link is under the public address ${r.public_url}`);

  await page.goto(url);
  assert.match(await page.textContent("main"), /Link a wallet/);
  await screenshot(page, "link-page");
  const status = await connect(page);
  assert.match(status, new RegExp(`Linked ${browser.address}`, "i"));
  assert.match(status, new RegExp(`role ${link.role_id}`), `the page names the role now held: ${status}`);
  await screenshot(page, "link-linked");

  const sim = simulator(r);
  await eventually("the role in the simulator", 60_000, async () => {
    const members = await sim.members(link.guild_id);
    const member = members.find((m) => String(m.user_id) === String(link.user_id));
    return member?.roles.map(String).includes(String(link.role_id));
  });

  // The link is used up: the page says so, and nothing more can be linked.
  await page.goto(url);
  assert.match(await page.textContent("#status"), /was used/);
  assert.ok(await page.isDisabled("#connect"));
  const again = await fetch(`${url}/message`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ address: browser.address, chain_id: link.chain_id }),
  });
  assert.equal(again.status, 410);

  // Unlinking from the page takes the role away with it (no grace for what
  // a wallet that is gone earned).
  await page.click(`button.unlink[data-address="${browser.address.toLowerCase()}"]`);
  await page.waitForFunction(() => document.querySelector("#status")?.textContent.startsWith("Unlinked"));
  await screenshot(page, "link-unlinked");
  await eventually("the role to go in the simulator", 60_000, async () => {
    const members = await sim.members(link.guild_id);
    const member = members.find((m) => String(m.user_id) === String(link.user_id));
    return member && !member.roles.map(String).includes(String(link.role_id));
  });
  assert.deepEqual(
    browser.consoleErrors.filter((e) => /Content Security Policy|Refused to/.test(e)),
    [],
    "nothing was blocked by the Content-Security-Policy",
  );
});

test("refused links and proofs say why and store nothing", async () => {
  const other = link.other;
  assert.ok(other, "a second member without a wallet");
  const key = "0x" + "42".repeat(32);

  // A wallet that declines to sign.
  {
    const browser = await withWallet({ privateKey: key, refuse: true });
    after(() => browser.close());
    const url = await linkWalletCommand(other.guild_id, other.user_id);
    const before = await walletsShown(browser.page, url);
    assert.match(await connect(browser.page), /declined.*Nothing was linked/);
    assert.deepEqual(await walletsShown(browser.page, url), before);
  }

  // A message for another site, and a signature over an older message
  // (another nonce): the proof the page sends is swapped on its way.
  for (const [what, tamper, expected] of [
    ["another site", (m) => m.replace(/^(\S+) wants you/, "gatehouse.example.evil wants you"), /another site/],
    ["another nonce", null, /nonce/],
  ]) {
    const browser = await withWallet({ privateKey: key });
    after(() => browser.close());
    const { page } = browser;
    const url = await linkWalletCommand(other.guild_id, other.user_id);
    let older;
    if (!tamper) {
      const response = await fetch(`${url}/message`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ address: browser.address, chain_id: link.chain_id }),
      });
      older = (await response.json()).message;
    }
    await page.route("**/proof", async (route) => {
      const body = JSON.parse(route.request().postData());
      const message = tamper ? tamper(body.message) : older;
      const messageHex = "0x" + bytesToHex(new TextEncoder().encode(message));
      await route.continue({ postData: JSON.stringify({ message, signature: personalSign(key, messageHex) }) });
    });
    const before = await walletsShown(page, url);
    const status = await connect(page);
    assert.match(status, expected, `${what}: ${status}`);
    assert.match(status, /Nothing was linked/, what);
    await page.unroute("**/proof");
    assert.deepEqual(await walletsShown(page, url), before, `${what}: nothing stored`);
  }

  // An expired link.
  {
    const browser = await withWallet({ privateKey: key });
    after(() => browser.close());
    const url = await linkWalletCommand(other.guild_id, other.user_id);
    execFileSync("psql", [
      process.env.GATEHOUSE_DB_ADMIN_URL,
      "-qXc",
      "UPDATE wallet_link_tokens SET expires_at = now() - interval '1 second' WHERE used_at IS NULL",
    ]);
    const response = await browser.page.goto(url);
    assert.equal(response.status(), 410);
    assert.match(await browser.page.textContent("#error"), /expired/);
  }

  // A member who left the server.
  {
    const browser = await withWallet({ privateKey: key });
    after(() => browser.close());
    const url = await linkWalletCommand(other.guild_id, other.user_id);
    const removed = await fetch(`${r.sim_url}/_sim/guilds/${other.guild_id}/members/${other.user_id}`, { method: "DELETE" });
    assert.ok(removed.ok, "the simulator removed the member");
    await eventually("the page to refuse a member who left", 30_000, async () => {
      const response = await browser.page.goto(url);
      return response.status() === 403;
    });
    assert.match(await browser.page.textContent("#error"), /not a member/);
  }
});

// The wallet-link page: asks the browser wallet (EIP-1193) for an account,
// has it sign the Sign-In with Ethereum message the server issues, sends the
// signature back, then waits for the re-check and shows the roles.
// No dependencies, no inline code (the page's CSP forbids it).
"use strict";

(function () {
  const page = location.pathname.replace(/\/+$/, "");
  const button = document.getElementById("connect");
  const status = document.getElementById("status");

  function say(text, kind) {
    status.textContent = text;
    status.className = kind || "";
  }

  async function call(path, body) {
    const response = await fetch(page + path, {
      method: body === undefined ? "GET" : "POST",
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const message = (data.error && data.error.message) || "the server answered " + response.status;
      throw new Error(message);
    }
    return data;
  }

  // personal_sign takes the message as hex of its UTF-8 bytes.
  function hexOf(text) {
    return "0x" + Array.from(new TextEncoder().encode(text), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function walletError(e) {
    if (e && e.code === 4001) return "You declined in your wallet. Nothing was linked.";
    return "Your wallet said: " + ((e && e.message) || String(e)) + ". Nothing was linked.";
  }

  function renderRoles(roles) {
    const body = document.querySelector("#roles tbody");
    if (!body) return;
    const words = {
      held: "you hold this role",
      granting: "eligible: the role is on its way",
      not_eligible: "not eligible",
      undecided: "could not be decided just now",
      not_checked: "not checked yet",
    };
    body.replaceChildren(
      ...roles.map((r) => {
        const row = document.createElement("tr");
        row.dataset.state = r.state;
        const cells = ["Role " + r.role_id, r.rule, words[r.state] || r.state, r.detail];
        for (const text of cells) {
          const cell = document.createElement("td");
          cell.textContent = text;
          row.appendChild(cell);
        }
        return row;
      })
    );
  }

  function renderWallets(wallets) {
    const list = document.getElementById("wallets") || document.createElement("ul");
    list.id = "wallets";
    list.replaceChildren(
      ...wallets.map((w) => {
        const item = document.createElement("li");
        const code = document.createElement("code");
        code.textContent = w;
        const button = document.createElement("button");
        button.type = "button";
        button.className = "unlink";
        button.dataset.address = w;
        button.textContent = "Unlink";
        item.append(code, " ", button);
        return item;
      })
    );
    const none = document.getElementById("no-wallets");
    if (none) none.replaceWith(list);
  }

  // One listener for every Unlink button, present or rendered later.
  document.addEventListener("click", async (event) => {
    const button = event.target.closest && event.target.closest("button.unlink");
    if (!button) return;
    button.disabled = true;
    try {
      const left = await call("/unlink", { address: button.dataset.address });
      renderWallets(left.wallets);
      say("Unlinked " + button.dataset.address + ". Your roles are being checked again.", "ok");
    } catch (e) {
      say(e.message.endsWith(".") ? e.message : e.message + ".", "error");
      button.disabled = false;
    }
  });

  // Polls until the re-check the link asked for has run (or a minute has
  // passed: the roles then follow without the page).
  async function awaitCheck(linked) {
    const deadline = Date.now() + 60000;
    for (;;) {
      const state = await call("/status");
      renderWallets(state.wallets);
      renderRoles(state.roles);
      if (state.checked) {
        const held = state.roles.filter((r) => r.state === "held" || r.state === "granting");
        say(
          held.length
            ? linked + " You now hold " + held.map((r) => "role " + r.role_id).join(", ") + "."
            : linked + " No role's rule is met yet.",
          "ok"
        );
        document.body.dataset.done = "true";
        return;
      }
      if (Date.now() > deadline) {
        say(linked + " Your roles are still being checked; they will follow in Discord.", "ok");
        document.body.dataset.done = "true";
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
  }

  async function link() {
    const wallet = window.ethereum;
    if (!wallet || typeof wallet.request !== "function") {
      say(
        "No browser wallet found. Install one (MetaMask, Rabby, Coinbase Wallet…), or run " +
          "/link-wallet address:<your address> in Discord to sign the message elsewhere.",
        "error"
      );
      return;
    }
    button.disabled = true;
    let signed;
    try {
      say("Asking your wallet for an account…");
      const accounts = await wallet.request({ method: "eth_requestAccounts" });
      const address = accounts && accounts[0];
      if (!address) throw new Error("no account was shared");
      const chainHex = await wallet.request({ method: "eth_chainId" }).catch(() => null);
      const chainId = chainHex ? parseInt(chainHex, 16) : null;
      const issued = await call("/message", { address, chain_id: Number.isFinite(chainId) ? chainId : null });
      say("Sign the message in your wallet. Check that it names this site.");
      let signature;
      try {
        signature = await wallet.request({ method: "personal_sign", params: [hexOf(issued.message), address] });
      } catch (e) {
        throw new Error(walletError(e));
      }
      say("Checking the signature…");
      signed = await call("/proof", { message: issued.message, signature });
    } catch (e) {
      say(e.message.endsWith(".") ? e.message : e.message + ".", "error");
      document.body.dataset.done = "true";
      button.disabled = false;
      return;
    }
    const linked =
      "Linked " + signed.wallet + (signed.reclaimed ? " (it was linked to another account, which no longer has it)." : ".");
    say(linked + " Checking your roles…", "ok");
    await awaitCheck(linked).catch((e) => say(linked + " " + e.message, "ok"));
  }

  if (button) button.addEventListener("click", link);
})();

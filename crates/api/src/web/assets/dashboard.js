// Gatehouse dashboard: small progressive enhancements. Served from this
// origin (the Content-Security-Policy allows no inline script); every page
// works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Ask before destructive forms (delete a rule, a webhook).
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }

  // The rule form: picking a type fills in an example when the
  // parameters are empty or still another type's example.
  const type = document.getElementById("rule_type");
  const params = document.getElementById("parameters");
  if (type && params) {
    const examples = new Set(Array.from(type.options, (o) => o.dataset.example));
    type.addEventListener("change", () => {
      const current = params.value.trim();
      if (current === "" || examples.has(current)) {
        params.value = type.selectedOptions[0].dataset.example || "";
      }
    });
  }

  // Sync progress: poll the JSON status while work is outstanding.
  const sync = document.getElementById("sync");
  if (sync && sync.dataset.src) {
    const render = (status) => {
      for (const cell of sync.querySelectorAll("[data-field]")) {
        const value = status[cell.dataset.field];
        if (value !== undefined) cell.textContent = String(value);
      }
      const bar = document.getElementById("sync-progress");
      if (bar) bar.value = status.percent_done;
      const busy = document.getElementById("sync-busy");
      if (busy) busy.hidden = !status.busy;
      return status.busy;
    };
    const poll = async () => {
      try {
        const response = await fetch(sync.dataset.src, { credentials: "same-origin" });
        if (response.ok && render(await response.json())) setTimeout(poll, 2000);
      } catch (_) {
        setTimeout(poll, 5000);
      }
    };
    if (sync.dataset.busy === "true") setTimeout(poll, 2000);
  }
});

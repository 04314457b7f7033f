// repayd dashboard: the live attempt feed (EventSource) and the loan page's action buttons.
// Every value is put into the page with textContent, never as HTML.
"use strict";

(function () {
  const FEED_MAX_ROWS = 200;

  function two(n) { return String(n).padStart(2, "0"); }

  // Same format as the server's `when` filter: YYYY-MM-DD HH:MM:SS in UTC.
  function formatInstant(at) {
    const d = new Date(typeof at === "number" ? at : String(at));
    if (isNaN(d.getTime())) return String(at);
    return d.getUTCFullYear() + "-" + two(d.getUTCMonth() + 1) + "-" + two(d.getUTCDate()) +
      " " + two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds());
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    if (cls) td.className = cls;
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  function attemptRow(a) {
    const tr = document.createElement("tr");
    tr.dataset.id = String(a.id);
    tr.className = "fresh";
    tr.appendChild(cell(formatInstant(a.at), "t"));
    const loan = document.createElement("td");
    loan.className = "loan";
    const link = document.createElement("a");
    link.href = "/loans/" + encodeURIComponent(a.loan_id);
    link.textContent = a.loan_id;
    loan.appendChild(link);
    loan.appendChild(document.createTextNode(" #" + a.seq));
    tr.appendChild(loan);
    tr.appendChild(cell(a.account, "acct"));
    tr.appendChild(cell(a.kind));
    tr.appendChild(cell(a.ladder_step, "num"));
    tr.appendChild(cell(a.amount, "num"));
    const outcome = document.createElement("td");
    const pill = document.createElement("span");
    pill.className = "pill st-" + String(a.status).replace(/[^a-z_]/gi, "");
    pill.textContent = a.status;
    outcome.appendChild(pill);
    tr.appendChild(outcome);
    tr.appendChild(cell(a.code, "code"));
    return tr;
  }

  function startFeed(section) {
    const rows = document.getElementById("feed-rows");
    const empty = document.getElementById("feed-empty");
    const status = document.getElementById("feed-status");
    const setStatus = (state, text) => { status.dataset.state = state; status.textContent = text; };
    const source = new EventSource(section.dataset.stream, { withCredentials: true });
    source.addEventListener("open", () => setStatus("live", "live"));
    source.addEventListener("error", () => setStatus("down", "reconnecting…"));
    source.addEventListener("attempt", (ev) => {
      let a;
      try { a = JSON.parse(ev.data); } catch (_) { return; }
      // An attempt is sent again when its outcome changes: replace its row, newest on top.
      const old = rows.querySelector('tr[data-id="' + CSS.escape(String(a.id)) + '"]');
      if (old) old.remove();
      rows.insertBefore(attemptRow(a), rows.firstChild);
      while (rows.children.length > FEED_MAX_ROWS) rows.lastElementChild.remove();
      if (empty) empty.hidden = true;
    });
  }

  function idempotencyKey() {
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
  }

  function startActions(section) {
    const loan = section.dataset.loan;
    const error = document.getElementById("action-error");
    section.querySelectorAll("form.api-action").forEach((form) => {
      form.addEventListener("submit", async (ev) => {
        ev.preventDefault();
        if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) return;
        const button = form.querySelector("button[type=submit]");
        const body = {};
        new FormData(form).forEach((v, k) => { body[k] = String(v).trim(); });
        error.hidden = true;
        button.disabled = true;
        try {
          const url = form.dataset.url ||
            "/api/v1/loans/" + encodeURIComponent(loan) + "/" + form.dataset.action;
          const resp = await fetch(url, {
            method: "POST",
            credentials: "same-origin",
            headers: { "Content-Type": "application/json", "Idempotency-Key": idempotencyKey() },
            body: JSON.stringify(body),
          });
          if (resp.ok) { window.location.reload(); return; }
          let msg = resp.status + " " + resp.statusText;
          try {
            const j = await resp.json();
            msg = j.message || j.error || msg;
          } catch (_) { /* not JSON */ }
          error.textContent = msg;
          error.hidden = false;
        } catch (e) {
          error.textContent = "The request failed: " + e;
          error.hidden = false;
        } finally {
          button.disabled = false;
        }
      });
    });
  }

  // The tiles, charts and re-binding list stay live: every few seconds the page is fetched
  // again and those sections are swapped for the fresh ones (as parsed nodes, never HTML
  // strings). Skipped while the tab is hidden.
  const LIVE_MS = 5000;
  const LIVE_SECTIONS = ["tiles", "buckets", "rates", "trends", "rebind"];

  function startLive() {
    setInterval(async () => {
      if (document.hidden) return;
      try {
        const resp = await fetch(window.location.href, { credentials: "same-origin" });
        if (!resp.ok) return;
        const fresh = new DOMParser().parseFromString(await resp.text(), "text/html");
        for (const id of LIVE_SECTIONS) {
          const now = document.getElementById(id);
          const next = fresh.getElementById(id);
          if (now && next) now.replaceWith(document.importNode(next, true));
        }
        document.body.dataset.liveAt = String(Date.now());
      } catch (_) { /* the next tick tries again */ }
    }, LIVE_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const feed = document.getElementById("feed");
    if (feed && window.EventSource) startFeed(feed);
    if (document.getElementById("tiles")) startLive();
    const actions = document.getElementById("actions");
    if (actions) startActions(actions);
  });
})();

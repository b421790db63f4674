// The console's only script: live fragments, field groups per type, copy buttons, confirms.
"use strict";

function showGroup(select) {
  const group = select.dataset.switch;
  const form = select.form || document;
  for (const el of form.querySelectorAll('[data-group="' + group + '"]')) {
    const on = el.dataset.for === select.value;
    el.hidden = !on;
  }
}

function live(el) {
  const every = Number(el.dataset.interval || 5000);
  async function tick() {
    if (el.querySelector("[data-final]")) return;
    if (!document.hidden) {
      try {
        const response = await fetch(el.dataset.live, { credentials: "same-origin" });
        if (response.status === 401) { window.location.reload(); return; }
        if (response.ok) {
          const html = await response.text();
          // Keep focus and open <details> across a refresh.
          const focused = document.activeElement && el.contains(document.activeElement)
            ? document.activeElement.id : null;
          const open = new Set([...el.querySelectorAll("details[open] > summary")].map((s) => s.textContent + s.closest("[data-step]")?.dataset.step));
          el.innerHTML = html;
          for (const s of el.querySelectorAll("details > summary")) {
            if (open.has(s.textContent + s.closest("[data-step]")?.dataset.step)) s.parentElement.open = true;
          }
          if (focused) document.getElementById(focused)?.focus();
        }
      } catch (e) { /* offline for a moment: try again next tick */ }
    }
    setTimeout(tick, every);
  }
  setTimeout(tick, every);
}

document.addEventListener("DOMContentLoaded", () => {
  for (const select of document.querySelectorAll("select[data-switch]")) {
    showGroup(select);
    select.addEventListener("change", () => showGroup(select));
  }
  for (const el of document.querySelectorAll("[data-live]")) live(el);
  for (const button of document.querySelectorAll("[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = document.getElementById(button.dataset.copy);
      try { await navigator.clipboard.writeText(source.value); }
      catch (e) { source.select(); document.execCommand("copy"); }
      const note = button.closest("section, div.notice")?.querySelector("[data-copied]");
      if (note) note.hidden = false;
    });
  }
  // An invitation link: its token is in the fragment, which no server sees; into the
  // field, then out of the address bar.
  const invite = document.getElementById("f-invite_token");
  if (invite && window.location.hash.length > 1) {
    invite.value = decodeURIComponent(window.location.hash.slice(1));
    history.replaceState(null, "", window.location.pathname);
  }
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
});

// Kiosk pages: the on-screen keypad, the idle countdown that clears the screen and the session, and no way out.
"use strict";
(function () {
  const body = document.body;
  const idle = Number(body.dataset.idle || 90);
  let left = idle;
  const shown = document.getElementById("idle-s");

  // -- the keypad writes into the chosen field (the folio first, then the PIN when the folio is full) --------
  const fields = Array.from(document.querySelectorAll("input[data-max]"));
  let target = fields[0] || null;
  function choose(input) {
    fields.forEach((f) => f.classList.toggle("target", f === input));
    target = input;
  }
  fields.forEach((f) => {
    f.addEventListener("focus", () => choose(f));
    f.addEventListener("input", () => { f.value = f.value.replace(/\D/g, "").slice(0, Number(f.dataset.max)); });
  });
  if (target) choose(target);
  document.querySelectorAll(".keypad .key").forEach((key) => {
    key.addEventListener("click", () => {
      if (!target) return;
      const k = key.dataset.key;
      const max = Number(target.dataset.max);
      if (k === "borrar") target.value = target.value.slice(0, -1);
      else if (k === "limpiar") target.value = "";
      else if (target.value.length < max) target.value += k;
      if (target.value.length >= max && k !== "borrar" && k !== "limpiar") {
        const next = fields[fields.indexOf(target) + 1];
        if (next) choose(next);
      }
    });
  });

  // -- printing the receipt ------------------------------------------------------------------------------
  const printer = document.getElementById("imprimir");
  if (printer) printer.addEventListener("click", () => window.print());

  // -- idle: every touch restarts the countdown; at zero the session and the screen are cleared -------------
  function touched() { left = idle; if (shown) shown.textContent = String(left); }
  ["pointerdown", "keydown", "touchstart", "input"].forEach((ev) => document.addEventListener(ev, touched, true));
  function clearAll() {
    fields.forEach((f) => { f.value = ""; });
    const home = body.dataset.home === "1";
    fetch("/kiosco/salir", { method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": body.dataset.csrf || "", "X-Requested-With": "kiosk-idle" } })
      .catch(() => null)
      .finally(() => { window.location.replace(home ? "/kiosco" : "/kiosco?fin=1"); });
  }
  setInterval(() => {
    left -= 1;
    if (shown) shown.textContent = String(Math.max(left, 0));
    if (left === 0) clearAll();
  }, 1000);

  // -- no way out: no context menu, no drag of links, the back button stays on the kiosk ---------------------
  document.addEventListener("contextmenu", (e) => e.preventDefault());
  document.addEventListener("dragstart", (e) => e.preventDefault());
  history.pushState(null, "", location.href);
  window.addEventListener("popstate", () => history.pushState(null, "", location.href));
  document.addEventListener("click", (e) => {
    const a = e.target.closest && e.target.closest("a[href]");
    if (a && !a.getAttribute("href").startsWith("/kiosco")) e.preventDefault();
  });
})();

// Live view: re-read /api/ops/live every 5 s and update the figures in place (no library, no inline script).
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) { return; }
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }
  function refresh() {
    fetch(box.getAttribute("data-source"), {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data) { return; }
        text("live-calls", data.calls.length);
        text("live-queue", data.queue_waiting);
        text("live-wait", data.longest_wait_s === null ? "—" : Math.round(data.longest_wait_s) + " s");
        var list = document.getElementById("live-workers");
        list.textContent = "";
        var names = Object.keys(data.per_worker);
        if (!names.length) { var li = document.createElement("li"); li.textContent = "Sin llamadas en curso."; list.appendChild(li); }
        names.forEach(function (w) {
          var item = document.createElement("li");
          item.textContent = w + ": " + data.per_worker[w];
          list.appendChild(item);
        });
        box.setAttribute("data-updated", new Date().toISOString());
      })
      .catch(function () { /* the next tick retries */ });
  }
  setInterval(refresh, 5000);
  refresh();
}());

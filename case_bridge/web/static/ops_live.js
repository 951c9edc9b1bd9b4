// Live view: re-read /api/ops/live every 5 s and update the figures in place (no library, no inline script).
(function () {
  "use strict";
  var box = document.getElementById("live");
  if (!box) { return; }
  function text(id, value) { var el = document.getElementById(id); if (el) { el.textContent = value; } }
  // the node's processes up or down (from the supervisor; null when it stopped reporting)
  function processes(node) {
    var body = document.querySelector("#node-processes tbody");
    if (!body) { return; }
    body.textContent = "";
    if (!node) {
      text("node-summary", "Sin noticias del supervisor del nodo: estado desconocido.");
      return;
    }
    text("node-summary", node.down ? node.down + " proceso(s) caído(s) en " + node.node + "."
                                   : "Todos los procesos de " + node.node + " están arriba.");
    node.processes.forEach(function (p) {
      var row = document.createElement("tr");
      row.setAttribute("data-process", p.name);
      row.setAttribute("data-up", p.up ? "1" : "0");
      [p.name, p.up ? "Arriba" : "Caído", String(p.restarts)].forEach(function (value, i) {
        var cell = document.createElement("td");
        cell.textContent = value;
        if (i === 1) { cell.className = p.up ? "up" : "down"; }
        row.appendChild(cell);
      });
      body.appendChild(row);
    });
  }
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
        processes(data.node);
        box.setAttribute("data-updated", new Date().toISOString());
      })
      .catch(function () { /* the next tick retries */ });
  }
  setInterval(refresh, 5000);
  refresh();
}());

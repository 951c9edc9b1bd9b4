// Agent console: queue of escalated calls, taking one, its live transcript (websocket), notes and closing.
// Plain JS, no build step. Every value from the server is written with textContent (never as HTML).
(function () {
  "use strict";
  var root = document.getElementById("agent-console");
  if (!root) { return; }
  var CSRF = root.getAttribute("data-csrf");
  var ME = root.getAttribute("data-agent");
  var QUEUE_POLL_MS = 2000;
  var current = null;          // {id, version, lastTurn, socket, closed}
  var queueFetchedAt = 0;
  var queueItems = [];
  var callBackAllowed = false;  // outbound calls on and this agent has a phone of their own (escalation.agent_uris)
  var CALLBACK_POLL_MS = 2000;  // the taken call's callbacks (an agent's call back: ringing, answered, busy ...)

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, attrs[k]); });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function showError(message) {
    var box = document.getElementById("console-error");
    box.textContent = message || "";
    box.hidden = !message;
  }

  function api(method, path, body) {
    var opts = { method: method, credentials: "same-origin", headers: { "Accept": "application/json" } };
    if (method !== "GET") {
      opts.headers["X-CSRF-Token"] = CSRF;
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body || {});
    }
    return fetch(path, opts).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (data) {
        if (!resp.ok) {
          var msg = (Array.isArray(data) && data[0] && data[0].description) || ("Error " + resp.status);
          if (resp.status === 401) { window.location.href = "/staff/login?next=/agente"; }
          throw new Error(msg);
        }
        return data;
      });
    });
  }

  function mmss(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    var m = Math.floor(s / 60);
    return m + ":" + String(s % 60).padStart(2, "0");
  }

  // ---- queue ----------------------------------------------------------------------------------------------------
  function renderQueue() {
    var body = document.getElementById("queue-rows");
    body.textContent = "";
    if (!queueItems.length) {
      var row = el("tr", { "class": "empty" });
      row.appendChild(el("td", { colspan: "6" }, "No hay llamadas en espera."));
      body.appendChild(row);
      return;
    }
    var elapsed = (Date.now() - queueFetchedAt) / 1000;
    queueItems.forEach(function (item) {
      var row = el("tr", { "data-escalation": String(item.id), "data-call": item.call_id });
      row.appendChild(el("td", { "class": "folio" }, item.folio || "(sin caso)"));
      row.appendChild(el("td", {}, item.caller_masked));
      row.appendChild(el("td", {}, item.reason_label));
      row.appendChild(el("td", { "class": "state" }, item.state_label));
      var waiting = item.taken_by ? item.waiting_s : item.waiting_s + elapsed;
      row.appendChild(el("td", { "class": "waiting" }, mmss(waiting)));
      var cell = el("td");
      if (callBackAllowed && item.state === "callback" && item.folio && (!item.taken_by || item.taken_by === ME)) {
        var back = el("button", { type: "button", "class": "call-back" }, "Llamar de vuelta");
        back.addEventListener("click", function () { callBack(item.id, back); });
        cell.appendChild(back);
      }
      if (!item.taken_by) {
        var take = el("button", { type: "button", "class": "take" }, "Tomar");
        take.addEventListener("click", function () { takeCall(item.id); });
        cell.appendChild(take);
      } else if (item.taken_by === ME) {
        var open = el("button", { type: "button", "class": "secondary open" }, "Abrir");
        open.addEventListener("click", function () { openCall(item.id); });
        cell.appendChild(open);
      } else {
        cell.appendChild(el("span", { "class": "small" }, "Atiende " + item.taken_by));
      }
      row.appendChild(cell);
      body.appendChild(row);
    });
  }

  function refreshQueue() {
    return api("GET", "/api/agente/cola").then(function (data) {
      queueItems = data.items;
      callBackAllowed = !!data.call_back;
      queueFetchedAt = Date.now();
      queueItems.forEach(function (item) {
        if (current && item.id === current.id) {
          document.getElementById("case-call-state").textContent = item.state_label;
        }
      });
      renderQueue();
    }).catch(function (err) { showError(err.message); });
  }

  // ---- the taken call -------------------------------------------------------------------------------------------
  function field(list, label, value) {
    if (value === null || value === undefined || value === "") { return; }
    list.appendChild(el("dt", {}, label));
    list.appendChild(el("dd", {}, value));
  }

  function renderCase(data) {
    var pane = document.getElementById("case-pane");
    var summary = document.getElementById("case-summary");
    summary.textContent = "";
    var dl = el("dl", { id: "case-fields" });
    var c = data.case;
    field(dl, "Folio", c ? c.folio : "(la llamada no tiene caso)");
    if (c) {
      field(dl, "Trámite", c.tramite);
      field(dl, "Estado", c.status_label);
      field(dl, "Ciudadano", c.citizen_name);
      field(dl, "CURP", c.citizen_curp);
      field(dl, "Teléfono del caso", c.citizen_phone);
      field(dl, "Faltan", c.missing.join(", "));
      field(dl, "Cita", c.appointment);
    }
    field(dl, "Llamante", data.item.caller_masked);
    field(dl, "Motivo", data.item.reason_label);
    field(dl, "Devolver llamada a", data.callback_phone);
    summary.appendChild(dl);
    summary.setAttribute("data-folio", c ? c.folio : "");
    summary.setAttribute("data-call", data.item.call_id);
    document.getElementById("case-call-state").textContent = data.item.state_label;
    var list = document.getElementById("transcript");
    list.textContent = "";
    current.lastTurn = 0;
    data.transcript.forEach(function (t) { addTurn(t, false); });
    var notes = document.getElementById("notes");
    notes.textContent = "";
    data.notes.forEach(addNote);
    current.version = c ? c.version : null;
    renderCallbacks(data.callbacks || []);
    prefillCallback();
    document.getElementById("callback-form").hidden = !(c && data.outbound_enabled);
    document.getElementById("call-back-box").hidden = !data.call_back;
    setLive(data.call_live);
    pane.hidden = false;
  }

  // ---- callbacks of the case: state and attempts, and the agent's own "call the citizen back" ----------------
  function renderCallbacks(rows) {
    var list = document.getElementById("callbacks");
    list.textContent = "";
    if (!rows.length) { list.appendChild(el("li", { "class": "empty" }, "No hay llamadas programadas.")); }
    rows.forEach(function (r) {
      var text = r.state_label + (r.detail ? " (" + r.detail + ")" : "") + " · " + r.reason_label +
        (r.requested_by ? " · " + r.requested_by : "") + (r.note ? ": " + r.note : "") +
        (r.number ? " · " + r.number : "") + " · intentos " + r.attempts +
        (r.outcome ? " · último: " + r.last_outcome : "") +
        (r.next_attempt ? " · próximo " + r.next_attempt : "") + (r.window_end ? " · hasta " + r.window_end : "");
      var li = el("li", { "data-callback": String(r.id), "data-state": r.state, "data-reason": r.reason }, text);
      if (r.reason === "agent_return" && r.requested_by === ME) {     // the agent's own call back: retry, cancel
        if (r.state === "failed") {
          var retry = el("button", { type: "button", "class": "retry" }, "Reintentar");
          retry.addEventListener("click", function () { jobAction(r.id, "reintentar", retry); });
          li.appendChild(retry);
        }
        if (r.state === "failed" || r.state === "pending") {
          var cancel = el("button", { type: "button", "class": "secondary cancel" }, "Cancelar");
          cancel.addEventListener("click", function () { jobAction(r.id, "cancelar", cancel); });
          li.appendChild(cancel);
        }
      }
      list.appendChild(li);
    });
  }

  function refreshCallbacks() {
    if (!current) { return; }
    var id = current.id;
    api("GET", "/api/agente/llamadas/" + id).then(function (data) {
      if (current && current.id === id) { renderCallbacks(data.callbacks || []); }
    }).catch(function () { /* the next tick tries again; closing the item hides the pane */ });
  }

  function jobAction(jobId, action, button) {
    showError("");
    button.disabled = true;
    api("POST", "/api/agente/devoluciones/" + jobId + "/" + action).then(refreshCallbacks)
      .catch(function (err) { showError(err.message); button.disabled = false; });
  }

  function callBack(id, button) {     // "Llamar de vuelta": the node calls the citizen, then passes them to me
    showError("");
    if (button) { button.disabled = true; }
    api("POST", "/api/agente/llamadas/" + id + "/llamar-de-vuelta").then(function (data) {
      if (button) { button.disabled = false; }                        // a second click returns the same call
      if (current && current.id === id) { renderCallbacks(data.callbacks || []); refreshQueue(); }
      else { startCall(id, data); }
    }).catch(function (err) { showError(err.message); if (button) { button.disabled = false; } refreshQueue(); });
  }

  function pad(n) { return String(n).padStart(2, "0"); }

  function prefillCallback() {           // "now, for the next two hours": one click calls back soon
    var now = new Date();
    var later = new Date(now.getTime() + 2 * 3600 * 1000);
    if (later.getDate() !== now.getDate()) { later = new Date(now); later.setHours(0, 0, 0, 0); }
    document.getElementById("cb-day").value = now.getFullYear() + "-" + pad(now.getMonth() + 1) + "-" + pad(now.getDate());
    document.getElementById("cb-from").value = pad(now.getHours()) + ":" + pad(now.getMinutes());
    document.getElementById("cb-to").value = pad(later.getHours()) + ":" + pad(later.getMinutes());
  }

  function addTurn(turn, live) {
    if (!current || turn.id <= current.lastTurn) { return; }      // a reconnect may resend the last ones
    current.lastTurn = turn.id;
    var item = el("li", { "class": "turn " + turn.speaker + (live ? " live" : ""), "data-turn": String(turn.id) });
    item.appendChild(el("span", { "class": "speaker" }, turn.speaker_label + ": "));
    item.appendChild(el("span", { "class": "text" }, turn.text));
    var list = document.getElementById("transcript");
    list.appendChild(item);
    list.scrollTop = list.scrollHeight;                                // follow the conversation
  }

  function addNote(note) {
    document.getElementById("notes").appendChild(el("li", { "data-note": String(note.id) },
      note.author + ": " + note.text));
  }

  function setLive(live) {
    document.getElementById("live-badge").hidden = !live;
  }

  function connect() {
    if (!current || current.closed) { return; }
    var id = current.id;
    var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
    var socket = new WebSocket(scheme + window.location.host + "/api/agente/llamadas/" + id + "/ws?after=" +
                               current.lastTurn);
    current.socket = socket;
    socket.onmessage = function (event) {
      var msg = JSON.parse(event.data);
      if (!current || current.id !== id) { return; }
      if (msg.type === "turn") { addTurn(msg, true); }
      else if (msg.type === "call") { setLive(msg.live); }
      else if (msg.type === "closed") { current.closed = true; }
    };
    socket.onclose = function () {
      if (current && current.id === id && !current.closed && current.socket === socket) {
        window.setTimeout(connect, 1500);                              // reconnect; ?after= avoids duplicates
      }
    };
  }

  function startCall(id, data) {
    if (current && current.socket) { current.closed = true; current.socket.close(); }
    current = { id: id, version: null, lastTurn: 0, socket: null, closed: false };
    renderCase(data);
    connect();
    refreshQueue();
  }

  function takeCall(id) {
    showError("");
    api("POST", "/api/agente/llamadas/" + id + "/tomar").then(function (data) { startCall(id, data); })
      .catch(function (err) { showError(err.message); refreshQueue(); });
  }

  function openCall(id) {
    showError("");
    api("GET", "/api/agente/llamadas/" + id).then(function (data) { startCall(id, data); })
      .catch(function (err) { showError(err.message); });
  }

  document.getElementById("note-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!current) { return; }
    var box = document.getElementById("note-text");
    api("POST", "/api/agente/llamadas/" + current.id + "/notas", { text: box.value }).then(function (note) {
      addNote(note);
      box.value = "";
    }).catch(function (err) { showError(err.message); });
  });

  document.getElementById("callback-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!current) { return; }
    showError("");
    var id = current.id;
    var body = { day: document.getElementById("cb-day").value, from: document.getElementById("cb-from").value,
                 to: document.getElementById("cb-to").value, note: document.getElementById("cb-note").value };
    api("POST", "/api/agente/llamadas/" + id + "/devolver", body).then(function () {
      return api("GET", "/api/agente/llamadas/" + id);
    }).then(function (data) {
      if (current && current.id === id) { renderCallbacks(data.callbacks || []); }
      document.getElementById("cb-note").value = "";
    }).catch(function (err) { showError(err.message); });
  });

  document.getElementById("call-back-now").addEventListener("click", function () {
    if (current) { callBack(current.id, document.getElementById("call-back-now")); }
  });

  document.getElementById("close-form").addEventListener("submit", function (event) {
    event.preventDefault();
    if (!current) { return; }
    var body = { disposition: document.getElementById("disposition").value,
                 status: document.getElementById("case-status").value || null,
                 note: document.getElementById("status-note").value,
                 version: current.version };
    api("POST", "/api/agente/llamadas/" + current.id + "/cerrar", body).then(function () {
      current.closed = true;
      if (current.socket) { current.socket.close(); }
      current = null;
      document.getElementById("case-pane").hidden = true;
      refreshQueue();
    }).catch(function (err) { showError(err.message); });
  });

  refreshQueue();
  window.setInterval(refreshQueue, QUEUE_POLL_MS);
  window.setInterval(renderQueue, 1000);                            // waiting times tick between polls
  window.setInterval(refreshCallbacks, CALLBACK_POLL_MS);
})();

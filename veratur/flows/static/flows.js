// Flow administration pages: YAML highlighting over a textarea, pending edits kept in this tab
// (sessionStorage) until applied, validate / diff / apply / rollback / try through the JSON API, job polling.
(function () {
  "use strict";
  const prefix = document.body.dataset.prefix;
  const api = document.body.dataset.api;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const DRAFTS = "veratur-flows-drafts";
  const $ = (id) => document.getElementById(id);

  function drafts() { try { return JSON.parse(sessionStorage.getItem(DRAFTS) || "{}"); } catch (e) { return {}; } }
  function saveDrafts(d) { sessionStorage.setItem(DRAFTS, JSON.stringify(d)); renderPending(); }
  function editsList() { const d = drafts(); return Object.keys(d).map((p) => ({ path: p, text: d[p].text, base: d[p].base })); }

  async function post(path, body) {
    const resp = await fetch(api + path, { method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf }, body: JSON.stringify(body) });
    let data; const raw = await resp.text();
    try { data = JSON.parse(raw); } catch (e) { data = { error: raw || resp.statusText }; }
    if (Array.isArray(data)) data = { error: (data[0] && data[0].description) || resp.statusText };  // web app error body
    data._status = resp.status;
    return data;
  }

  function esc(s) { return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;"); }

  // One YAML line to highlighted HTML: comment, "- " dash, key:, quoted strings, numbers/booleans.
  function highlightLine(line) {
    let out = "", rest = line;
    const m = rest.match(/^(\s*)(- )?/);
    out += m[1]; rest = rest.slice(m[1].length);
    if (m[2]) { out += '<span class="d">- </span>'; rest = rest.slice(2); }
    if (/^#/.test(rest)) return out + '<span class="c">' + esc(rest) + "</span>";
    const key = rest.match(/^([^\s:#"'{}\[\]][^:#{}\[\]"']*?|"[^"]*"|'[^']*'):(\s|$)/);  // not inside {..} or [..]
    if (key) { out += '<span class="k">' + esc(key[1]) + "</span>:"; rest = rest.slice(key[1].length + 1); }
    const comment = rest.search(/\s#/);
    let tail = "";
    if (comment >= 0 && !/["']/.test(rest.slice(0, comment))) { tail = rest.slice(comment); rest = rest.slice(0, comment); }
    let body = esc(rest).replace(/("[^"]*"|'[^']*')/g, '<span class="s">$1</span>');
    if (/^\s*(-?\d+(\.\d+)?|true|false|null)\s*$/.test(rest)) body = '<span class="n">' + esc(rest) + "</span>";
    return out + body + (tail ? '<span class="c">' + esc(tail) + "</span>" : "");
  }

  let badLines = new Set();
  function renderEditor() {
    const src = $("source"); if (!src) return;
    const lines = src.value.split("\n");
    $("highlight").innerHTML = lines.map((l, i) => {
      const h = highlightLine(l);
      return badLines.has(i + 1) ? '<span class="bad">' + (h || " ") + "</span>" : h;
    }).join("\n") + "\n";
    $("gutter").innerHTML = lines.map((_, i) => badLines.has(i + 1) ? '<span class="bad">' + (i + 1) + "</span>" : String(i + 1)).join("\n") + "\n";
    syncScroll();
  }
  function syncScroll() {
    const src = $("source");
    $("highlight").scrollTop = src.scrollTop; $("highlight").scrollLeft = src.scrollLeft;
    $("gutter").scrollTop = src.scrollTop;
  }

  function renderPending() {
    const list = $("pending-list"); if (!list) return;
    const d = drafts(); const paths = Object.keys(d);
    list.innerHTML = paths.length ? paths.map((p) => '<li><a href="' + prefix + "/edit?path=" + encodeURIComponent(p) + '">' + esc(p) + "</a></li>").join("") : "<li>ninguno</li>";
    if ($("pending")) $("pending").hidden = !paths.length;
  }

  function showProblems(problems, error) {
    const box = $("problems"); if (!box) return;
    const path = $("file-path") ? $("file-path").dataset.path : "";
    badLines = new Set(problems.filter((p) => p.file === path && p.line && p.severity === "error").map((p) => p.line));
    if (error) { box.innerHTML = '<p class="error">' + esc(error) + "</p>"; renderEditor(); return; }
    if (!problems.length) { box.innerHTML = '<p class="ok">Sin errores.</p>'; renderEditor(); return; }
    box.innerHTML = "<ul>" + problems.map((p) => '<li class="' + p.severity + '" data-line="' + (p.file === path ? (p.line || "") : "") + '">' + esc(p.text) + "</li>").join("") + "</ul>";
    box.querySelectorAll("li[data-line]").forEach((li) => li.addEventListener("click", () => goToLine(+li.dataset.line)));
    renderEditor();
  }
  function goToLine(n) {
    if (!n) return; const src = $("source"); const lines = src.value.split("\n");
    const pos = lines.slice(0, n - 1).reduce((a, l) => a + l.length + 1, 0);
    src.focus(); src.setSelectionRange(pos, pos + (lines[n - 1] || "").length);
    src.scrollTop = Math.max(0, (n - 5) * 18.85); syncScroll();
  }

  function showDiff(text) {
    const el = $("diff"); el.hidden = false;
    el.innerHTML = text ? text.split("\n").map((l) => /^\+[^+]/.test(l) ? '<span class="add">' + esc(l) + "</span>" : /^-[^-]/.test(l) ? '<span class="del">' + esc(l) + "</span>" : esc(l)).join("\n") : "(sin diferencias)";
  }

  async function pollJob(id, onDone) {
    $("job").hidden = false;
    for (;;) {
      const resp = await fetch(api + "/jobs/" + id, { credentials: "same-origin" });
      const job = await resp.json();
      $("job-log").innerHTML = job.log.map((e) => "<li>[" + e.t + " s] " + esc(e.stage) + ": " + esc(e.message) + "</li>").join("");
      const state = $("job-state"); state.className = job.state;
      state.textContent = job.state === "running" ? "en curso…" : job.state + (job.error ? ": " + job.error : "");
      if (job.state !== "running") { if (job.problems && job.problems.length) showProblems(job.problems); onDone(job); return; }
      await new Promise((r) => setTimeout(r, 1000));
    }
  }

  function initEditor() {
    const src = $("source"); if (!src) return;
    const head = $("file-path"); const path = head.dataset.path; const base = head.dataset.base;
    const original = src.value;
    const d = drafts();
    if (d[path]) {
      if (d[path].base === base) src.value = d[path].text;
      else { delete d[path]; saveDrafts(d); }  // the live file moved on; the stale draft is dropped (apply would refuse it)
    }
    src.addEventListener("input", () => {
      const all = drafts();
      if (src.value === original) delete all[path]; else all[path] = { text: src.value, base: base };
      saveDrafts(all); renderEditor();
    });
    src.addEventListener("scroll", syncScroll);
    src.addEventListener("keydown", (ev) => { if (ev.key === "Tab") { ev.preventDefault(); document.execCommand("insertText", false, "  "); } });
    const currentEdits = () => { const e = editsList(); return e.length ? e : [{ path: path, text: src.value, base: base }]; };
    $("btn-validate").addEventListener("click", async () => {
      $("problems").textContent = "validando…";
      const r = await post("/validate", { edits: currentEdits() });
      showProblems(r.problems || [], r.error);
    });
    $("btn-diff").addEventListener("click", async () => { const r = await post("/diff", { edits: currentEdits() }); showDiff(r.diff || r.error || ""); });
    $("btn-discard").addEventListener("click", () => { const all = drafts(); delete all[path]; saveDrafts(all); src.value = original; badLines = new Set(); renderEditor(); });
    $("btn-apply").addEventListener("click", async () => {
      const edits = editsList();
      if (!edits.length) { showProblems([], "no hay cambios pendientes"); return; }
      const r = await post("/apply", { edits: edits, message: $("message").value });
      if (r._status !== 202) { showProblems([], r.error); return; }
      pollJob(r.job, (job) => { if (job.state === "done") { sessionStorage.removeItem(DRAFTS); renderPending(); head.dataset.applied = String(job.result.revision); } });
    });
    let chatTarget = "live"; const sender = "admin-chat-" + Math.random().toString(36).slice(2, 10);
    $("btn-try").addEventListener("click", async () => {
      const r = await post("/try", { edits: currentEdits() });
      if (r._status !== 202) { showProblems([], r.error); return; }
      pollJob(r.job, (job) => { if (job.state === "done") { chatTarget = job.result.target; $("chat-target").textContent = "charla con: " + (chatTarget === "live" ? "en vivo" : "candidato " + job.result.model); } });
    });
    $("chat-form").addEventListener("submit", async (ev) => {
      ev.preventDefault(); const text = $("chat-input").value.trim(); if (!text) return;
      $("chat-input").value = "";
      const log = $("chat-log"); log.innerHTML += '<div class="me">» ' + esc(text) + "</div>";
      const r = await post("/chat", { message: text, sender: sender, target: chatTarget });
      log.innerHTML += (r.replies || [r.error || "(sin respuesta)"]).map((t) => '<div class="bot">' + esc(t) + "</div>").join("");
      log.scrollTop = log.scrollHeight;
    });
    renderEditor();
  }

  function initIndex() {
    document.querySelectorAll("button.rollback").forEach((b) => b.addEventListener("click", async () => {
      if (!confirm("¿Volver a la revisión " + b.dataset.rev + "?")) return;
      const r = await post("/rollback", { revision: +b.dataset.rev });
      if (r._status !== 202) { alert(r.error); return; }
      pollJob(r.job, () => {});
    }));
  }

  renderPending(); initEditor(); initIndex();
})();

// swarm web board: plain DOM, no framework. Every value from the server goes in as text, never as HTML.
"use strict";

const STATES = ["open", "assigned", "running", "blocked", "done", "failed", "cancelled"];
const TERMINAL = new Set(["done", "failed", "cancelled"]);
const TOKEN = "swarm-token";
const $ = (sel, root = document) => root.querySelector(sel);
let skew = 0; // server clock minus ours, so lease countdowns agree with the board
let view = "board";
let taskId = null;
const board = { filters: {}, offset: 0, limit: 50, total: 0 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

// --- talking to the server ------------------------------------------------------------------------
function token() { return sessionStorage.getItem(TOKEN) || ""; }
function authHeaders() { return token() ? { Authorization: "Bearer " + token() } : {}; }

async function api(method, path, body) {
  const headers = authHeaders();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const data = await res.json().catch(() => ({ error: "error", message: res.statusText }));
  if (!res.ok) {
    const err = new Error(data.message || res.statusText);
    err.status = res.status;
    throw err;
  }
  if (data.now) skew = data.now - Date.now();
  return data;
}

function flash(text, kind) {
  const box = $("#flash");
  box.textContent = text;
  box.className = kind;
  box.hidden = false;
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { box.hidden = true; }, kind === "error" ? 15000 : 6000);
}

async function act(label, method, path, body) {
  try {
    const data = await api(method, path, body);
    const t = data.task;
    flash(t ? `${label}: ${t.id} is ${t.state}` : `${label}: done`, "ok");
    return data;
  } catch (err) {
    flash(`${label} refused (${err.status || "network"}): ${err.message}`, "error");
    return null;
  }
}

async function guarded(load) {
  try {
    await load();
  } catch (err) {
    if (err.status === 401) $("#token").focus();
    $("#main").replaceChildren(el("p", { class: "error" }, `${err.status || "network"}: ${err.message}`));
  }
}

// --- pieces ---------------------------------------------------------------------------------------
function ago(ms) {
  if (!ms) return "never";
  const s = Math.max(0, Math.round((Date.now() + skew - ms) / 1000));
  if (s < 90) return `${s}s ago`;
  if (s < 5400) return `${Math.round(s / 60)}m ago`;
  return s < 172800 ? `${Math.round(s / 3600)}h ago` : `${Math.round(s / 86400)}d ago`;
}
function stateTag(state) { return el("span", { class: `state ${state}` }, state); }
function taskLink(id) { return el("a", { href: "/tasks/" + encodeURIComponent(id) }, id); }
function leaseCell(t) {
  return el("td", { class: "num lease", dataset: t.owner && !TERMINAL.has(t.state) && t.lease_until ? { until: t.lease_until } : {} }, "–");
}
function tickLeases() {
  const now = Date.now() + skew;
  for (const cell of document.querySelectorAll("[data-until]")) {
    const left = (+cell.dataset.until - now) / 1000;
    cell.textContent = left > 0 ? `${left.toFixed(0)}s` : "expired";
    cell.classList.toggle("late", left <= 0);
  }
}
function table(headings, rows, attrs) {
  return el("table", attrs || {}, el("thead", {}, el("tr", {}, headings.map((h) => el("th", {}, h)))), el("tbody", {}, rows));
}

function renderCounts(counts) {
  const box = $("#counts");
  let total = 0;
  box.replaceChildren(...STATES.map((s) => {
    total += counts[s] || 0;
    return el("a", { class: `count ${s}`, href: "/?state=" + s, dataset: { state: s } }, el("b", {}, counts[s] || 0), " " + s);
  }));
  box.append(el("span", { class: "total" }, `${total} task${total === 1 ? "" : "s"}`));
}

// --- the board ------------------------------------------------------------------------------------
function actions(t) {
  const out = [];
  const path = "/api/tasks/" + encodeURIComponent(t.id);
  if (t.state === "failed" || t.state === "cancelled") {
    out.push(el("button", { class: "retry", onclick: () => act(`retry ${t.id}`, "POST", path + "/retry") }, "retry"));
  }
  if (!TERMINAL.has(t.state)) {
    out.push(el("button", {
      class: "cancel",
      onclick: () => confirm(`Cancel ${t.id}?`) && act(`cancel ${t.id}`, "POST", path + "/cancel", { reason: "cancelled from the web board" }),
    }, "cancel"));
  }
  return out;
}

function taskRow(t) {
  return el("tr", { dataset: { id: t.id, created: t.created, updated: t.updated } },
    el("td", {}, taskLink(t.id)), el("td", {}, stateTag(t.state)), el("td", { class: "num" }, t.priority),
    el("td", {}, t.kind), el("td", { class: "title" }, t.title), el("td", {}, t.owner || "–"),
    el("td", { class: "num" }, `${t.attempts}/${t.max_attempts}`), leaseCell(t), el("td", { class: "actions" }, actions(t)));
}

function matches(t) {
  const f = board.filters;
  if ((f.state && t.state !== f.state) || (f.kind && t.kind !== f.kind) || (f.owner && t.owner !== f.owner)) return false;
  const q = (f.q || "").toLowerCase();
  return !q || t.title.toLowerCase().includes(q) || t.id.toLowerCase().includes(q);
}

function renderPager() {
  const rows = $("#tasks tbody").rows.length;
  const { offset, limit, total } = board;
  $("#range").textContent = rows ? `${offset + 1}–${offset + rows} of ${total}` : `none of ${total}`;
  $("#prev").disabled = offset === 0;
  $("#next").disabled = offset + limit >= total;
}

function boardView() {
  const p = new URLSearchParams(location.search);
  board.filters = { state: p.get("state") || "", kind: p.get("kind") || "", owner: p.get("owner") || "", q: p.get("q") || "" };
  board.offset = Math.max(0, +p.get("offset") || 0);
  const f = board.filters;
  const filters = el("form", { id: "filters", onsubmit: (e) => { e.preventDefault(); go(0); } },
    el("select", { name: "state", "aria-label": "state" }, el("option", { value: "" }, "any state"),
      STATES.map((s) => el("option", { value: s, selected: f.state === s }, s))),
    el("input", { name: "kind", placeholder: "kind", value: f.kind }),
    el("input", { name: "owner", placeholder: "owner", value: f.owner }),
    el("input", { name: "q", placeholder: "text in id or title", value: f.q, type: "search" }),
    el("button", { type: "submit" }, "filter"));
  const create = el("details", { class: "create" }, el("summary", {}, "new task"),
    el("form", { id: "create", onsubmit: createTask },
      el("input", { name: "kind", placeholder: "kind", required: true }),
      el("input", { name: "title", placeholder: "title", required: true, class: "wide" }),
      el("input", { name: "priority", type: "number", min: 0, max: 9, value: 5, "aria-label": "priority" }),
      el("button", { type: "submit" }, "create")));
  const pager = el("div", { class: "pager" },
    el("button", { id: "prev", onclick: () => go(board.offset - board.limit) }, "‹ newer"),
    el("span", { id: "range" }),
    el("button", { id: "next", onclick: () => go(board.offset + board.limit) }, "older ›"));
  $("#main").replaceChildren(el("div", { class: "bar" }, filters, create),
    table(["id", "state", "pri", "kind", "title", "owner", "tries", "lease", ""], [], { id: "tasks" }), pager);
}

function go(offset) {
  const form = new FormData($("#filters"));
  const p = new URLSearchParams();
  for (const key of ["state", "kind", "owner", "q"]) if (form.get(key)) p.set(key, String(form.get(key)).trim());
  if (offset > 0) p.set("offset", offset);
  history.replaceState(null, "", "/" + (p.toString() ? "?" + p : ""));
  boardView();
  guarded(loadBoard);
}

async function loadBoard() {
  const p = new URLSearchParams();
  for (const [key, value] of Object.entries(board.filters)) if (value) p.set(key, value);
  p.set("offset", board.offset);
  p.set("limit", board.limit);
  const data = await api("GET", "/api/board?" + p);
  renderCounts(data.counts);
  board.total = data.total;
  $("#tasks tbody").replaceChildren(...data.tasks.map(taskRow));
  renderPager();
  tickLeases();
}

async function createTask(e) {
  e.preventDefault();
  const form = new FormData(e.target);
  const made = await act("create", "POST", "/api/tasks",
    { kind: form.get("kind"), title: form.get("title"), priority: +form.get("priority") });
  if (made) e.target.reset();
}

function applyBatch(batch) {
  const body = $("#tasks tbody");
  if (!body) return;
  const exact = !board.filters.kind && !board.filters.owner && !board.filters.q;
  for (const e of batch.events) {
    if (batch.tasks[e.task_id]) continue; // gone from the board (purged): its row goes too
    const row = body.querySelector(`tr[data-id="${CSS.escape(e.task_id)}"]`);
    if (row) { row.remove(); if (!exact) board.total -= 1; }
  }
  for (const t of Object.values(batch.tasks)) {
    const row = body.querySelector(`tr[data-id="${CSS.escape(t.id)}"]`);
    if (row) {
      if (+row.dataset.updated > t.updated) continue; // an older picture of it than the one shown
      if (matches(t)) row.replaceWith(taskRow(t));
      else { row.remove(); if (!exact) board.total -= 1; }
      continue;
    }
    if (!matches(t)) continue;
    const created = batch.events.some((e) => e.task_id === t.id && e.event === "created");
    if (!exact && created) board.total += 1;
    const last = body.lastElementChild;
    if (board.offset > 0 || (body.rows.length >= board.limit && last && +last.dataset.created > t.created)) continue;
    const after = [...body.rows].find((r) => +r.dataset.created < t.created);
    body.insertBefore(taskRow(t), after || null);
    while (body.rows.length > board.limit) body.lastElementChild.remove();
  }
  if (exact) {
    board.total = board.filters.state ? batch.counts[board.filters.state] || 0 : Object.values(batch.counts).reduce((a, b) => a + b, 0);
  }
  renderPager();
  tickLeases();
}

// --- one task -------------------------------------------------------------------------------------
async function loadTask() {
  const { task: t, history } = await api("GET", "/api/tasks/" + encodeURIComponent(taskId));
  const path = "/api/tasks/" + encodeURIComponent(t.id);
  const lease = el("span", { dataset: t.owner && !TERMINAL.has(t.state) && t.lease_until ? { until: t.lease_until } : {} }, "–");
  const facts = [["state", stateTag(t.state)], ["priority", t.priority], ["kind", t.kind], ["owner", t.owner || "–"],
    ["token", t.token], ["attempts", `${t.attempts} of ${t.max_attempts}`], ["lease", lease],
    ["needs", t.caps.join(", ") || "anyone"], ["blocked by", t.blocked_by.map(taskLink)], ["key", t.key],
    ["files", t.files.join(", ")], ["result", t.result], ["reason", t.reason], ["body", t.body]];
  const steer = el("div", { class: "steer" }, actions(t), !TERMINAL.has(t.state) && [
    el("form", { onsubmit: (e) => { e.preventDefault(); act(`assign ${t.id}`, "POST", path + "/assign", { agent: e.target.agent.value, force: !!t.owner }); } },
      el("input", { name: "agent", placeholder: "agent", required: true }), el("button", {}, t.owner ? "reassign" : "assign")),
    el("form", { onsubmit: (e) => { e.preventDefault(); act(`priority ${t.id}`, "PATCH", path, { priority: +e.target.priority.value }); } },
      el("input", { name: "priority", type: "number", min: 0, max: 9, value: t.priority, "aria-label": "priority" }), el("button", {}, "set priority"))]);
  $("#main").replaceChildren(
    el("h1", {}, `${t.id} `, el("span", { class: "title" }, t.title)), steer,
    el("dl", {}, facts.filter(([, v]) => v !== "" && !(Array.isArray(v) && !v.length)).flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    el("h2", {}, "history"),
    table(["at", "event", "state", "owner", "token", "detail"], history.map((e) => el("tr", {},
      el("td", { class: "num" }, new Date(e.ts).toISOString().replace("T", " ").slice(0, 23)), el("td", {}, e.event),
      el("td", {}, stateTag(e.state)), el("td", {}, e.owner || "–"), el("td", { class: "num" }, e.token), el("td", { class: "detail" }, e.detail))), { id: "history" }));
  tickLeases();
}

// --- agents, signals, dead letters, health --------------------------------------------------------
async function loadAgents() {
  const { agents } = await api("GET", "/api/agents");
  $("#main").replaceChildren(agents.length ? table(["agent", "liveness", "load", "tasks", "can", "last seen"], agents.map((a) => el("tr", {},
    el("td", {}, a.name), el("td", {}, el("span", { class: `live-${a.liveness}` }, a.liveness)),
    el("td", { class: "num" }, `${a.load}/${a.concurrency}`), el("td", {}, a.tasks.flatMap((id, i) => i ? [", ", taskLink(id)] : [taskLink(id)])),
    el("td", {}, a.capabilities.join(", ") || "anything"), el("td", {}, ago(a.last_seen)))), { id: "agents" }) : el("p", { class: "muted" }, "no agents"));
}

async function loadSignals() {
  const { signals } = await api("GET", "/api/signals");
  $("#main").replaceChildren(signals.length ? table(["agent", "scope", "count", "open", "last seen", "sample"], signals.map((s) => el("tr", {},
    el("td", {}, s.agent), el("td", {}, s.scope), el("td", { class: "num" }, s.count), el("td", {}, s.open ? "yes" : "no"),
    el("td", {}, ago(s.last_seen)), el("td", { class: "detail" }, s.sample)))) : el("p", { class: "muted" }, "no repetition signals"));
}

async function loadDeadLetters() {
  const { dead_letters: letters } = await api("GET", "/api/dead-letters");
  $("#main").replaceChildren(letters.length ? table(["at", "stream", "group", "reason", "raw"], letters.map((d) => el("tr", {},
    el("td", {}, ago(d.at)), el("td", {}, d.stream), el("td", {}, d.group), el("td", { class: "detail" }, d.reason),
    el("td", { class: "detail raw" }, d.raw.slice(0, 300))))) : el("p", { class: "muted" }, "no dead letters"));
}

async function loadHealth() {
  const { healthy, checks } = await api("GET", "/api/health");
  $("#main").replaceChildren(el("h1", {}, healthy ? "healthy" : "unhealthy"),
    table(["check", "status", "detail"], checks.map((c) => el("tr", {}, el("td", {}, c.name),
      el("td", {}, el("span", { class: `check ${c.status}` }, c.status)), el("td", { class: "detail" }, c.detail)))));
}

// --- live: the board-event stream as server-sent events (read with fetch, so the token goes in a header) ---
const LOADERS = { board: loadBoard, task: loadTask, agents: loadAgents, signals: loadSignals, "dead-letters": loadDeadLetters, health: loadHealth };
let pending = null;

function onBatch(batch) {
  renderCounts(batch.counts);
  if (view === "board") applyBatch(batch);
  else if (view === "task" && batch.tasks[taskId]) guarded(loadTask);
  else if (view === "agents" && !pending) pending = setTimeout(() => { pending = null; guarded(loadAgents); }, 250);
}

function setLive(on, text) {
  const badge = $("#live");
  badge.textContent = text;
  badge.classList.toggle("on", on);
}

function dispatch(chunk) {
  let event = "message";
  let data = "";
  for (const line of chunk.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data += line.slice(5).trim();
  }
  if (event === "hello") {
    // Subscribed first, loaded second: a transition between the two shows up in both, never in neither.
    skew = JSON.parse(data).now - Date.now();
    setLive(true, "live");
    guarded(LOADERS[view]);
    if (view !== "board") api("GET", "/api/board?limit=1").then((d) => renderCounts(d.counts), () => {});
  } else if (event === "board") {
    onBatch(JSON.parse(data));
  }
}

async function follow() {
  for (;;) {
    try {
      const res = await fetch("/api/events", { headers: authHeaders(), cache: "no-store" });
      if (!res.ok) {
        const data = await res.json().catch(() => ({}));
        setLive(false, "offline");
        $("#main").replaceChildren(el("p", { class: "error" }, `${res.status}: ${data.message || res.statusText}`));
        if (res.status === 401 || res.status === 403) { $("#token").focus(); return; }
      } else {
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            dispatch(buffer.slice(0, cut));
            buffer = buffer.slice(cut + 2);
          }
        }
      }
    } catch (err) {
      // the connection dropped: say so, and come back
    }
    setLive(false, "reconnecting");
    await new Promise((resolve) => setTimeout(resolve, 2000));
  }
}

async function whoAmI() {
  try {
    const me = await api("GET", "/api/me");
    $("#who").textContent = me.role ? (me.role === "agent" ? `agent ${me.name}` : me.role) : "read-only (no token)";
    $("#login").hidden = !!me.role;
  } catch (err) {
    $("#who").textContent = "";
  }
}

function start() {
  if (location.hash.startsWith("#token=")) {
    sessionStorage.setItem(TOKEN, decodeURIComponent(location.hash.slice(7)));
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("#login").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN, $("#token").value.trim());
    location.reload();
  });
  const path = location.pathname;
  if (path.startsWith("/tasks/")) { view = "task"; taskId = decodeURIComponent(path.slice(7)); }
  else view = path.slice(1) || "board";
  if (!LOADERS[view]) view = "board";
  for (const link of document.querySelectorAll("nav a[data-view]")) link.classList.toggle("here", link.dataset.view === view);
  document.title = `swarm · ${view === "task" ? taskId : view}`;
  if (view === "board") boardView();
  if (view === "agents") setInterval(() => guarded(loadAgents), 5000); // liveness moves with heartbeats, not board events
  setInterval(tickLeases, 1000);
  whoAmI();
  follow();
}

start();

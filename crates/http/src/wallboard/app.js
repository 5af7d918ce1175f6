// The wallboard: the status once, then the SSE stream of changes. Changes are queued and
// applied once per animation frame, touching only the tiles they change, so thousands of agents
// and hundreds of changes a second cost one small DOM update per frame, never a growing backlog.
// Nothing per frame or per second is proportional to the number of agents: the counts are kept
// as changes come, the time in state ticks only on the tiles on screen, and a tile's text lives
// in a box of fixed size (`.in`, contain: strict), so changing it lays out that box only, not
// the grid of thousands (measured by the benchmark's `wallboard` scenario).
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || params.get("access_token");
const withToken = (path) =>
  token ? path + (path.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(token) : path;

const $ = (id) => document.getElementById(id);
const agents = new Map(); // "tserver/dn" -> agent view
const tiles = new Map(); // "tserver/dn" -> tile element
const counts = new Map(); // status -> agents in it
let shownCount = 0; // tiles not hidden by the filters
let servers = [];
let ports = [];
let pending = []; // changes waiting for the next frame
let frameRequested = false;
// Changes are applied at most this often (ms): a wall display needs no more.
const APPLY_EVERY_MS = 100;
let lastApplied = 0;
let lastSeq = 0;
// The store's clock: the newest event time, moved on by the wall clock since it was learnt
// (a replayed or simulated day ticks from its own time, a live site from now).
let eventTime = 0;
let learntAt = performance.now();
let source = null;

const keyOf = (a) => a.tserver + "/" + a.dn;
// An agent's `since` as milliseconds, parsed once per view.
const sinceMs = (a) => a.sinceMs ?? (a.sinceMs = Date.parse(a.since));
const nowMs = () => eventTime + (performance.now() - learntAt);

function learnTime(at) {
  const t = Date.parse(at);
  if (!Number.isNaN(t) && t > nowMs()) {
    eventTime = t;
    learntAt = performance.now();
  }
}

function stateClass(a) {
  if (a.status === "NotReady" && a.work_mode === "AfterCallWork") return "s-ACW";
  if (a.status === "NotReady" && a.work_mode === "WalkAway") return "s-WalkAway";
  return "s-" + (a.status || "Unknown");
}

function hms(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const r = s % 60;
  return (h ? h + ":" + String(m).padStart(2, "0") : String(m)) + ":" + String(r).padStart(2, "0");
}

async function getJson(path) {
  const r = await fetch(withToken(path));
  const body = await r.json();
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function makeTile(a) {
  const el = document.createElement("button");
  el.type = "button";
  el.setAttribute("role", "listitem");
  el.dataset.key = keyOf(a);
  el.innerHTML = '<div class="in"><span class="dn"></span><div class="id"></div><div class="st"></div><div class="why"></div><div class="t"></div></div>';
  el.parts = el.firstChild.children;
  shownCount++;
  el.addEventListener("click", () => openDetail(agents.get(el.dataset.key)));
  return el;
}

function paint(el, a) {
  el.className = "tile " + stateClass(a);
  el.dataset.status = a.status;
  const [dn, id, st, why, t] = el.parts;
  dn.textContent = a.dn;
  id.textContent = a.agent_id || "—";
  st.textContent = a.status + (a.work_mode ? " · " + a.work_mode : "");
  why.textContent = a.reason || "";
  t.textContent = hms(nowMs() - sinceMs(a));
  setHidden(el, !matches(a));
}

function setHidden(el, hidden) {
  if (el.hidden !== hidden) {
    el.hidden = hidden;
    shownCount += hidden ? -1 : 1;
  }
}

// Every agent view goes into `agents` through here, which keeps the counts per state.
function setAgent(a) {
  const key = keyOf(a);
  const before = agents.get(key);
  if (before) counts.set(before.status, counts.get(before.status) - 1);
  counts.set(a.status, (counts.get(a.status) || 0) + 1);
  agents.set(key, a);
}

// ---- filters ----
function ivrDns() {
  const ivr = $("f-ivr").value;
  if (!ivr) return null;
  return new Set(ports.filter((p) => p.ivr === ivr).map((p) => p.tserver + "/" + p.dn));
}
let ivrFilter = null;

function matches(a) {
  const ts = $("f-tserver").value;
  const st = $("f-state").value;
  const text = $("f-text").value.trim().toLowerCase();
  if (ts && a.tserver !== ts) return false;
  if (st && a.status !== st) return false;
  if (ivrFilter && !ivrFilter.has(keyOf(a))) return false;
  if (text) {
    const hay = [a.agent_id, a.dn, a.tserver, a.reason, a.work_mode, a.status].join(" ").toLowerCase();
    if (!hay.includes(text)) return false;
  }
  return true;
}

function applyFilters() {
  ivrFilter = ivrDns();
  for (const [key, el] of tiles) setHidden(el, !matches(agents.get(key)));
  updateCounts();
}

function fillSelect(select, values) {
  const keep = select.value;
  select.length = 1;
  for (const v of values) select.add(new Option(v, v));
  select.value = keep;
}

const STATES = ["Ready", "NotReady", "LoggedIn", "LoggedOut"];

function updateCounts() {
  const box = $("counts");
  const shown = STATES.concat([...counts.keys()].filter((s) => !STATES.includes(s) && counts.get(s) > 0));
  if (box.children.length !== shown.length) {
    box.replaceChildren();
    for (const s of shown) {
      const span = document.createElement("span");
      span.className = "s-" + s;
      span.dataset.status = s;
      box.append(span);
    }
  }
  shown.forEach((s, i) => {
    const text = s + " " + (counts.get(s) || 0);
    const span = box.children[i];
    if (span.dataset.status !== s) {
      span.className = "s-" + s;
      span.dataset.status = s;
    }
    if (span.textContent !== text) span.textContent = text;
  });
  const text = shownCount + " of " + agents.size + " shown";
  if ($("shown").textContent !== text) $("shown").textContent = text;
}

function renderLinks() {
  const box = $("links");
  box.replaceChildren();
  for (const s of servers) {
    const div = document.createElement("div");
    const up = s.status === "OK";
    div.className = "link " + (up ? "up" : "down");
    div.dataset.tserver = s.name;
    div.textContent = s.name + (up ? " link up" : " LINK DOWN") + " since " + s.since.slice(0, 19).replace("T", " ");
    box.append(div);
  }
}

// ---- loading and live updates ----
async function loadStatus() {
  const view = await getJson("/api/v1/status");
  lastSeq = view.seq;
  if (view.at) learnTime(view.at);
  servers = view.servers;
  ports = view.ports;
  agents.clear();
  counts.clear();
  shownCount = 0;
  const box = $("tiles");
  const fragment = document.createDocumentFragment();
  tiles.clear();
  for (const a of view.agents) {
    setAgent(a);
    const el = makeTile(a);
    tiles.set(keyOf(a), el);
    fragment.append(el);
  }
  fillSelect($("f-ivr"), [...new Set(ports.map((p) => p.ivr))].sort());
  fillSelect($("f-tserver"), [...new Set(view.agents.map((a) => a.tserver).concat(servers.map((s) => s.name)))].sort());
  ivrFilter = ivrDns();
  for (const [key, el] of tiles) paint(el, agents.get(key));
  box.replaceChildren(fragment);
  renderLinks();
  updateCounts();
  tick();
}

function connect() {
  if (source) source.close();
  source = new EventSource(withToken("/api/v1/events?after=" + lastSeq));
  source.addEventListener("open", () => {
    $("live").className = "live on";
    $("live").textContent = "live";
  });
  source.addEventListener("error", () => {
    // EventSource reconnects by itself, with the last id: no change is lost.
    $("live").className = "live off";
    $("live").textContent = "reconnecting";
  });
  source.addEventListener("change", (e) => {
    pending.push(JSON.parse(e.data));
    if (!frameRequested) {
      frameRequested = true;
      // At most APPLY_EVERY_MS apart: each painted frame costs Chromium several ms whatever
      // it shows, so painting at 60 Hz while changes stream in would keep a core busy.
      const wait = lastApplied + APPLY_EVERY_MS - performance.now();
      if (wait > 0) setTimeout(() => requestAnimationFrame(flush), wait);
      else requestAnimationFrame(flush);
    }
  });
  source.addEventListener("reset", async () => {
    // Changes were missed (this page was away too long): reload everything.
    pending = [];
    await loadStatus();
    connect();
  });
}

function flush() {
  frameRequested = false;
  lastApplied = performance.now();
  const batch = pending;
  pending = [];
  const touched = new Map();
  let linksChanged = false;
  for (const change of batch) {
    lastSeq = Math.max(lastSeq, change.seq);
    if (change.at) learnTime(change.at);
    for (const a of change.agents) {
      setAgent(a);
      touched.set(keyOf(a), a);
    }
    for (const s of change.servers) {
      const i = servers.findIndex((x) => x.name === s.name);
      if (i >= 0) servers[i] = s;
      else servers.push(s);
      linksChanged = true;
    }
    for (const p of change.ports) {
      const i = ports.findIndex((x) => x.ivr === p.ivr && x.port === p.port);
      if (i >= 0) ports[i] = p;
      else ports.push(p);
    }
  }
  for (const [key, a] of touched) {
    let el = tiles.get(key);
    if (!el) {
      el = makeTile(a);
      tiles.set(key, el);
      $("tiles").append(el);
    }
    paint(el, a);
  }
  if (linksChanged) renderLinks();
  if (touched.size) updateCounts();
}

// Time in state ticks once a second: text only, for the tiles on screen, and at once when the
// page scrolls. (An IntersectionObserver on every tile cost ~10 ms per frame at 5000 tiles.)
function tick() {
  const now = nowMs();
  $("clock").textContent = eventTime ? new Date(now).toISOString().slice(0, 19).replace("T", " ") + "Z" : "";
  for (const el of tilesOnScreen()) {
    const a = agents.get(el.dataset.key);
    if (a) el.parts[4].textContent = hms(now - sinceMs(a));
  }
}

// The tiles shown are in rows from top to bottom: a binary search finds the first one on
// screen, then they are taken until one is below it.
function tilesOnScreen() {
  if ($("agents-page").hidden) return [];
  const shown = [];
  for (const el of tiles.values()) if (!el.hidden) shown.push(el);
  let lo = 0;
  let hi = shown.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (shown[mid].getBoundingClientRect().bottom < 0) lo = mid + 1;
    else hi = mid;
  }
  const out = [];
  for (let i = lo; i < shown.length && shown[i].getBoundingClientRect().top < innerHeight; i++) out.push(shown[i]);
  return out;
}

let tickRequested = false;
addEventListener("scroll", () => {
  if (tickRequested) return;
  tickRequested = true;
  requestAnimationFrame(() => {
    tickRequested = false;
    tick();
  });
}, { passive: true });
setInterval(tick, 1000);

// ---- the agent's day ----
async function openDetail(a) {
  if (!a) return;
  const dialog = $("detail");
  const end = new Date(nowMs());
  const start = new Date(Date.UTC(end.getUTCFullYear(), end.getUTCMonth(), end.getUTCDate()));
  $("d-title").textContent = "Agent " + (a.agent_id || "—") + " · " + a.tserver + " " + a.dn + " · " + start.toISOString().slice(0, 10);
  $("d-table").replaceChildren();
  $("d-timeline").replaceChildren();
  dialog.showModal();
  const selector = a.agent_id ? "agent=" + encodeURIComponent(a.agent_id) : "dn=" + encodeURIComponent(a.dn) + "&tserver=" + encodeURIComponent(a.tserver);
  const rows = await getJson("/api/v1/history?" + selector + "&from=" + start.toISOString() + "&to=" + end.toISOString());
  const span = end - start || 1;
  for (const r of rows) {
    const s = Date.parse(r.start);
    const e = r.end ? Date.parse(r.end) : end.getTime();
    const band = document.createElement("div");
    band.className = stateClass(r);
    band.style.left = ((100 * (s - start)) / span) + "%";
    band.style.width = Math.max(0.1, (100 * (e - s)) / span) + "%";
    band.title = r.status + " " + (r.work_mode || "") + " " + (r.reason || "") + " " + r.start.slice(11, 19);
    $("d-timeline").append(band);
  }
  table($("d-table"), ["start", "end", "status", "work mode", "reason", "duration"],
    rows.map((r) => [r.start.slice(11, 19), r.end ? r.end.slice(11, 19) : "(open)", r.status, r.work_mode || "", r.reason || "", r.duration_s == null ? "" : hms(r.duration_s * 1000)]));
}

function table(el, header, rows) {
  const head = document.createElement("tr");
  for (const h of header) {
    const th = document.createElement("th");
    th.textContent = h;
    head.append(th);
  }
  const fragment = document.createDocumentFragment();
  fragment.append(head);
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const cell of row) {
      const td = document.createElement("td");
      td.textContent = cell;
      tr.append(td);
    }
    fragment.append(tr);
  }
  el.replaceChildren(fragment);
}

// ---- the audit page: the interval report, and its CSV (the columns of `audit --csv`) ----
const CSV_HEADER = ["interval_start", "interval_end", "agent_id", "logins", "logged_in_s", "ready_s", "not_ready_other_s", "after_call_work_s", "logged_out_s", "not_ready_by_reason_s", "not_ready_by_work_mode_s", "note"];
let auditRows = [];

const pairs = (o) => Object.entries(o).map(([k, v]) => k + "=" + v.toFixed(3)).join(" ");
function csvRow(r) {
  return [r.interval_start, r.interval_end, r.agent_id, r.logins, r.logged_in_s.toFixed(3), r.status_s.Ready.toFixed(3),
    (r.status_s.NotReady - r.after_call_work_s).toFixed(3), r.after_call_work_s.toFixed(3), r.status_s.LoggedOut.toFixed(3),
    pairs(r.not_ready_reason_s), pairs(r.not_ready_work_mode_s), r.note || ""]
    .map((c) => { const s = String(c); return /[",\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s; })
    .join(",");
}

async function loadAudit() {
  const q = new URLSearchParams();
  if ($("a-from").value) q.set("from", $("a-from").value);
  if ($("a-to").value) q.set("to", $("a-to").value);
  q.set("interval", $("a-interval").value);
  q.set("tz", $("a-tz").value || "UTC");
  $("a-note").textContent = "loading…";
  try {
    auditRows = await getJson("/api/v1/audit?" + q.toString());
  } catch (e) {
    $("a-note").textContent = e.message;
    return;
  }
  const notes = [...new Set(auditRows.filter((r) => r.note).map((r) => r.interval_start.slice(0, 10) + ": " + r.note))];
  $("a-note").textContent = auditRows.length + " rows" + (notes.length ? " · " + notes.join(" · ") : "");
  table($("a-table"), ["interval", "agent", "logins", "logged in", "ready", "not ready", "ACW", "logged out", "reasons"],
    auditRows.map((r) => [r.interval_start.slice(0, 16).replace("T", " "), r.agent_id, r.logins, hms(r.logged_in_s * 1000), hms(r.status_s.Ready * 1000),
      hms((r.status_s.NotReady - r.after_call_work_s) * 1000), hms(r.after_call_work_s * 1000), hms(r.status_s.LoggedOut * 1000),
      Object.entries(r.not_ready_reason_s).map(([k, v]) => k + " " + hms(v * 1000)).join(", ")]));
  $("a-csv").disabled = auditRows.length === 0;
}

function downloadCsv() {
  const text = [CSV_HEADER.join(",")].concat(auditRows.map(csvRow)).join("\n") + "\n";
  const a = document.createElement("a");
  a.href = URL.createObjectURL(new Blob([text], { type: "text/csv" }));
  a.download = "ivrstate-intervals.csv";
  a.click();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function showPage(which) {
  $("agents-page").hidden = which !== "agents";
  $("audit-page").hidden = which !== "audit";
  $("tab-agents").classList.toggle("active", which === "agents");
  $("tab-audit").classList.toggle("active", which === "audit");
  if (which === "audit" && !$("a-from").value && eventTime) {
    const end = new Date(nowMs());
    const start = new Date(Date.UTC(end.getUTCFullYear(), end.getUTCMonth(), end.getUTCDate()));
    $("a-from").value = start.toISOString().slice(0, 19) + "Z";
    $("a-to").value = end.toISOString().slice(0, 19) + "Z";
  }
}

// ---- wiring ----
for (const id of ["f-ivr", "f-tserver", "f-state"]) $(id).addEventListener("change", applyFilters);
$("f-text").addEventListener("input", applyFilters);
$("tab-agents").addEventListener("click", () => showPage("agents"));
$("tab-audit").addEventListener("click", () => showPage("audit"));
$("a-load").addEventListener("click", loadAudit);
$("a-csv").addEventListener("click", downloadCsv);
document.addEventListener("keydown", (e) => {
  if (e.key === "/" && document.activeElement !== $("f-text")) {
    e.preventDefault();
    showPage("agents");
    $("f-text").focus();
  }
});

loadStatus()
  .then(connect)
  .catch((e) => {
    $("live").textContent = "error: " + e.message;
  });

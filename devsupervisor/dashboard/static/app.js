// devsup dashboard: one EventSource for status, history, ports and one log source; POST for actions.
// No framework and no build step. Every value from the daemon goes into the page as text.
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
const PHASES = ["detect", "build", "stop", "start", "ready"];
const MAX_LOG_LINES = 2000; // the view keeps this many; the daemon keeps more (devsup logs)
const STATE_CLASS = {
  running: "ok", healthy: "ok", starting: "warn", building: "warn", switching: "warn",
  restarting: "warn", stopping: "warn", degraded: "bad", build_failed: "bad", crashed: "bad",
  crashloop: "bad", gave_up: "bad", exited: "bad", unhealthy: "bad",
};
const FAVICON = { ok: "#1f8a4c", warn: "#e0a030", bad: "#c62828", idle: "#7a8394" };

let status = null;         // the last status object
let statusAt = 0;          // performance.now() when it arrived (uptimes tick from there)
let ports = {};            // service -> [{port, target}]
let history = { reloads: [], timeline: null };
let source = "platform";   // the log source shown
let events = null;         // the EventSource

// -- helpers ------------------------------------------------------------------------------

function el(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

function badge(node, state) {
  node.textContent = (state || "–").replace("_", " ");
  node.className = "badge " + (STATE_CLASS[state] || "");
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 1) return `${Math.round(value * 1000)} ms`;
  if (value < 120) return `${value.toFixed(1)} s`;
  const m = Math.floor(value / 60);
  return m < 120 ? `${m}m ${Math.floor(value % 60)}s` : `${Math.floor(m / 60)}h ${m % 60}m`;
}

function ago(iso) {
  if (!iso) return "–";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m ago`;
}

function say(text, kind = "") {
  const node = $("message");
  node.textContent = text;
  node.className = kind;
}

// The state that matters most, first in the title: a failed build or a crashloop, else the stack's.
function pressing(s) {
  const p = s.platform || {};
  if (p.state === "build_failed") return ["build failed", "bad"];
  if (p.state === "crashloop") return ["crashloop", "bad"];
  if (p.state === "crashed") return ["crashed", "bad"];
  const cls = STATE_CLASS[s.state] || "idle";
  return [s.state, cls === "" ? "idle" : cls];
}

function setFavicon(kind) {
  const color = FAVICON[kind] || FAVICON.idle;
  const svg = `<svg xmlns="${SVG}" viewBox="0 0 16 16"><circle cx="8" cy="8" r="7" fill="${color}"/></svg>`;
  $("favicon").href = "data:image/svg+xml," + encodeURIComponent(svg);
}

// -- status -------------------------------------------------------------------------------

// Changed files relative to the watched directory they are in: the full path is noise.
function triggers(list, s) {
  const roots = ((s.watcher && s.watcher.paths) || []).map((r) => r.replace(/\/?$/, "/"));
  const short = (path) => {
    const root = roots.find((r) => path.startsWith(r));
    return root ? path.slice(root.length) : path;
  };
  const names = (list || []).map(short);
  return names.length > 3 ? `${names.slice(0, 3).join(", ")} +${names.length - 3}` : names.join(", ");
}

function renderStatus(s) {
  const [what, kind] = pressing(s);
  document.title = `${what} · ${s.stack} · devsup ${s.project}`;
  setFavicon(kind);
  $("project").textContent = s.project;
  $("stack").textContent = s.stack;
  badge($("state"), s.state);
  $("paused").hidden = !(s.watcher && s.watcher.paused);
  $("pause").textContent = s.watcher && s.watcher.paused ? "Resume" : "Pause";
  const select = $("stack-select");
  if (!select.matches(":focus") && select.options.length) select.value = s.stack;

  const problems = [];
  if (s.docker && !s.docker.available) problems.push(`Docker unavailable: ${s.docker.error || "no answer"}`);
  if (s.config_error) problems.push(`Config error (the running config stays in force): ${s.config_error}`);
  $("banner").hidden = problems.length === 0;
  $("banner").textContent = problems.join(" · ");

  const p = s.platform || {};
  badge($("platform-state"), p.state);
  $("platform-mode").textContent = p.mode || "–";
  $("platform-pid").textContent = p.pid ?? (p.container ? `container ${p.container.slice(0, 12)}` : "–");
  $("platform-restarts").textContent = p.restarts ?? "–";
  const b = p.last_build;
  $("platform-build").textContent = b
    ? `${b.ok ? "ok" : "FAILED"} in ${seconds(b.duration)} · ${ago(b.started_at)} · ${triggers(b.trigger, s)}`
    : "–";
  $("build-error").hidden = !(b && !b.ok && b.error);
  $("build-error").textContent = b && b.error ? b.error : "";
  const r = p.last_reload;
  $("platform-reload").textContent = r
    ? PHASES.map((k) => `${k} ${seconds(r[k])}`).join(" · ") + ` = ${seconds(r.total)}`
    : "–";
  renderServices(s.services || []);
  tick();
  updateSources();
}

function renderServices(services) {
  const body = $("services").tBodies[0];
  // Rows are rebuilt on every change: keep the keyboard focus on the same service's button.
  const focused = document.activeElement && document.activeElement.dataset.restart;
  body.replaceChildren();
  $("no-services").hidden = services.length > 0;
  for (const svc of services) {
    const row = el("tr", { "data-service": svc.name });
    row.append(el("td", {}, svc.name));
    const state = el("td");
    state.append(el("span", {}, ""));
    badge(state.firstChild, svc.state);
    row.append(state, el("td", {}, svc.health), el("td", {}, String(svc.restarts)));
    const since = el("td", { title: svc.since || "", class: "nowrap", "data-since": svc.since || "" }, ago(svc.since));
    row.append(since, el("td", { class: "reason" }, svc.reason || ""));
    const cell = el("td");
    for (const p of ports[svc.name] || []) {
      const link = el("a", { href: `http://127.0.0.1:${p.port}/`, target: "_blank", rel: "noopener noreferrer", title: p.target }, String(p.port));
      cell.append(link);
    }
    row.append(cell);
    const act = el("td");
    const button = el("button", { type: "button", "aria-label": `Restart ${svc.name}`, "data-restart": svc.name }, "Restart");
    button.addEventListener("click", () => command("restart", { name: svc.name }, button));
    act.append(button);
    row.append(act);
    body.append(row);
    if (svc.name === focused) button.focus();
  }
}

// Uptimes count up between status messages (they are left out of change detection).
function tick() {
  if (!status) return;
  const p = status.platform || {};
  const elapsed = (performance.now() - statusAt) / 1000;
  $("platform-uptime").textContent = p.uptime === null || p.uptime === undefined ? "–" : seconds(p.uptime + elapsed);
  for (const cell of document.querySelectorAll("td[data-since]")) cell.textContent = ago(cell.dataset.since);
  if (history.timeline) $("timeline-summary").textContent = timelineSummary(history.timeline);
}

// -- chart and timeline -------------------------------------------------------------------

function renderChart(reloads) {
  const svg = $("chart");
  svg.replaceChildren();
  const W = 600, H = 180, left = 34, bottom = 14, slots = 50;
  const max = Math.max(0.1, ...reloads.map((r) => r.total || PHASES.reduce((a, k) => a + r[k], 0)));
  const scale = (H - bottom - 6) / max;
  for (const f of [0, 0.5, 1]) {
    const y = H - bottom - f * max * scale;
    svg.append(el("svg:line", { x1: left, x2: W, y1: y, y2: y, class: "grid" }));
    svg.append(el("svg:text", { x: 0, y: y + 4 }, seconds(f * max)));
  }
  const step = (W - left) / slots;
  reloads.forEach((r, i) => {
    const x = left + (slots - reloads.length + i) * step + 1;
    let y = H - bottom;
    const bar = el("svg:g", { class: "bar" });
    bar.append(el("svg:title", {}, `${r.ts}\n` + PHASES.map((k) => `${k}: ${seconds(r[k])}`).join("\n") +
      `\ntotal: ${seconds(r.total)}\n${status ? triggers(r.trigger, status) : ""}`));
    for (const k of PHASES) {
      const h = Math.max(0, r[k] * scale);
      y -= h;
      bar.append(el("svg:rect", { x, y, width: Math.max(1, step - 2), height: h, class: `phase-${k}` }));
    }
    svg.append(bar);
  });
  svg.append(el("svg:text", { x: left, y: H - 2 }, reloads.length ? "older" : "no reloads yet"));
  if (reloads.length) svg.append(el("svg:text", { x: W - 30, y: H - 2 }, "latest"));
  $("reload-count").textContent = reloads.length ? `(${reloads.length})` : "";
}

function renderLegend() {
  for (const k of PHASES) {
    const item = el("li", {}, k);
    item.style.setProperty("--swatch", `var(--${k})`);
    $("legend").append(item);
  }
}

function renderTimeline(t) {
  const svg = $("timeline");
  svg.replaceChildren();
  if (!t) {
    $("timeline-summary").textContent = "";
    return;
  }
  const rows = t.rows || [];
  const rowH = 20, top = 4, left = 110, W = 600;
  const H = top + Math.max(1, rows.length) * rowH + 16;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.style.height = `${H}px`;
  let span = t.duration || 0;
  for (const row of rows) for (const s of row.segments) span = Math.max(span, s.end ?? s.start);
  span = Math.max(span, 0.1);
  const x = (sec) => left + (sec / span) * (W - left - 10);
  rows.forEach((row, i) => {
    const y = top + i * rowH;
    svg.append(el("svg:text", { x: 0, y: y + 13 }, row.name));
    for (const s of row.segments) {
      const end = s.end ?? span;
      const rect = el("svg:rect", {
        x: x(s.start), y: y + 3, width: Math.max(2, x(end) - x(s.start)), height: rowH - 6, rx: 2,
        class: `phase-${s.phase}` + (s.ok === false ? " failed" : ""),
      });
      rect.append(el("svg:title", {}, `${row.name} ${s.phase}: ${seconds(s.start)} → ${s.end === null ? "…" : seconds(s.end)}`));
      svg.append(rect);
    }
  });
  svg.append(el("svg:text", { x: left, y: H - 2 }, "0"));
  svg.append(el("svg:text", { x: W - 50, y: H - 2 }, seconds(span)));
  $("timeline-summary").textContent = timelineSummary(t);
}

function timelineSummary(t) {
  const outcome = t.ok === null ? "in progress" : t.ok ? `done in ${seconds(t.duration)}` : "failed";
  return `· ${t.kind} ${t.stack || ""} · ${outcome} · ${ago(t.started_at)}`;
}

// -- logs ---------------------------------------------------------------------------------

function updateSources() {
  const select = $("log-source");
  const names = ["platform", "devsup", ...(status ? status.services.map((s) => s.name) : [])];
  const have = [...select.options].map((o) => o.value);
  if (have.join() === names.join()) return;
  select.replaceChildren(...names.map((n) => el("option", { value: n }, n)));
  select.value = names.includes(source) ? source : "platform";
}

function matches(text) {
  const needle = $("log-filter").value.trim().toLowerCase();
  return !needle || text.toLowerCase().includes(needle);
}

function appendLog(item) {
  const box = $("log-lines");
  const atBottom = box.scrollTop + box.clientHeight >= box.scrollHeight - 20;
  const line = el("div", { class: `line lvl-${item.level || "info"}` }, item.text);
  if (!matches(item.text)) line.classList.add("hidden");
  box.append(line);
  while (box.childElementCount > MAX_LOG_LINES) box.firstElementChild.remove();
  if (atBottom) box.scrollTop = box.scrollHeight;
  countLines();
}

function applyFilter() {
  for (const line of $("log-lines").children) line.classList.toggle("hidden", !matches(line.textContent));
  countLines();
}

function countLines() {
  const box = $("log-lines");
  const shown = box.querySelectorAll(".line:not(.hidden)").length;
  $("log-count").textContent = `${shown} of ${box.childElementCount} lines`;
}

// -- live connection ----------------------------------------------------------------------

function connect() {
  if (events) events.close();
  const follow = $("follow").checked;
  const query = follow ? `?logs=${encodeURIComponent(source)}&lines=300` : "";
  if (follow) $("log-lines").replaceChildren();
  events = new EventSource("/api/events" + query);
  events.addEventListener("open", () => { $("connection").hidden = true; });
  events.addEventListener("error", () => { $("connection").hidden = false; });
  events.addEventListener("status", (e) => {
    const previous = status;
    status = JSON.parse(e.data);
    // The platform's log source moves with the stack (host process or container): follow it.
    const moved = previous && (previous.stack !== status.stack || previous.platform.mode !== status.platform.mode);
    if (moved && $("follow").checked) setTimeout(connect, 0);
    statusAt = performance.now();
    renderStatus(status);
  });
  events.addEventListener("meta", (e) => {
    const meta = JSON.parse(e.data);
    const select = $("stack-select");
    select.replaceChildren(...meta.stacks.map((n) => el("option", { value: n }, n)));
    if (status) select.value = status.stack;
  });
  events.addEventListener("history", (e) => {
    history = JSON.parse(e.data);
    renderChart(history.reloads);
    renderTimeline(history.timeline);
  });
  events.addEventListener("ports", (e) => {
    ports = JSON.parse(e.data);
    if (status) renderServices(status.services || []);
  });
  events.addEventListener("log", (e) => appendLog(JSON.parse(e.data)));
  events.addEventListener("logerror", (e) => {
    const data = JSON.parse(e.data);
    appendLog({ text: `no logs for ${data.source}: ${data.message}`, level: "error" });
  });
}

// -- actions ------------------------------------------------------------------------------

async function command(name, args, button) {
  const label = name === "restart" ? `restart ${args.name}` : name;
  if (button) button.disabled = true;
  say(`${label}…`);
  try {
    const response = await fetch(`/api/${name}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(args || {}),
    });
    const reply = await response.json();
    if (reply.ok) {
      const pid = reply.result && reply.result.pid ? ` (pid ${reply.result.pid})` : "";
      say(`${label}: done${pid}`, "ok");
    } else {
      say(`${label}: ${reply.error.message}`, "bad");
    }
  } catch (err) {
    say(`${label}: ${err}`, "bad");
  } finally {
    if (button) button.disabled = false;
  }
}

function pauseOrResume() {
  const paused = status && status.watcher && status.watcher.paused;
  command(paused ? "resume" : "pause", {}, $("pause"));
}

function onKey(e) {
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  const typing = e.target.matches("input, select, textarea");
  if (e.key === "Escape" && typing) { e.target.blur(); return; }
  if (typing) return;
  const keys = {
    b: () => $("rebuild").click(),
    r: () => $("restart-platform").click(),
    p: () => $("pause").click(),
    s: () => $("stack-select").focus(),
    l: () => $("log-source").focus(),
    f: () => $("follow").click(),
    "/": () => $("log-filter").focus(),
  };
  if (keys[e.key]) {
    e.preventDefault();
    keys[e.key]();
  }
}

document.addEventListener("DOMContentLoaded", () => {
  renderLegend();
  renderChart([]);
  $("rebuild").addEventListener("click", (e) => command("rebuild", {}, e.currentTarget));
  $("restart-platform").addEventListener("click", (e) => command("restart", { name: "platform" }, e.currentTarget));
  $("pause").addEventListener("click", pauseOrResume);
  $("switch").addEventListener("click", (e) => command("switch", { stack: $("stack-select").value }, e.currentTarget));
  $("log-source").addEventListener("change", (e) => { source = e.target.value; connect(); });
  $("follow").addEventListener("change", connect);
  $("log-filter").addEventListener("input", applyFilter);
  document.addEventListener("keydown", onKey);
  setInterval(tick, 1000);
  connect();
});

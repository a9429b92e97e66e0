// evdlm operator view: plain ES2020, no framework, no build step, nothing fetched from elsewhere.
//
// Live state: EventSource on api/v1/stream ("state" events), or, when the stream fails or a
// bearer token is in use (EventSource cannot send headers), api/v1/state polled every second.
// api/v1/history once a minute for the sparkline (extended by each state in between);
// api/v1/events?since=<seq> every few seconds for the recent-changes list.
// Every value from the server goes into the page as text (textContent), never as markup.
"use strict";

(() => {
  const TOKEN_KEY = "evdlm.token";
  const POLL_MS = 1000;
  const HISTORY_MS = 60_000;
  const EVENTS_MS = 2_000;
  const STREAM_RETRY_MS = 10_000;
  const STALE_MS = 5_000;
  const HOUR_S = 3600;
  const HISTORY_STEP_S = 5; // the server keeps at most 720 points an hour
  const EVENTS_KEPT = 60;
  const NEAR = 0.85; // share of a limit from which a headroom bar turns amber
  const SVG_NS = "http://www.w3.org/2000/svg";

  const $ = (id) => document.getElementById(id);

  const app = {
    token: readToken(),
    state: null,
    lastUpdateMs: 0,
    history: [],
    lastSeq: null,
    events: [],
    stream: null,
    polling: false,
    pollGeneration: 0, // a poll in flight from an earlier start/stop must not chain on
    pollTimer: null,
    streamOpenedMs: 0,
    eventsLoading: false,
    eventsLoadedMs: 0,
    treeSignature: "",
    treeNodes: new Map(),
    groups: new Map(),
    rows: new Map(),
  };

  // ------------------------------------------------------------------ helpers

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    setAttrs(node, attrs);
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG_NS, tag);
    setAttrs(node, attrs);
    return node;
  }

  function setAttrs(node, attrs) {
    for (const [key, value] of Object.entries(attrs)) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
  }

  function setText(node, text) {
    const value = String(text);
    if (node.textContent !== value) node.textContent = value;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const round = (v, digits) => Number(v.toFixed(digits)).toString();
  const fmtKw = (w) => (isNum(w) ? `${(w / 1000).toFixed(1)} kW` : "—");
  const fmtA = (a) => (isNum(a) ? `${round(a, 1)} A` : "—");

  function fmtQuantity(value, unit) {
    if (!isNum(value)) return "—";
    return unit === "W" ? (value / 1000).toFixed(1) : round(value, 1);
  }

  function fmtClock(state) {
    const date = state.time ? new Date(state.time) : new Date(state.now_s * 1000);
    if (Number.isNaN(date.getTime())) return String(state.time ?? "—");
    return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
  }

  function level(load, limit) {
    if (!isNum(load) || !isNum(limit)) return "unknown";
    if (load > limit + 1e-9) return "over";
    if (limit <= 0) return load > 0 ? "over" : "ok";
    return load / limit >= NEAR ? "near" : "ok";
  }

  // ------------------------------------------------------------------ token and fetches

  function readToken() {
    const url = new URL(window.location.href);
    const given = url.searchParams.get("token");
    if (given) {
      try {
        window.localStorage.setItem(TOKEN_KEY, given);
      } catch (_) {
        /* storage disabled: the token lives in this page only */
      }
      url.searchParams.delete("token"); // out of the address bar, the history and screenshots
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
      return given;
    }
    try {
      return window.localStorage.getItem(TOKEN_KEY) || null;
    } catch (_) {
      return null;
    }
  }

  class HttpError extends Error {
    constructor(status, text) {
      super(`HTTP ${status}${text ? `: ${text}` : ""}`);
      this.status = status;
    }
  }

  async function fetchJson(path) {
    const headers = { Accept: "application/json" };
    if (app.token) headers.Authorization = `Bearer ${app.token}`;
    const response = await fetch(`api/v1/${path}`, { headers, cache: "no-store" });
    if (!response.ok) {
      let text = "";
      try {
        text = (await response.json()).error || "";
      } catch (_) {
        /* not JSON */
      }
      if (response.status === 401) needToken(text);
      throw new HttpError(response.status, text);
    }
    return response.json();
  }

  function needToken(reason) {
    const banner = $("banner");
    setText($("banner-text"), app.token
      ? `The server refused the token (${reason || "401"}). Enter the current one.`
      : "This evdlm asks for a bearer token. Enter it (or open the page with ?token=…).");
    $("token-form").hidden = false;
    banner.hidden = false;
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    try {
      window.localStorage.setItem(TOKEN_KEY, value);
    } catch (_) {
      /* kept in the page only */
    }
    app.token = value;
    $("banner").hidden = true;
    stopStream();
    startPolling();
    loadHistory();
    loadEvents();
  });

  // ------------------------------------------------------------------ live state: stream, else polling

  function setLink(kind, text) {
    const link = $("link");
    if (link.dataset.state !== kind) link.dataset.state = kind;
    setText($("link-text"), text);
  }

  function startStream() {
    if (app.token || typeof window.EventSource !== "function") {
      startPolling();
      return;
    }
    stopStream();
    const stream = new EventSource("api/v1/stream");
    app.stream = stream;
    app.streamOpenedMs = Date.now();
    stream.addEventListener("state", (event) => {
      let state;
      try {
        state = JSON.parse(event.data);
      } catch (_) {
        return;
      }
      stopPolling();
      setLink("live", "live");
      applyState(state);
    });
    stream.onerror = () => {
      // The browser would retry on its own; poll meanwhile and try the stream again later.
      stopStream();
      startPolling();
      window.setTimeout(() => {
        if (!app.stream && !app.token) startStream();
      }, STREAM_RETRY_MS);
    };
  }

  function stopStream() {
    if (app.stream) {
      app.stream.onerror = null;
      app.stream.close();
      app.stream = null;
    }
  }

  function startPolling() {
    if (app.polling) return;
    app.polling = true;
    app.pollGeneration += 1;
    pollOnce(app.pollGeneration);
  }

  function stopPolling() {
    app.polling = false;
    app.pollGeneration += 1;
    if (app.pollTimer !== null) window.clearTimeout(app.pollTimer);
    app.pollTimer = null;
  }

  async function pollOnce(generation) {
    app.pollTimer = null;
    const started = performance.now();
    const current = () => app.polling && generation === app.pollGeneration;
    try {
      const state = await fetchJson("state");
      if (!current()) return;
      setLink("poll", app.token ? "live (polling, token)" : "live (polling)");
      applyState(state);
    } catch (error) {
      if (!current()) return;
      setLink("down", error instanceof HttpError && error.status === 401 ? "token needed" : "no connection");
    }
    if (current()) {
      const wait = Math.max(100, POLL_MS - (performance.now() - started));
      app.pollTimer = window.setTimeout(() => pollOnce(generation), wait);
    }
  }

  function applyState(state) {
    if (!state || typeof state !== "object") return;
    // The age shown is the controller's: a poll that brings the same cycle again is no news.
    if (!app.state || app.state.cycle !== state.cycle) {
      app.lastUpdateMs = Date.now();
      if (Date.now() - app.eventsLoadedMs > 1_000) loadEvents(); // a new cycle may bring changes
    }
    app.state = state;
    if (Date.now() - app.lastUpdateMs <= STALE_MS) document.body.classList.remove("is-stale");
    const banner = $("banner");
    if (!banner.hidden && !$("token-form").hidden) banner.hidden = true;
    renderHeader(state);
    renderGrid(state);
    renderDr(state);
    renderMoney(state);
    renderDevices(state.devices || []);
    renderTree(state.nodes || [], state.evses || []);
    renderEvses(state.nodes || [], state.evses || []);
    extendHistory(state);
  }

  window.setInterval(() => {
    // A stream that is open but silent (a buffering proxy, a stalled server): poll beside it
    // until it speaks again.
    const heard = Math.max(app.lastUpdateMs, app.streamOpenedMs);
    if (app.stream && !app.polling && Date.now() - heard > 3_000) startPolling();
    if (!app.lastUpdateMs) return;
    const age = Date.now() - app.lastUpdateMs;
    const stale = age > STALE_MS;
    document.body.classList.toggle("is-stale", stale);
    if (stale) setText($("updated"), describeCycle(app.state));
  }, 1000);

  // ------------------------------------------------------------------ header, grid, DR, devices

  function describeCycle(state) {
    const age = Date.now() - app.lastUpdateMs;
    const text = `cycle ${state.cycle} · ${fmtClock(state)}`;
    return age > STALE_MS ? `${text} (no new cycle for ${Math.round(age / 1000)} s)` : text;
  }

  function renderHeader(state) {
    setText($("site"), state.site || "—");
    document.title = `evdlm · ${state.site || "operator view"}`;
    setText($("time"), fmtClock(state));
    setText($("solver"), state.solver || "—");
    const status = $("status");
    setText(status, state.status || "—");
    status.className = `pill ${state.status === "ok" ? "pill-good" : "pill-warn"}`;
    setText($("cycle-ms"), isNum(state.cycle_ms) ? `${state.cycle_ms.toFixed(1)} ms` : "—");
    const updated = $("updated");
    setText(updated, describeCycle(state));
    updated.dataset.cycle = String(state.cycle);
  }

  function renderGrid(state) {
    const grid = state.grid || {};
    setText($("import-now"), fmtKw(grid.import_w));
    setText($("import-limit"), fmtKw(grid.import_limit_w));
    setText($("limit-source"), grid.limit_source || "—");
    $("fallback").hidden = !grid.fallback;
    const fill = $("import-fill");
    const ratio = isNum(grid.import_w) && isNum(grid.import_limit_w) && grid.import_limit_w > 0
      ? Math.max(0, grid.import_w / grid.import_limit_w) : 0;
    fill.style.width = `${Math.min(ratio, 1) * 100}%`;
    fill.dataset.level = level(grid.import_w, grid.import_limit_w);
  }

  function renderDr(state) {
    const dr = state.dr || {};
    const node = $("dr-state");
    setText(node, dr.active ? "Active" : "No event in force");
    node.dataset.active = dr.active ? "true" : "false";
    // The contract's event_id / limit_w, or a list of events and the import limit they set.
    const ids = dr.event_id ? [dr.event_id] : Array.isArray(dr.event_ids) ? dr.event_ids : [];
    setText($("dr-event"), ids.length ? ids.join(", ") : "—");
    setText($("dr-limit"), fmtKw(isNum(dr.limit_w) ? dr.limit_w : dr.import_limit_w));
    $("dr-mode-row").hidden = !dr.mode;
    setText($("dr-mode"), dr.mode || "");
    const notes = $("notes");
    const list = Array.isArray(state.notes) ? state.notes : [];
    notes.replaceChildren(...list.map((note) => el("li", { text: note })));
    notes.hidden = list.length === 0;
  }

  function fmtMoney(value, digits = 2) {
    return isNum(value) ? value.toFixed(digits) : "—";
  }

  function showRow(id, shown) {
    $(id).hidden = !shown;
    return shown;
  }

  // The month's money: the prices in force and the energy cost (with tariffs), the demand
  // window (with demand:). The card stays hidden on a site that has neither.
  function renderMoney(state) {
    const cost = state.cost || null;
    const demand = state.demand || null;
    $("money").hidden = !cost && !demand;
    setText($("money-month"), cost && cost.month ? cost.month : "");
    if (showRow("price-row", Boolean(cost) && isNum(cost.import_price_per_kwh))) {
      setText($("price-now"), `${fmtMoney(cost.import_price_per_kwh, 4)} /kWh import · ${fmtMoney(cost.export_price_per_kwh, 4)} export`);
    }
    if (showRow("cost-row", Boolean(cost))) {
      setText($("cost-net"), `${fmtMoney(cost.net_cost)} (${fmtQuantity(cost.import_kwh, "kWh")} kWh imported)`);
    }
    if (showRow("cost-ev-row", Boolean(cost))) {
      const perKwh = isNum(cost.cost_per_kwh_delivered) ? ` · ${fmtMoney(cost.cost_per_kwh_delivered, 4)} /kWh` : "";
      setText($("cost-ev"), `${fmtQuantity(cost.ev_kwh, "kWh")} kWh for ${fmtMoney(cost.ev_cost)}${perKwh}`);
    }
    if (showRow("demand-peak-row", Boolean(demand))) {
      const at = demand.month_peak_at ? new Date(demand.month_peak_at) : null;
      const when = at && !Number.isNaN(at.getTime())
        ? ` on ${at.toLocaleDateString([], { day: "numeric", month: "short" })} ${at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hour12: false })}`
        : "";
      setText($("demand-peak"), `${fmtKw(demand.month_peak_w)}${when}`);
    }
    if (showRow("demand-target-row", Boolean(demand))) {
      setText($("demand-target"), `${fmtKw(demand.target_w)} · ${fmtKw(demand.window_limit_w)}`);
    }
    if (showRow("demand-charge-row", Boolean(demand))) {
      setText($("demand-charge"), fmtMoney(demand.charge_estimate));
    }
    const raised = $("demand-raised");
    const reason = demand && demand.raised_because ? demand.raised_because : "";
    setText(raised, reason);
    raised.hidden = !reason;
  }

  function renderDevices(devices) {
    const list = $("devices");
    const items = devices.map((device) => {
      // ok; stale (amber); suspect, invalid, missing (red). A device the cycle treated as stale
      // (``stale: true``) is amber whatever its last reading said.
      const known = ["ok", "stale", "suspect", "invalid", "missing"];
      let quality = known.includes(device.quality) ? device.quality : "unknown";
      if (device.stale === true && quality === "ok") quality = "stale";
      const pills = el("span", { class: "device-pills" });
      pills.append(el("span", { class: `pill q-pill q-pill-${quality}`, "data-field": "quality", text: device.quality || "?" }));
      if (device.stale === true && device.quality !== "stale") {
        pills.append(el("span", { class: "pill q-pill q-pill-stale", text: "stale" }));
      }
      return el(
        "li",
        { class: `device q-${quality}`, "data-device": device.name, "data-quality": quality },
        el("span", { class: "device-name", text: device.name }),
        pills,
        el("span", { class: "device-detail", text: device.detail || "" }),
        el("span", { class: "device-power", text: isNum(device.power_w) ? fmtKw(device.power_w) : "" }),
      );
    });
    if (items.length === 0) items.push(el("li", { class: "muted", text: "no devices" }));
    list.replaceChildren(...items);
  }

  // ------------------------------------------------------------------ the circuit tree

  // A node's bars: one per phase (in the node's unit, A by default) and one for a power limit.
  function nodeParts(node) {
    const parts = (node.phases || []).map((p) => ({ ...p, key: p.phase, label: p.phase, unit: node.unit || "A" }));
    if (node.power && typeof node.power === "object") {
      parts.push({ ...node.power, key: "P", label: "P", unit: node.power.unit || "W" });
    }
    return parts;
  }

  function renderTree(nodes, evses) {
    const signature = nodes
      .map((n) => `${n.name}<${n.parent ?? ""}:${nodeParts(n).map((p) => p.key).join(",")}`)
      .join("|");
    if (signature !== app.treeSignature) buildTree(nodes);
    app.treeSignature = signature;
    // EVSEs below each node (anywhere in its subtree), and how many of them draw.
    const parents = new Map(nodes.map((n) => [n.name, n.parent ?? null]));
    const counts = new Map();
    for (const evse of evses) {
      const drawing = isNum(evse.draw_w) && evse.draw_w > 50;
      for (let name = evse.node, hops = 0; name !== null && name !== undefined && hops < 64; hops += 1) {
        const count = counts.get(name) || { all: 0, drawing: 0 };
        count.all += 1;
        if (drawing) count.drawing += 1;
        counts.set(name, count);
        name = parents.get(name);
      }
    }
    for (const node of nodes) {
      const view = app.treeNodes.get(node.name);
      if (view) updateTreeNode(view, node, counts.get(node.name));
    }
  }

  function buildTree(nodes) {
    const root = $("tree");
    app.treeNodes.clear();
    const items = new Map();
    const tops = [];
    for (const node of nodes) {
      const phases = new Map();
      const phaseList = el("div", { class: "phases" });
      for (const phase of nodeParts(node)) {
        const bar = svg("svg", { class: "bar", viewBox: "0 0 100 8", preserveAspectRatio: "none", "aria-hidden": "true" });
        const back = svg("rect", { class: "bar-back", x: 0, y: 0, width: 100, height: 8, rx: 1.5 });
        const fill = svg("rect", { class: "bar-fill", x: 0, y: 0, width: 0, height: 8, rx: 1.5 });
        bar.append(back, fill);
        const value = el("span", { class: "phase-value" });
        const row = el(
          "div",
          { class: "phase", "data-phase": phase.key },
          el("span", { class: "phase-label", text: phase.label, title: phase.unit === "W" ? "power" : `phase ${phase.label}` }),
          bar,
          value,
        );
        phaseList.append(row);
        phases.set(phase.key, { row, fill, value });
      }
      const binding = el("span", { class: "badge-binding", text: "binding", hidden: true });
      const meta = el("span", { class: "node-meta" });
      const box = el(
        "div",
        { class: "node-box" },
        el("div", { class: "node-head" }, el("span", { class: "node-name", text: node.name }), binding, meta),
        phaseList,
      );
      const children = el("ul", { class: "children" });
      const item = el("li", { class: "node", "data-node": node.name }, box, children);
      items.set(node.name, { item, children });
      app.treeNodes.set(node.name, { item, phases, binding, meta });
      const parent = node.parent !== null && node.parent !== undefined ? items.get(node.parent) : undefined;
      if (parent) parent.children.append(item);
      else tops.push(item);
    }
    for (const { item, children } of items.values()) {
      if (children.childElementCount === 0) children.remove();
      else item.classList.add("has-children");
    }
    root.replaceChildren(...tops);
  }

  function updateTreeNode(view, node, count) {
    view.binding.hidden = !node.binding;
    view.item.classList.toggle("is-binding", Boolean(node.binding));
    setText(view.meta, count ? `${count.all} EVSE${count.all === 1 ? "" : "s"} · ${count.drawing} drawing` : "");
    let worst = "ok";
    const rank = { unknown: 0, ok: 1, near: 2, over: 3 };
    for (const phase of nodeParts(node)) {
      const part = view.phases.get(phase.key);
      if (!part) continue;
      const state = level(phase.load, phase.limit);
      if (rank[state] > rank[worst]) worst = state;
      const ratio = isNum(phase.load) && isNum(phase.limit) && phase.limit > 0 ? phase.load / phase.limit : 0;
      part.fill.setAttribute("width", String(Math.max(0, Math.min(ratio, 1)) * 100));
      part.row.dataset.level = state;
      const unit = phase.unit === "W" ? "kW" : "A";
      setText(part.value, `${fmtQuantity(phase.load, phase.unit)} / ${fmtQuantity(phase.limit, phase.unit)} ${unit}`);
      const headroom = isNum(phase.headroom) ? `${fmtQuantity(phase.headroom, phase.unit)} ${unit} headroom` : "headroom unknown";
      part.row.title = `${node.name} ${phase.label}: ${part.value.textContent}, ${headroom}`;
    }
    if (node.overloaded === true) worst = "over";
    view.item.dataset.level = worst;
  }

  // ------------------------------------------------------------------ the EVSE table, grouped by node

  function renderEvses(nodes, evses) {
    const table = $("evses");
    const order = nodes.map((n) => n.name);
    const byNode = new Map(order.map((name) => [name, []]));
    for (const evse of evses) {
      if (!byNode.has(evse.node)) byNode.set(evse.node, []);
      byNode.get(evse.node).push(evse);
    }
    const seenGroups = new Set();
    const seenRows = new Set();
    let anchor = table.tHead;
    for (const [name, list] of byNode) {
      if (list.length === 0) continue;
      seenGroups.add(name);
      let group = app.groups.get(name);
      if (!group) {
        const title = el("span", { class: "group-name", text: name });
        const meta = el("span", { class: "group-meta" });
        const body = el(
          "tbody",
          { "data-group": name },
          el("tr", { class: "group" }, el("th", { scope: "rowgroup", colspan: 6 }, title, meta)),
        );
        group = { body, meta };
        app.groups.set(name, group);
      }
      if (anchor.nextElementSibling !== group.body) anchor.after(group.body);
      anchor = group.body;
      const drawn = list.reduce((sum, e) => sum + (isNum(e.draw_w) ? e.draw_w : 0), 0);
      setText(group.meta, ` · ${list.length} EVSE${list.length === 1 ? "" : "s"} · ${fmtKw(drawn)} drawn`);
      let previous = group.body.firstElementChild;
      for (const evse of list) {
        const key = `${evse.charger}/${evse.evse}`;
        seenRows.add(key);
        let row = app.rows.get(key);
        if (!row) {
          row = makeRow(key);
          app.rows.set(key, row);
        }
        if (previous.nextElementSibling !== row.tr) previous.after(row.tr);
        previous = row.tr;
        updateRow(row, evse);
      }
    }
    for (const [key, row] of app.rows) {
      if (!seenRows.has(key)) {
        row.tr.remove();
        app.rows.delete(key);
      }
    }
    for (const [name, group] of app.groups) {
      if (!seenGroups.has(name)) {
        group.body.remove();
        app.groups.delete(name);
      }
    }
    setText($("evse-count"), `${evses.length} EVSE${evses.length === 1 ? "" : "s"}`);
  }

  function makeRow(key) {
    // data-label: the column's name, shown beside each value where the table stacks (phones).
    const cells = {
      evse: el("th", { scope: "row", "data-field": "evse", text: key }),
      mode: el("td", { "data-field": "mode", "data-label": "Mode" }),
      limit: el("td", { "data-field": "limit", "data-label": "Limit", class: "num" }),
      draw: el("td", { "data-field": "draw", "data-label": "Draw", class: "num" }),
      binding: el("td", { "data-field": "binding", "data-label": "Binding" }),
      reason: el("td", { "data-field": "reason", "data-label": "Reason" }),
    };
    const kind = el("span", { class: "kind" });
    const source = el("span", { class: "source" });
    cells.binding.append(kind, source);
    const modeTag = el("span", { class: "mode" });
    cells.mode.append(modeTag);
    const tr = el("tr", { "data-evse": key }, ...Object.values(cells));
    return { tr, cells, kind, source, modeTag, limitText: null };
  }

  function updateRow(row, evse) {
    const mode = evse.mode || "—";
    setText(row.modeTag, mode);
    row.modeTag.dataset.mode = mode;
    const limitText = isNum(evse.limit_a) ? `${fmtA(evse.limit_a)} · ${fmtKw(evse.limit_w)}` : fmtKw(evse.limit_w);
    if (row.limitText !== null && row.limitText !== limitText) flash(row.cells.limit);
    row.limitText = limitText;
    setText(row.cells.limit, limitText);
    setText(row.cells.draw, fmtKw(evse.draw_w));
    const binding = evse.binding || {};
    const kind = binding.kind || "none";
    const previous = row.cells.binding.dataset.kind;
    row.cells.binding.dataset.kind = kind;
    setText(row.kind, kind.replace(/_/g, " "));
    const sourceText = binding.source || (kind === "none" ? "nothing binds" : "—");
    if (previous !== undefined && previous !== kind) flash(row.cells.binding); // a new kind, not a new figure
    setText(row.source, sourceText);
    setText(row.cells.reason, evse.reason || "");
  }

  function flash(cell) {
    cell.classList.remove("changed");
    void cell.offsetWidth; // restart the animation
    cell.classList.add("changed");
  }

  // ------------------------------------------------------------------ the last hour: import against limit

  async function loadHistory() {
    try {
      const data = await fetchJson("history");
      if (Array.isArray(data.points)) {
        app.history = data.points.filter((p) => p && isNum(p.now_s));
        renderSparkline();
      }
    } catch (_) {
      /* shown by the connection state; the next minute tries again */
    }
  }

  function extendHistory(state) {
    if (!isNum(state.now_s) || !state.grid) return;
    const last = app.history[app.history.length - 1];
    if (last && state.now_s - last.now_s < HISTORY_STEP_S) return;
    app.history.push({ now_s: state.now_s, import_w: state.grid.import_w, limit_w: state.grid.import_limit_w });
    const oldest = state.now_s - HOUR_S;
    while (app.history.length && app.history[0].now_s < oldest) app.history.shift();
    renderSparkline();
  }

  function renderSparkline() {
    const chart = $("sparkline");
    const W = 600;
    const H = 150;
    const left = 44;
    const top = 8;
    const bottom = 22;
    const plotW = W - left - 6;
    const plotH = H - top - bottom;
    const points = app.history;
    const parts = [chart.querySelector("title")];
    if (points.length === 0) {
      parts.push(svg("text", { x: W / 2, y: H / 2, class: "spark-empty", "text-anchor": "middle", text: "no history yet" }));
      chart.replaceChildren(...parts);
      return;
    }
    const end = points[points.length - 1].now_s;
    const start = end - HOUR_S;
    let max = 1000;
    for (const p of points) {
      if (isNum(p.import_w)) max = Math.max(max, p.import_w);
      if (isNum(p.limit_w)) max = Math.max(max, p.limit_w);
    }
    const step = niceStep((max * 1.1) / 4);
    max = Math.ceil((max * 1.1) / step) * step;
    const x = (t) => left + ((t - start) / HOUR_S) * plotW;
    const y = (w) => top + plotH - (Math.max(0, w) / max) * plotH;
    for (let v = 0; v <= max + 1e-6; v += step) {
      parts.push(svg("line", { class: "spark-grid", x1: left, x2: left + plotW, y1: y(v), y2: y(v) }));
      parts.push(svg("text", { class: "spark-label", x: left - 6, y: y(v) + 4, "text-anchor": "end", text: `${round(v / 1000, 1)}` }));
    }
    parts.push(svg("text", { class: "spark-label", x: 4, y: top + 10, text: "kW" }));
    for (const [minutes, anchor] of [[60, "start"], [30, "middle"], [0, "end"]]) {
      const label = minutes === 0 ? "now" : `−${minutes} min`;
      parts.push(svg("text", { class: "spark-label", x: x(end - minutes * 60), y: H - 6, "text-anchor": anchor, text: label }));
    }
    // The limit as steps (it holds until it changes); the import as lines, broken where unknown.
    let limitPath = "";
    let previousLimit = null;
    for (const p of points) {
      if (p.now_s < start || !isNum(p.limit_w)) continue;
      if (previousLimit === null) limitPath += `${x(p.now_s).toFixed(1)},${y(p.limit_w).toFixed(1)} `;
      else limitPath += `${x(p.now_s).toFixed(1)},${y(previousLimit).toFixed(1)} ${x(p.now_s).toFixed(1)},${y(p.limit_w).toFixed(1)} `;
      previousLimit = p.limit_w;
    }
    if (limitPath) parts.push(svg("polyline", { class: "spark-limit", points: limitPath.trim() }));
    let segment = [];
    const segments = [];
    for (const p of points) {
      if (p.now_s < start) continue;
      if (isNum(p.import_w)) segment.push(`${x(p.now_s).toFixed(1)},${y(p.import_w).toFixed(1)}`);
      else if (segment.length) {
        segments.push(segment);
        segment = [];
      }
    }
    if (segment.length) segments.push(segment);
    for (const s of segments) {
      if (s.length === 1) {
        const [cx, cy] = s[0].split(",");
        parts.push(svg("circle", { class: "spark-dot", cx, cy, r: 2 }));
      } else {
        parts.push(svg("polyline", { class: "spark-import", points: s.join(" ") }));
      }
    }
    chart.replaceChildren(...parts);
    const last = points[points.length - 1];
    chart.setAttribute("aria-label", `Last hour: import now ${fmtKw(last.import_w)}, limit ${fmtKw(last.limit_w)}`);
  }

  function niceStep(raw) {
    const power = 10 ** Math.floor(Math.log10(raw));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * power >= raw) return m * power;
    return 10 * power;
  }

  // ------------------------------------------------------------------ recent changes

  async function loadEvents() {
    if (app.eventsLoading) return;
    app.eventsLoading = true;
    app.eventsLoadedMs = Date.now();
    try {
      const query = app.lastSeq === null ? "events" : `events?since=${encodeURIComponent(app.lastSeq)}`;
      const data = await fetchJson(query);
      const fresh = Array.isArray(data.events) ? data.events : [];
      if (isNum(data.last_seq)) app.lastSeq = data.last_seq;
      if (fresh.length === 0 && app.events.length > 0) return;
      const known = new Set(app.events.map((e) => e.seq));
      const added = fresh.filter((e) => !known.has(e.seq));
      app.events = added.reverse().concat(app.events).slice(0, EVENTS_KEPT);
      renderEvents();
    } catch (_) {
      /* tried again shortly */
    } finally {
      app.eventsLoading = false;
    }
  }

  function renderEvents() {
    const list = $("events");
    if (app.events.length === 0) {
      list.replaceChildren(el("li", { class: "muted", text: "no changes yet" }));
      return;
    }
    list.replaceChildren(
      ...app.events.map((event) => {
        const date = event.time ? new Date(event.time) : new Date(event.now_s * 1000);
        const when = Number.isNaN(date.getTime())
          ? ""
          : date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
        return el(
          "li",
          { class: "event", "data-kind": event.kind || "" },
          el("time", { datetime: event.time || "", text: when }),
          el("span", { class: "event-subject", text: event.subject || "" }),
          el("span", { class: "event-text", text: event.text || "" }),
        );
      }),
    );
  }

  // ------------------------------------------------------------------ start

  startStream();
  loadHistory();
  loadEvents();
  window.setInterval(loadHistory, HISTORY_MS);
  window.setInterval(loadEvents, EVENTS_MS);
})();

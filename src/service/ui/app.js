// The call-list page. It holds no lead data until the service accepts its
// token (when the service has one): the token is asked for, kept in this
// tab's sessionStorage, and sent on every call. Everything is rendered with
// textContent, never as markup, so no lead field can inject any.
"use strict";

const KEY = "leadscore.token";
const REFRESH_MS = 5000;
let selected = null;
let halfLife = null;
let listAt = null;
let timer = null;
let generation = 0;

const $ = (id) => document.getElementById(id);

class Unauthorized extends Error {}

function token() {
  return sessionStorage.getItem(KEY);
}

// `/ui#token=…` (what `leadscore demo` prints): the token goes to the
// session and leaves the address bar, the history and any bookmark. A
// fragment is never sent to the server, so it is in no access log either.
function takeFragmentToken() {
  const m = /(?:^#|&)token=([^&]*)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem(KEY, decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
}

async function api(path) {
  const headers = {};
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  const r = await fetch(path, { headers, cache: "no-store", credentials: "omit" });
  if (r.status === 401) throw new Unauthorized(t ? "the token was refused" : "");
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null;
  }
  if (!r.ok) throw new Error((body && body.error) || "HTTP " + r.status);
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function setState(state, message) {
  document.body.dataset.state = state;
  $("status").textContent = message;
}

// Lead data is dropped from the page whenever the token is missing or refused.
function showLogin(error) {
  generation++;
  clearTimeout(timer);
  $("app").hidden = true;
  $("leads").tBodies[0].replaceChildren();
  $("breakdown").hidden = true;
  selected = null;
  $("login").hidden = false;
  $("login-error").hidden = !error;
  $("login-error").textContent = error || "";
  setState("login", "token needed");
  $("token").focus();
}

function span(micros) {
  let s = Math.round(Math.abs(micros) / 1e6);
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  if (d) return d + "d " + h + "h";
  if (h) return h + "h " + m + "m";
  return m + "m";
}

function micros(iso) {
  return Date.parse(iso) * 1000;
}

function followUp(lead, at) {
  if (!lead.follow_up_by) return "—";
  if (!at) return "due " + lead.follow_up_by;
  const d = micros(lead.follow_up_by) - micros(at);
  return lead.overdue ? "overdue by " + span(d) : "due in " + span(d);
}

function query() {
  const p = new URLSearchParams();
  p.set("stage", $("f-stage").value);
  if ($("f-band").value) p.set("band", $("f-band").value);
  if ($("f-overdue").checked) p.set("sla", "overdue");
  p.set("order", $("f-order").value);
  p.set("limit", "50");
  return "/leads?" + p.toString();
}

// The band filter offers the model's bands.
function offerBands(bands) {
  const select = $("f-band");
  const have = [...select.options].slice(1).map((o) => o.value);
  if (have.join() === bands.join()) return;
  const keep = select.value;
  select.replaceChildren(el("option", "any"), ...bands.slice().reverse().map((b) => el("option", b)));
  select.options[0].value = "";
  select.value = bands.includes(keep) ? keep : "";
}

function renderList(list) {
  halfLife = list.half_life_seconds;
  listAt = list.at;
  offerBands(list.bands);
  const body = $("leads").tBodies[0];
  const rows = list.leads.map((lead) => {
    const tr = el("tr");
    tr.dataset.leadId = lead.lead_id;
    if (lead.overdue) tr.classList.add("overdue");
    if (lead.lead_id === selected) tr.classList.add("selected");
    tr.append(
      el("td", lead.lead_id, "lead-id"),
      el("td", lead.stage, "stage"),
      el("td", null, "band"),
      el("td", lead.total.toFixed(1), "num score"),
      el("td", lead.route || "—", "route"),
      el("td", followUp(lead, list.at), "follow-up"),
    );
    tr.children[2].append(el("span", lead.band, "band band-" + lead.band));
    if (lead.follow_up_by) tr.children[5].title = lead.follow_up_by;
    tr.addEventListener("click", () => select(lead.lead_id));
    return tr;
  });
  body.replaceChildren(...rows);
  $("as-of").textContent = list.at
    ? "Scores as of " + list.at + " (event time), model " + list.model_version
    : "No events yet.";
  setState("list", "updated " + new Date().toLocaleTimeString() + " · " + rows.length + " leads");
}

function renderBreakdown(x) {
  $("b-title").textContent = x.lead_id;
  const summary = [
    ["Stage", x.stage + (x.stage_entered ? " since " + x.stage_entered : "")],
    ["Score", x.score.total.toFixed(2) + " = fit " + x.score.fit.toFixed(2) + " + engagement " + x.score.engagement.toFixed(2)],
    ["Band", x.band],
    ["As of", x.at],
    ["Requalification", x.requalification_deadline || "—"],
    ["Next timer", x.next_timer || "—"],
  ];
  $("b-summary").replaceChildren(...summary.flatMap(([k, v]) => [el("dt", k), el("dd", v)]));
  const fit = x.fit.filter((f) => f.matched);
  $("b-fit").tBodies[0].replaceChildren(
    ...(fit.length ? fit : [null]).map((f) => {
      const tr = el("tr");
      if (!f) {
        tr.append(el("td", "no fit rule matches"));
        return tr;
      }
      tr.className = "fit-rule";
      tr.append(el("td", f.rule), el("td", f.field), el("td", f.value === null ? "—" : f.value), el("td", f.points, "num"));
      return tr;
    }),
  );
  const days = halfLife ? (halfLife / 86400).toFixed(halfLife % 86400 ? 2 : 0) : null;
  $("b-decay").textContent = days
    ? "Each rule's points decayed to " + x.at + ": points × 2^(−Δt / " + days + " days)."
    : "This model does not decay engagement.";
  const eng = x.engagement.filter((e) => e.points !== 0 || e.occurrences);
  $("b-engagement").tBodies[0].replaceChildren(
    ...(eng.length ? eng : [null]).map((e) => {
      const tr = el("tr");
      if (!e) {
        tr.append(el("td", "no engagement scored"));
        return tr;
      }
      tr.className = "engagement-rule";
      tr.append(el("td", e.rule), el("td", e.event), el("td", e.occurrences ?? "", "num"), el("td", e.points.toFixed(2), "num"));
      return tr;
    }),
  );
  const criteria = Object.entries(x.criteria || {});
  $("b-criteria").replaceChildren(
    ...(criteria.length ? criteria.map(([k, v]) => el("li", k + ": " + (v ? "yes" : "not yet"))) : [el("li", "none required")]),
  );
  $("breakdown").hidden = false;
  $("breakdown").dataset.leadId = x.lead_id;
}

// The breakdown at the list's time, so that its scores are the list's.
async function loadBreakdown(id, gen) {
  const at = listAt ? "?at=" + encodeURIComponent(listAt) : "";
  const x = await api("/leads/" + encodeURIComponent(id) + at);
  if (gen === generation && id === selected) renderBreakdown(x);
}

function select(id) {
  selected = id;
  for (const tr of $("leads").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.leadId === id);
  loadBreakdown(id, generation).catch(failed);
}

function failed(e) {
  if (e instanceof Unauthorized) {
    if (token()) sessionStorage.removeItem(KEY);
    showLogin(e.message);
  } else {
    setState(document.body.dataset.state === "list" ? "list" : "error", "update failed: " + e.message);
  }
}

async function refresh() {
  const gen = generation;
  clearTimeout(timer);
  try {
    const list = await api(query());
    if (gen !== generation) return;
    $("login").hidden = true;
    $("app").hidden = false;
    renderList(list);
    if (selected) await loadBreakdown(selected, gen);
  } catch (e) {
    if (gen === generation) failed(e);
    if (e instanceof Unauthorized) return;
  }
  if (gen === generation) timer = setTimeout(refresh, REFRESH_MS);
}

function start() {
  takeFragmentToken();
  window.addEventListener("hashchange", () => {
    takeFragmentToken();
    generation++;
    refresh();
  });
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(KEY, $("token").value.trim());
    $("token").value = "";
    generation++;
    refresh();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY);
    showLogin("");
  });
  for (const id of ["f-stage", "f-band", "f-overdue", "f-order"]) {
    $(id).addEventListener("change", () => {
      generation++;
      refresh();
    });
  }
  refresh();
}

document.addEventListener("DOMContentLoaded", start);

// profilo profile inspector: vanilla JS over the JSON API (no libraries, no network but the proxy).
// The API key lives in sessionStorage and goes out as "Authorization: Bearer"; every value from
// the API is put in the page with textContent (facts come from users: never parsed as HTML).
"use strict";

const KEY_STORE = "profilo.apiKey";
const state = { collection: null, session: null, pending: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function status(text, kind) {
  const s = $("status");
  s.textContent = text || "";
  s.className = "status" + (kind ? " " + kind : "");
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORE);
  if (key) headers.Authorization = "Bearer " + key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const message = (data.error && data.error.message) || res.status + " " + res.statusText;
    const err = new Error(message);
    err.status = res.status;
    throw err;
  }
  return data;
}

function scoped(path) {
  if (state.collection === null) return path;
  const sep = path.includes("?") ? "&" : "?";
  return path + sep + "collection_id=" + encodeURIComponent(state.collection);
}

function fail(err) {
  if (err.status === 401) status("Enter an API key: " + err.message, "error");
  else status(err.message, "error");
}

function valueText(value) {
  return Array.isArray(value) ? value.join(", ") : String(value);
}

// ---- collections -------------------------------------------------------------------------
async function loadCollections() {
  const list = $("collection-list");
  try {
    const data = await api("GET", "/v1/collections");
    list.replaceChildren();
    for (const c of data.data) {
      const label = c.collection_id === null ? "(account-wide)" : c.collection_id;
      const item = el("li", {},
        el("button", {
          type: "button", class: "collection", "data-collection": label,
          onclick: () => openCollection(c.collection_id),
        }, label, el("small", {}, c.fact_count + " facts")));
      list.append(item);
    }
    if (!data.data.length) list.append(el("li", { class: "meta" }, "No facts yet."));
    if ($("status").classList.contains("error")) status("");  // the key works now
  } catch (err) {
    fail(err);
  }
}

async function openCollection(id) {
  state.collection = id;
  state.session = null;
  $("ask-log").replaceChildren();
  hidePreview();
  for (const b of document.querySelectorAll("button.collection")) {
    b.classList.toggle("active", b.dataset.collection === (id === null ? "(account-wide)" : id));
  }
  await refresh();
}

async function refresh() {
  try {
    const [profile, changes] = await Promise.all([
      api("GET", scoped("/v1/profile")),
      api("GET", scoped("/v1/profile/changes?limit=100")),
    ]);
    renderProfile(profile);
    renderTimeline(changes.changes);
  } catch (err) {
    fail(err);
  }
}

// ---- facts -------------------------------------------------------------------------------
function provenance(f) {
  const parts = [el("span", { class: "source" }, f.source || "unknown source")];
  if (f.generated_from_request_id) parts.push(el("code", {}, f.generated_from_request_id));
  if (f.session_id) parts.push(el("span", {}, "session " + f.session_id));
  parts.push(el("time", { datetime: f.updated_at }, "updated " + f.updated_at));
  if (f.expires_at) parts.push(el("time", { datetime: f.expires_at }, "expires " + f.expires_at));
  return el("td", { class: "prov" }, ...parts);
}

function confidence(f) {
  const pct = Math.round(f.confidence * 100);
  return el("td", { class: "conf" },
    el("meter", { min: "0", max: "1", value: String(f.confidence) }), " " + pct + "%");
}

function factRow(f) {
  const valueCell = el("td", { class: "value" }, valueText(f.value));
  const row = el("tr", { "data-key": f.key, "data-id": f.id },
    el("td", { class: "key" }, f.key, f.category ? el("small", {}, f.category) : null),
    valueCell, confidence(f), provenance(f),
    el("td", { class: "row-actions" },
      el("button", { type: "button", class: "edit", onclick: () => startEdit(f, valueCell) },
        "Edit"),
      el("button", { type: "button", class: "delete danger", onclick: () => previewDelete(f) },
        "Delete")));
  return row;
}

function renderProfile(p) {
  const label = p.collection_id === null ? "(account-wide)" : p.collection_id;
  $("profile-title").textContent = "Profile of " + label;
  const flat = Object.entries(p).filter(([k, v]) =>
    !["collection_id", "profile", "fact_count", "updated_at"].includes(k) && v !== null);
  $("profile-meta").textContent = p.fact_count + " facts · updated " + (p.updated_at || "never") +
    (flat.length ? " · " + flat.map(([k, v]) => k + ": " + valueText(v)).join(" · ") : "");
  for (const kind of ["static", "dynamic"]) {
    const body = $(kind + "-facts").querySelector("tbody");
    body.replaceChildren(...p.profile[kind].map(factRow));
    if (!p.profile[kind].length) {
      body.append(el("tr", {}, el("td", { colspan: "5", class: "meta" }, "none")));
    }
  }
}

function startEdit(f, cell) {
  const input = el("input", { class: "edit-value", value: valueText(f.value) });
  const form = el("form", { class: "inline", onsubmit: (e) => {
    e.preventDefault();
    previewEdit(f, input.value);
  } }, input, el("button", { type: "submit" }, "Preview"));
  cell.replaceChildren(form);
  input.focus();
}

// ---- dry-run preview, then apply ---------------------------------------------------------
function showPreview(title, lines, apply) {
  state.pending = apply;
  $("preview-title").textContent = title;
  $("preview-list").replaceChildren(...lines.map((l) => el("li", {}, l)));
  $("preview").hidden = false;
}

function hidePreview() {
  state.pending = null;
  $("preview").hidden = true;
}

async function previewEdit(f, value) {
  try {
    const body = { [f.key]: value, dry_run: true };
    const preview = await api("PATCH", scoped("/v1/profile"), body);
    const lines = preview.changes.map((c) =>
      c.action + " " + c.key + ": " + valueText(c.before) + " → " + valueText(c.after));
    showPreview("Preview: edit " + f.key, lines, async () => {
      const done = await api("PATCH", scoped("/v1/profile"), { [f.key]: value });
      status(done.message, "ok");
    });
  } catch (err) {
    fail(err);
  }
}

async function previewDelete(f) {
  try {
    const preview = await api("POST", scoped("/v1/profile/delete"),
      { fact_id: f.id, dry_run: true });
    const lines = preview.would_delete.map((d) => "delete " + d.key + ": " + valueText(d.value));
    showPreview("Preview: " + preview.message, lines, async () => {
      const done = await api("POST", scoped("/v1/profile/delete"), { fact_id: f.id });
      status(done.message, "ok");
    });
  } catch (err) {
    fail(err);
  }
}

async function applyPending() {
  const apply = state.pending;
  if (!apply) return;
  hidePreview();
  try {
    await apply();
    await refresh();
    await loadCollections();
  } catch (err) {
    fail(err);
  }
}

// ---- change log --------------------------------------------------------------------------
function renderTimeline(changes) {
  const items = changes.map((c) => {
    const lines = [];
    for (const a of c.added) lines.push(el("li", { class: "added" }, "+ " + a.key + ": " + valueText(a.value)));
    for (const u of c.updated) {
      lines.push(el("li", { class: "updated" }, "~ " + u.after.key + ": " +
        valueText(u.before.value) + " → " + valueText(u.after.value)));
    }
    for (const r of c.removed) lines.push(el("li", { class: "removed" }, "− " + r.key + ": " + valueText(r.value)));
    return el("li", { class: "change" },
      el("time", { datetime: c.created_at }, c.created_at),
      el("span", { class: "source" }, c.source || ""),
      c.request_id ? el("code", {}, c.request_id) : null,
      el("ul", {}, ...lines));
  });
  $("timeline").replaceChildren(...items);
  if (!items.length) $("timeline").append(el("li", { class: "meta" }, "No changes."));
}

// ---- dialectic ---------------------------------------------------------------------------
async function ask(question) {
  const log = $("ask-log");
  const entry = el("li", {}, el("p", { class: "q" }, question), el("p", { class: "a" }, "…"));
  log.append(entry);
  try {
    const body = { user_message: question };
    if (state.collection !== null) body.collection_id = state.collection;
    if (state.session) body.session_id = state.session;
    const answer = await api("POST", "/v1/profile/dialectic", body);
    state.session = answer.session_id;
    entry.querySelector(".a").textContent = answer.assistant_message;
    const used = answer.facts.map((f) => f.key).join(", ");
    entry.append(el("p", { class: "meta" }, "session " + answer.session_id +
      (used ? " · facts used: " + used : "")));
  } catch (err) {
    entry.querySelector(".a").textContent = "error: " + err.message;
    fail(err);
  }
}

// ---- wiring ------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORE, key);
    $("api-key").value = "";
    loadCollections();
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORE);
    status("Key forgotten.");
  });
  $("open-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const id = $("open-id").value.trim();
    openCollection(id || null);
  });
  $("preview-apply").addEventListener("click", applyPending);
  $("preview-cancel").addEventListener("click", hidePreview);
  $("ask-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("ask-input").value.trim();
    if (!q) return;
    $("ask-input").value = "";
    ask(q);
  });
  $("ask-new").addEventListener("click", () => {
    state.session = null;
    $("ask-log").replaceChildren();
  });
  document.body.dataset.ready = "1";
  loadCollections();
});

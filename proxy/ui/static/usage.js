// profilo usage panel: a month of the account's metered tokens per day (GET /v1/usage), as an
// SVG bar chart stacked by kind (chat, memory, extraction, dialectic), plus totals and the
// limits the operator set (GET /v1/usage/limits). Uses api(), el(), $() and fail() of app.js.
"use strict";

const KINDS = ["chat", "memory", "extraction", "dialectic"];
const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  for (const child of children) node.append(child);
  return node;
}

function monthRange(value) {  // "2026-12" -> ["2026-12-01", "2027-01-01", days in the month]
  const [year, month] = value.split("-").map(Number);
  const next = month === 12 ? [year + 1, 1] : [year, month + 1];
  const pad = (n) => String(n).padStart(2, "0");
  const days = new Date(Date.UTC(next[0], next[1] - 1, 1) - 86400000).getUTCDate();
  return [`${year}-${pad(month)}-01`, `${next[0]}-${pad(next[1])}-01`, days];
}

function formatTokens(n) {
  if (n >= 1e6) return (n / 1e6).toFixed(1) + "M";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + "k";
  return String(n);
}

function drawChart(value, report) {
  const [, , days] = monthRange(value);
  const byDay = new Map(report.data.map((row) => [row.day, row.tokens_by_kind]));
  const width = 900, height = 220, left = 48, bottom = 22, top = 8;
  const slot = (width - left) / days, bar = Math.max(4, slot * 0.7);
  let max = 1;
  for (const kinds of byDay.values()) max = Math.max(max, KINDS.reduce((s, k) => s + kinds[k], 0));
  const scale = (height - bottom - top) / max;
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img",
    "aria-label": "tokens per day by kind", id: "usage-chart" });
  for (const frac of [0, 0.5, 1]) {
    const y = height - bottom - frac * max * scale;
    chart.append(svg("line", { x1: left, x2: width, y1: y, y2: y, class: "grid" }));
    chart.append(svg("text", { x: left - 6, y: y + 4, class: "axis", "text-anchor": "end" },
      formatTokens(Math.round(frac * max))));
  }
  for (let day = 1; day <= days; day++) {
    const date = `${value}-${String(day).padStart(2, "0")}`;
    const kinds = byDay.get(date);
    const x = left + (day - 1) * slot + (slot - bar) / 2;
    if (day === 1 || day % 5 === 0) {
      chart.append(svg("text", { x: x + bar / 2, y: height - 6, class: "axis",
        "text-anchor": "middle" }, String(day)));
    }
    if (!kinds) continue;
    let y = height - bottom;
    const group = svg("g", { class: "day", "data-day": date });
    const total = KINDS.reduce((s, k) => s + kinds[k], 0);
    group.append(svg("title", {}, `${date}: ${total} tokens (` +
      KINDS.map((k) => `${k} ${kinds[k]}`).join(", ") + ")"));
    for (const kind of KINDS) {
      const h = kinds[kind] * scale;
      if (h <= 0) continue;
      y -= h;
      group.append(svg("rect", { x, y, width: bar, height: h, class: "kind-" + kind,
        "data-kind": kind, "data-tokens": kinds[kind] }));
    }
    chart.append(group);
  }
  return chart;
}

function limitsText(limits) {
  const parts = [];
  if (limits.requests_per_minute !== null) parts.push(limits.requests_per_minute + " requests/min");
  if (limits.tokens_per_minute !== null) parts.push(limits.tokens_per_minute + " tokens/min");
  if (limits.monthly_budget !== null) parts.push("$" + limits.monthly_budget + " a month");
  if (limits.extraction_jobs_per_minute !== null) {
    parts.push(limits.extraction_jobs_per_minute + " extraction jobs/min");
  }
  return parts.length ? "Limits: " + parts.join(" · ") : "No limits set for this account.";
}

async function loadUsage() {
  const value = $("usage-month").value;
  const [from, to] = monthRange(value);
  try {
    const report = await api("GET", `/v1/usage?group_by=day&from=${from}&to=${to}`);
    const total = report.total;
    $("usage-chart-box").replaceChildren(drawChart(value, report));
    $("usage-totals").replaceChildren(...KINDS.map((kind) => el("li", { "data-kind": kind },
      el("span", { class: "swatch kind-" + kind }), kind + " ",
      el("strong", {}, formatTokens(total.tokens_by_kind[kind])))),
      el("li", { "data-kind": "cost" }, "cost ",
        el("strong", {}, total.cost === null ? "–" : "$" + total.cost.toFixed(4))));
    const limits = await api("GET", "/v1/usage/limits");
    $("usage-limits").textContent = limitsText(limits.limits);
  } catch (err) {
    fail(err);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const now = new Date();
  $("usage-month").value =
    `${now.getUTCFullYear()}-${String(now.getUTCMonth() + 1).padStart(2, "0")}`;
  $("usage-month").addEventListener("change", loadUsage);
  $("key-form").addEventListener("submit", () => loadUsage());
  loadUsage();
});

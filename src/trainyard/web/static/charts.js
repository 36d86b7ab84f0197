// Draws the charts of a dashboard page from its JSON document (#chart-data) with ECharts, and
// sorts tables whose header is clicked. No build step: plain browser JavaScript.
"use strict";

function chartData() {
  const element = document.getElementById("chart-data");
  return element ? JSON.parse(element.textContent) : null;
}

function newChart(parent, id, title) {
  const box = document.createElement("div");
  box.className = "chart";
  box.id = id;
  parent.appendChild(box);
  const chart = echarts.init(box, null, { renderer: "canvas" });
  chart.setOption({ title: { text: title, textStyle: { fontSize: 13 } } });
  return chart;
}

function lineChart(parent, id, title, seriesByName, highlight) {
  const chart = newChart(parent, id, title);
  const series = Object.entries(seriesByName).map(([name, points]) => ({
    name: name,
    type: "line",
    showSymbol: points.length < 2, // a one-point curve is a dot, or nothing
    data: points,
    lineStyle: { width: name === highlight ? 3 : 1, opacity: highlight && name !== highlight ? 0.45 : 1 },
    z: name === highlight ? 10 : 2,
  }));
  chart.setOption({
    tooltip: { trigger: "axis" },
    legend: series.length <= 20 ? { type: "scroll", top: 22 } : { show: false },
    grid: { top: 60, left: 55, right: 20, bottom: 35 },
    xAxis: { type: "value", name: "step", nameLocation: "middle", nameGap: 22 },
    yAxis: { type: "value", scale: true },
    series: series,
  });
}

function curveChart(data, metric, curves) {
  const best = data.bestTrial === null ? null : "trial " + data.bestTrial;
  const named = {};
  for (const curve of curves) named["trial " + curve.n] = curve.s.map((step, i) => [step, curve.v[i]]);
  const parent = document.getElementById("curves");
  parent.replaceChildren();
  lineChart(parent, "curve-" + metric, metric, named, best);
}

function experimentCharts(data) {
  const select = document.getElementById("curve-metric");
  for (const metric of data.metricNames) select.add(new Option(metric, metric, false, metric === data.metric));
  if (data.curves[data.metric] !== undefined) curveChart(data, data.metric, data.curves[data.metric]);
  select.addEventListener("change", async () => {
    const metric = select.value;
    if (data.curves[metric] === undefined) {
      const url = location.pathname + "/curves?metric=" + encodeURIComponent(metric);
      const response = await fetch(url, { credentials: "same-origin" });
      data.curves[metric] = await response.json();
    }
    curveChart(data, metric, data.curves[metric]);
  });
  const scored = data.trials;
  const names = data.hyperparameters;
  if (names.length > 0 && scored.length > 0) {
    const axes = names.map((name, i) => {
      const values = scored.map((t) => t.hyperparameters[name]);
      const numeric = values.every((v) => typeof v === "number");
      return numeric ? { dim: i, name: name } : { dim: i, name: name, type: "category",
        data: [...new Set(values.map(String))] };
    });
    axes.push({ dim: names.length, name: data.metric });
    const parallel = echarts.init(document.getElementById("parallel"));
    parallel.setOption({
      title: { text: "parallel coordinates", textStyle: { fontSize: 13 } },
      parallelAxis: axes,
      parallel: { top: 60, left: 60, right: 80 },
      series: [{ type: "parallel", lineStyle: { width: 1.5 },
        data: scored.map((t) => [...names.map((n) => t.hyperparameters[n]), t.best]) }],
    });
    const scatter = document.getElementById("scatter");
    for (const name of names) {
      const chart = newChart(scatter, "scatter-" + name, data.metric + " vs " + name);
      const numeric = scored.every((t) => typeof t.hyperparameters[name] === "number");
      chart.setOption({
        tooltip: { formatter: (p) => "trial " + p.data[2] + ": " + p.data[1] },
        grid: { top: 40, left: 55, right: 20, bottom: 35 },
        xAxis: numeric ? { type: "value", name: name, scale: true } :
          { type: "category", name: name, data: [...new Set(scored.map((t) => String(t.hyperparameters[name])))] },
        yAxis: { type: "value", scale: true },
        series: [{ type: "scatter", data: scored.map((t) =>
          [numeric ? t.hyperparameters[name] : String(t.hyperparameters[name]), t.best, t.number]) }],
      });
    }
  }
}

function rocChart(roc) {
  // As tagger papers plot it: signal efficiency across, background rejection 1/eps_B up, log.
  const chart = echarts.init(document.getElementById("roc"));
  chart.setOption({
    title: { text: "ROC, trial " + roc.trial, textStyle: { fontSize: 13 } },
    tooltip: { trigger: "axis", valueFormatter: (v) => (typeof v === "number" ? v.toPrecision(4) : v) },
    grid: { top: 40, left: 60, right: 20, bottom: 40 },
    xAxis: { type: "value", name: "signal efficiency", nameLocation: "middle", nameGap: 25, min: 0, max: 1 },
    yAxis: { type: "log", name: "1/\u03b5B", logBase: 10 },
    series: [
      { name: "1/\u03b5B", type: "line", showSymbol: false, data: roc.points },
      { name: "working points", type: "scatter", symbolSize: 10, data: roc.marks,
        label: { show: true, position: "right", formatter: (p) => p.data[1].toFixed(1) } },
    ],
  });
}

function trialCharts(data) {
  const parent = document.getElementById("metrics");
  for (const [kind, byMetric] of Object.entries(data.metrics)) {
    for (const [metric, points] of Object.entries(byMetric)) {
      lineChart(parent, kind + "-" + metric, kind + ": " + metric, { [metric]: points }, null);
    }
  }
}

function sortTable(header) {
  const table = header.closest("table");
  const column = [...header.parentNode.children].indexOf(header);
  const numeric = header.dataset.type === "number";
  const ascending = header.dataset.order !== "asc";
  header.dataset.order = ascending ? "asc" : "desc";
  const rows = [...table.tBodies[0].rows];
  const key = (row) => {
    const text = row.cells[column].textContent.trim();
    return numeric ? (parseFloat(text) || 0) : text;
  };
  rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (ascending ? 1 : -1));
  rows.forEach((row) => table.tBodies[0].appendChild(row));
}

document.addEventListener("click", (event) => {
  const header = event.target.closest("table.sortable th");
  if (header) sortTable(header);
});

document.addEventListener("DOMContentLoaded", () => {
  const data = chartData();
  if (data === null) return;
  if (data.curves !== undefined) experimentCharts(data);
  if (data.roc) rocChart(data.roc);
  if (data.metrics !== undefined) trialCharts(data);
});

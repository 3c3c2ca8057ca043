// The attention heatmap: rows are summary tokens, columns source tokens. It sits in a frame
// that scrolls both ways, with labels on both axes that stay in view (sticky canvases); a
// slider sets the column width, and hovering (or tapping) a cell names its row, its column,
// the words around that column and the weight.
"use strict";

const ROW_HEIGHT = 16; // px per summary token: room for an 11 px label
const LABEL_FONT = "11px system-ui, sans-serif";
const heatmap = { attention: [], rows: [], columns: [], peaks: [], cell: 14, hover: null, left: 0, top: 0 };

function clearHeatmap() {
  Object.assign(heatmap, { attention: [], rows: [], columns: [], peaks: [], hover: null });
  for (const id of ["heatmap", "heatmap-rows", "heatmap-columns"]) $(id).width = $(id).height = 0;
  delete $("heatmap").dataset.rows;
  delete $("heatmap").dataset.columns;
  $("heatmap-hover").innerHTML = "&nbsp;";
}

function textWidth(texts, limit) {
  const context = document.createElement("canvas").getContext("2d");
  context.font = LABEL_FONT;
  return Math.min(limit, Math.ceil(Math.max(0, ...texts.map((t) => context.measureText(t).width))) + 10);
}

function drawHeatmap(attention, rows, columns) {
  const rowLabels = rows.map(label), columnLabels = columns.map(label);
  Object.assign(heatmap, { attention, rows: rowLabels, columns: columnLabels, hover: null });
  heatmap.peaks = attention.map((row) => Math.max(...row, 1e-9)); // each row scaled to its own peak
  heatmap.left = Math.max(40, textWidth(rowLabels, 120));
  heatmap.top = Math.max(28, textWidth(columnLabels, 90));
  const room = $("heatmap-frame").clientWidth - heatmap.left - 2;
  heatmap.cell = Math.max(6, Math.min(16, Math.floor(room / Math.max(1, columns.length))));
  $("heatmap-zoom").value = heatmap.cell;
  const canvas = $("heatmap");
  canvas.dataset.rows = rows.length;
  canvas.dataset.columns = columns.length;
  renderHeatmap();
}

// a canvas of CSS size width × height, sharp on high-density screens; returns its context
function sized(canvas, width, height) {
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  canvas.style.width = `${width}px`;
  canvas.style.height = `${height}px`;
  const context = canvas.getContext("2d");
  context.setTransform(ratio, 0, 0, ratio, 0, 0);
  context.font = LABEL_FONT;
  context.textBaseline = "middle";
  return context;
}

function renderHeatmap() {
  const { attention, rows, columns, peaks, cell, hover, left, top } = heatmap;
  const width = cell * columns.length, height = ROW_HEIGHT * rows.length;
  document.querySelector(".heatmap-grid").style.gridTemplateColumns = `${left}px ${width}px`;
  document.querySelector(".heatmap-corner").style.height = `${top}px`;

  const body = sized($("heatmap"), width, height);
  body.fillStyle = "#fff";
  body.fillRect(0, 0, width, height);
  const gap = cell >= 6 ? 1 : 0;
  attention.forEach((row, i) => {
    row.forEach((weight, j) => {
      body.fillStyle = `rgba(12, 74, 160, ${weight / peaks[i]})`;
      body.fillRect(j * cell, i * ROW_HEIGHT, cell - gap, ROW_HEIGHT - 1);
    });
  });
  if (hover) { // the hovered row and column, outlined
    body.strokeStyle = "#e67800";
    body.lineWidth = 1.5;
    body.strokeRect(0.75, hover.i * ROW_HEIGHT + 0.75, width - 1.5, ROW_HEIGHT - 1.5);
    body.strokeRect(hover.j * cell + 0.75, 0.75, cell - 1.5, height - 1.5);
  }

  const rowContext = sized($("heatmap-rows"), left, height);
  rowContext.fillStyle = "#fff";
  rowContext.fillRect(0, 0, left, height);
  rowContext.textAlign = "right";
  rows.forEach((text, i) => {
    rowContext.font = hover && hover.i === i ? `bold ${LABEL_FONT}` : LABEL_FONT;
    rowContext.fillStyle = hover && hover.i === i ? "#b35c00" : "#333";
    rowContext.fillText(text, left - 6, i * ROW_HEIGHT + ROW_HEIGHT / 2, left - 8);
  });

  // column labels: every one when they fit, else every few (the hovered one always)
  const every = Math.ceil(13 / cell);
  const columnContext = sized($("heatmap-columns"), width, top);
  columnContext.fillStyle = "#fff";
  columnContext.fillRect(0, 0, width, top);
  columns.forEach((text, j) => {
    const hovered = hover && hover.j === j;
    if (j % every && !hovered) return;
    columnContext.save();
    columnContext.translate(j * cell + cell / 2, top - 4);
    columnContext.rotate(-Math.PI / 2);
    columnContext.font = hovered ? `bold ${LABEL_FONT}` : LABEL_FONT;
    if (hovered) { // over its neighbours' labels, on a white band
      columnContext.fillStyle = "#fff";
      columnContext.fillRect(-2, -7, top - 4, 14);
    }
    columnContext.fillStyle = hovered ? "#b35c00" : "#333";
    columnContext.fillText(text, 0, 0, top - 8);
    columnContext.restore();
  });
}

function hoverHeatmap(event) {
  const box = $("heatmap").getBoundingClientRect();
  const j = Math.floor((event.clientX - box.left) / heatmap.cell);
  const i = Math.floor((event.clientY - box.top) / ROW_HEIGHT);
  if (i < 0 || i >= heatmap.rows.length || j < 0 || j >= heatmap.columns.length) return;
  if (heatmap.hover && heatmap.hover.i === i && heatmap.hover.j === j) return;
  heatmap.hover = { i, j };
  const around = (from, to) => heatmap.columns.slice(Math.max(0, from), Math.max(0, to)).join(" ");
  const context = `…${around(j - 4, j)} [${heatmap.columns[j]}] ${around(j + 1, j + 5)}…`;
  $("heatmap-hover").textContent =
    `summary token ${i + 1} “${heatmap.rows[i]}” → source token ${j + 1} ${context}: ` +
    `${heatmap.attention[i][j].toFixed(3)}`;
  renderHeatmap();
}

document.addEventListener("DOMContentLoaded", () => {
  $("heatmap").addEventListener("pointermove", hoverHeatmap);
  $("heatmap").addEventListener("pointerdown", hoverHeatmap);
  $("heatmap-zoom").addEventListener("input", () => {
    heatmap.cell = Number($("heatmap-zoom").value);
    if (heatmap.columns.length) renderHeatmap();
  });
});

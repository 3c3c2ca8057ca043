// The Memory view: POST /v1/memory, then one panel per cell, side by side: the recall of the
// planted key after every token (chance dashed), the memory trace under it (log scale), the
// verdict and one sentence on what the cell's gates do. Hovering a panel marks the same token
// in every panel.
"use strict";

// what each cell's equations do, in the words of the README's section on the cells
const CELLS = {
  rnn: ["Plain RNN", "The whole state is rewritten at every step, h_t = tanh(W x_t + U h_{t−1} + b), " +
    "so what was read long ago fades."],
  gru: ["GRU", "The update gate blends old and new, h_t = (1 − z_t) ⊙ h_{t−1} + z_t ⊙ ~h_t: " +
    "where z stays near 0 the past is kept, key included."],
  lstm: ["LSTM", "A memory cell guarded by gates, C_t = f_t ⊙ C_{t−1} + i_t ⊙ ~C_t: a forget gate " +
    "near 1 carries the key along, and h is read out of C."],
  "lstm-peephole": ["LSTM with peepholes", "The same memory cell, with C fed into the gates " +
    "(the extended form), so each gate sees the memory it guards."],
};
const TRACE_FLOOR = 1e-12; // the trace's log axis starts here; smaller shares sit on it
const memory = { answer: null, hover: null, examples: null };
const count = (n) => n.toLocaleString("en-US");
const share = (v) => (v === 0 ? "0" : v >= 0.01 ? v.toPrecision(2) : v.toExponential(1)); // 3.2e-21

async function openMemoryView() {
  if (memory.examples !== null) return;
  memory.examples = [];
  try {
    const response = await fetch("/v1/memory/examples");
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.error || `HTTP ${response.status}`);
    memory.examples = answer.examples;
  } catch (error) {
    memory.examples = null; // ask again next time the view opens
    $("memory-status").textContent = error.message;
    return;
  }
  for (const example of memory.examples) {
    const option = document.createElement("option");
    option.value = example.id;
    option.textContent = example.title;
    $("memory-example").append(option);
  }
  $("memory-examples").hidden = memory.examples.length === 0; // no data folder: no picker
}

function pickExample() {
  const example = (memory.examples || []).find((e) => e.id === $("memory-example").value);
  $("memory-source").value = example ? example.text : "";
}

async function runMemory(event) {
  event.preventDefault();
  const body = { text: $("memory-source").value };
  if ($("memory-key").value.trim() !== "") body.key = Number($("memory-key").value);
  $("memory-error").hidden = true;
  $("memory-status").textContent = `reading ${count(body.text.length)} characters with each cell…`;
  $("memory-run").disabled = true;
  try {
    showMemory(await postJSON("/v1/memory", body));
  } catch (error) {
    memory.answer = null;
    $("memory-result").hidden = true;
    $("memory-cells").replaceChildren();
    $("memory-error").textContent = error.message;
    $("memory-error").hidden = false;
  } finally {
    $("memory-status").textContent = "";
    $("memory-run").disabled = false;
  }
}

function showMemory(answer) {
  Object.assign(memory, { answer, hover: null });
  const sampled = answer.positions.length < answer.tokens ? ` · curves at ${count(answer.positions.length)} of the positions` : "";
  $("memory-meta").textContent =
    `${count(answer.tokens)} tokens · key ${answer.key} planted before the text (1 of ${answer.key_symbols}; ` +
    `chance ${answer.chance}) · ${count(Math.round(answer.elapsed_ms))} ms${sampled}`;
  $("memory-cells").replaceChildren(...answer.cells.map((cell) => cellPanel(cell, answer)));
  $("memory-result").hidden = false;
  drawCurves();
}

function cellPanel(cell, answer) {
  const [title, sentence] = CELLS[cell.name] || [cell.name, ""];
  const panel = document.createElement("article");
  panel.className = "cell";
  panel.dataset.cell = cell.name;
  const verdict = cell.correct
    ? `<span class="verdict right">✓ names key ${answer.key} at the end</span>`
    : `<span class="verdict wrong">✗ names key ${cell.answer}, not ${answer.key}, at the end</span>`;
  const held = cell.held_to >= answer.tokens
    ? `held the key through all ${count(answer.tokens)} tokens`
    : cell.held_to === 0 ? "named a wrong key from the first token on"
    : `first named a wrong key after ${count(cell.held_to)} token${cell.held_to === 1 ? "" : "s"}`;
  panel.innerHTML = `<h3>${title} ${verdict}</h3>
    <p class="meta">${held}; P(right key) at the end ${share(cell.final_recall)};
      of the key itself, ${share(cell.key_trace)} is left in the state</p>
    <canvas class="curve" role="img" aria-label="${title}: recall and memory trace along the text"></canvas>
    <p class="meta hover">&nbsp;</p>
    <p class="explain">${sentence}</p>`;
  const canvas = panel.querySelector("canvas");
  canvas.addEventListener("pointermove", (event) => hoverCurves(event, canvas));
  canvas.addEventListener("pointerdown", (event) => hoverCurves(event, canvas));
  return panel;
}

// --- the curves: x = tokens read (log or linear), recall above, trace below -----------------------

const PLOT = { left: 38, right: 10, top: 8, recall: 120, gap: 22, trace: 64, bottom: 18 };

function xScale(width) {
  const tokens = memory.answer.tokens;
  const span = width - PLOT.left - PLOT.right;
  if ($("memory-linear").checked) return (t) => PLOT.left + (span * t) / Math.max(1, tokens - 1);
  return (t) => PLOT.left + (span * Math.log(t + 1)) / Math.log(Math.max(2, tokens)); // t + 1 tokens read
}

function ticks() {
  const tokens = memory.answer.tokens;
  if (!$("memory-linear").checked) {
    return [1, 10, 100, 1000, 10000, 100000].filter((n) => n <= tokens).map((n) => n - 1);
  }
  const step = 10 ** Math.floor(Math.log10(Math.max(1, tokens / 2)));
  const marks = [];
  for (let n = 0; n < tokens; n += step * (tokens / step > 5 ? 2 : 1)) marks.push(n);
  return marks;
}

function drawCurves() {
  const answer = memory.answer;
  if (!answer) return;
  document.querySelectorAll("#memory-cells .cell").forEach((panel, index) => {
    const cell = answer.cells[index];
    const canvas = panel.querySelector("canvas");
    const width = canvas.parentElement.clientWidth;
    const height = PLOT.top + PLOT.recall + PLOT.gap + PLOT.trace + PLOT.bottom;
    const context = sized(canvas, width, height); // heatmap.js
    const x = xScale(width);
    const recallY = (p) => PLOT.top + PLOT.recall * (1 - p);
    const traceTop = PLOT.top + PLOT.recall + PLOT.gap;
    const traceY = (v) => traceTop + (PLOT.trace * Math.log10(Math.max(v, TRACE_FLOOR))) / Math.log10(TRACE_FLOOR);
    context.clearRect(0, 0, width, height);
    axes(context, width, x, recallY, traceY, traceTop, answer.chance);
    line(context, answer.positions.map((t, k) => [x(t), recallY(cell.recall[k])]), "#0c4aa0", 1.6);
    line(context, answer.positions.map((t, k) => [x(t), traceY(cell.trace[k])]), "#e67800", 1.2);
    if (memory.hover !== null) {
      const k = memory.hover;
      context.strokeStyle = "rgba(0, 0, 0, 0.45)";
      context.beginPath();
      context.moveTo(x(answer.positions[k]), PLOT.top);
      context.lineTo(x(answer.positions[k]), traceTop + PLOT.trace);
      context.stroke();
      panel.querySelector(".hover").textContent =
        `after ${count(answer.positions[k] + 1)} tokens (“${answer.pieces[k].replace(/▁/g, " ").trim() || "space"}”): ` +
        `P(right key) ${cell.recall[k].toFixed(3)} · of what was written there, ${share(cell.trace[k])} is left at the end`;
    }
  });
}

function axes(context, width, x, recallY, traceY, traceTop, chance) {
  context.font = "10px system-ui, sans-serif";
  context.fillStyle = "#666";
  context.strokeStyle = "#ddd";
  context.lineWidth = 1;
  context.textAlign = "right";
  for (const p of [0, 0.5, 1]) {
    rule(context, PLOT.left, width - PLOT.right, recallY(p));
    context.fillText(String(p), PLOT.left - 4, recallY(p));
  }
  for (const v of [1, 1e-6, TRACE_FLOOR]) {
    rule(context, PLOT.left, width - PLOT.right, traceY(v));
    context.fillText(v === 1 ? "1" : v.toExponential(0), PLOT.left - 4, traceY(v));
  }
  context.setLineDash([4, 3]); // chance
  context.strokeStyle = "#999";
  rule(context, PLOT.left, width - PLOT.right, recallY(chance));
  context.setLineDash([]);
  context.textAlign = "left";
  context.fillText("recall of the key", PLOT.left + 4, PLOT.top + 6);
  context.fillText("memory trace (log)", PLOT.left + 4, traceTop - 7);
  context.textAlign = "center";
  const bottom = traceTop + PLOT.trace;
  for (const t of ticks()) {
    context.fillText(count(t + 1), x(t), bottom + 11);
  }
}

function rule(context, from, to, y) {
  context.beginPath();
  context.moveTo(from, Math.round(y) + 0.5);
  context.lineTo(to, Math.round(y) + 0.5);
  context.stroke();
}

function line(context, points, colour, width) {
  context.strokeStyle = colour;
  context.lineWidth = width;
  context.beginPath();
  points.forEach(([px, py], k) => (k ? context.lineTo(px, py) : context.moveTo(px, py)));
  context.stroke();
}

function hoverCurves(event, canvas) {
  const answer = memory.answer;
  const box = canvas.getBoundingClientRect();
  const x = xScale(box.width);
  const pointer = event.clientX - box.left;
  let best = 0; // the sampled position nearest the pointer (positions are sorted)
  let low = 0, high = answer.positions.length - 1;
  while (low <= high) {
    const middle = (low + high) >> 1;
    if (x(answer.positions[middle]) < pointer) low = middle + 1;
    else high = middle - 1;
  }
  best = Math.min(answer.positions.length - 1, low);
  if (best > 0 && pointer - x(answer.positions[best - 1]) < x(answer.positions[best]) - pointer) best -= 1;
  if (memory.hover === best) return;
  memory.hover = best;
  drawCurves();
}

document.addEventListener("DOMContentLoaded", () => {
  $("memory-form").addEventListener("submit", runMemory);
  $("memory-example").addEventListener("change", pickExample);
  $("memory-linear").addEventListener("change", drawCurves);
  window.addEventListener("resize", drawCurves);
});

// The gatesum page: POST /v1/explain, then draw the summary, the attention heatmap and the
// memory trace. Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);

// sentencepiece pieces as display text: "▁the" starts a word; "·" continues a multi-byte char
const display = (piece) => (piece === "·" ? "" : piece.replace(/▁/g, " "));
const label = (piece) => (piece.startsWith("▁") ? piece.slice(1) || "▁" : piece);

async function summarize(event) {
  event.preventDefault();
  const body = {
    text: $("source").value,
    beam_size: Number($("beam_size").value),
    max_length: Number($("max_length").value),
  };
  $("error").hidden = true;
  $("status").textContent = "summarizing…";
  $("summarize").disabled = true;
  try {
    show(await explain(body));
  } catch (error) {
    clearResult(); // an old summary under a new error would read as the answer to this text
    $("error").textContent = error.message;
    $("error").hidden = false;
  } finally {
    $("status").textContent = "";
    $("summarize").disabled = false;
  }
}

// POST /v1/explain; an Error whose message is a sentence for the reader when it fails
async function explain(body) {
  let response;
  try {
    response = await fetch("/v1/explain", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
    });
  } catch {
    throw new Error("The service could not be reached. Is it running?");
  }
  const answer = await response.json().catch(() => ({})); // a proxy's HTML error page is not JSON
  if (!response.ok) throw new Error(answer.error || `The service answered HTTP ${response.status}.`);
  return answer;
}

function clearResult() {
  $("result").hidden = true;
  $("summary").textContent = "";
  $("meta").textContent = "";
  $("heatmap-hover").innerHTML = "&nbsp;";
  const canvas = $("heatmap");
  canvas.width = canvas.height = 0;
  delete canvas.dataset.rows;
  delete canvas.dataset.columns;
  $("memory").replaceChildren();
}

function show(answer) {
  $("summary").textContent = answer.summary;
  $("meta").textContent =
    `${answer.input_tokens} source tokens${answer.truncated ? " (truncated: the model read the first " +
      answer.source_tokens.length + ")" : ""} · ${answer.elapsed_ms} ms · ${answer.model}`;
  drawHeatmap(answer.attention, answer.summary_tokens, answer.source_tokens);
  drawMemory(answer.memory, answer.source_tokens);
  $("result").hidden = false;
}

function drawHeatmap(attention, rows, columns) {
  const canvas = $("heatmap");
  const cell = columns.length > 150 ? 6 : 14;
  const left = 90, top = cell >= 14 ? 70 : 10;
  canvas.width = left + cell * columns.length + 10;
  canvas.height = top + cell * rows.length + 10;
  canvas.dataset.rows = rows.length;
  canvas.dataset.columns = columns.length;
  const context = canvas.getContext("2d");
  context.fillStyle = "#fff";
  context.fillRect(0, 0, canvas.width, canvas.height);
  attention.forEach((row, i) => {
    const peak = Math.max(...row, 1e-9); // each row scaled to its own maximum: where it looked most
    row.forEach((weight, j) => {
      context.fillStyle = `rgba(12, 74, 160, ${weight / peak})`;
      context.fillRect(left + j * cell, top + i * cell, cell - 1, cell - 1);
    });
  });
  context.fillStyle = "#333";
  context.font = "11px system-ui, sans-serif";
  context.textAlign = "right";
  context.textBaseline = "middle";
  rows.forEach((piece, i) => context.fillText(label(piece), left - 4, top + i * cell + cell / 2));
  if (cell >= 14) {
    columns.forEach((piece, j) => {
      context.save();
      context.translate(left + j * cell + cell / 2, top - 4);
      context.rotate(-Math.PI / 2);
      context.textAlign = "left";
      context.fillText(label(piece), 0, 0);
      context.restore();
    });
  }
  canvas.onmousemove = (event) => {
    const box = canvas.getBoundingClientRect();
    const j = Math.floor((event.clientX - box.left - left) / cell);
    const i = Math.floor((event.clientY - box.top - top) / cell);
    if (i >= 0 && i < rows.length && j >= 0 && j < columns.length) {
      $("heatmap-hover").textContent =
        `${label(rows[i])} → ${label(columns[j])}: ${attention[i][j].toFixed(3)}`;
    }
  };
}

function drawMemory(memory, tokens) {
  const target = $("memory");
  target.replaceChildren();
  tokens.forEach((piece, t) => {
    const span = document.createElement("span");
    span.textContent = display(piece);
    if (memory) {
      span.style.backgroundColor = `rgba(230, 120, 0, ${memory[t]})`;
      span.title = `${label(piece)}: ${(memory[t] * 100).toFixed(1)}% remembered`;
    }
    target.append(span);
  });
  if (!memory) target.append(" (no memory trace for this model)");
}

// the model's name from /readyz; while the model loads (503 "loading"), ask again every second
async function loadModelName() {
  try {
    const response = await fetch("/readyz");
    const health = await response.json();
    if (response.ok) {
      $("model-name").textContent = `model: ${health.model}`;
    } else {
      $("model-name").textContent = `model not ready: ${health.reason}`;
      if (health.reason === "loading") setTimeout(loadModelName, 1000);
    }
  } catch {
    $("model-name").textContent = "service unreachable";
  }
}

$("form").addEventListener("submit", summarize);
loadModelName();

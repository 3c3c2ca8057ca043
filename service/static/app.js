// The gatesum page: two views. "Summarize" posts to /v1/explain and draws the summary, the
// sentences it came from highlighted in the text, the attention heatmap (heatmap.js) and the
// encoder's memory trace over the text as written; "Memory" (memory.js) posts to /v1/memory.
// Plain JS, no build step.
"use strict";

const $ = (id) => document.getElementById(id);

// sentencepiece pieces as display text: "▁the" starts a word; "·" continues a multi-byte char
const display = (piece) => (piece === "·" ? "" : piece.replace(/▁/g, " "));
const label = (piece) => (piece.startsWith("▁") ? piece.slice(1) || "▁" : piece);

// POST a JSON body; an Error whose message is a sentence for the reader when it fails
async function postJSON(path, body) {
  let response;
  try {
    response = await fetch(path, {
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

// --- views: #summarize (default) and #memory ---------------------------------------------------

function showView() {
  const view = location.hash === "#memory" ? "memory" : "summarize";
  for (const name of ["summarize", "memory"]) {
    $(`view-${name}`).hidden = name !== view;
    $(`tab-${name}`).setAttribute("aria-current", name === view ? "page" : "false");
  }
  if (view === "memory") openMemoryView(); // memory.js
}

// --- generation settings: bounds from the service's own schema, defaults left to the service ---

const GENERATION_FIELDS = ["beam_size", "max_length"];

async function loadGenerationBounds() {
  try {
    const schema = await (await fetch("/openapi.json")).json();
    const fields = schema.components.schemas.SummarizeRequest.properties;
    for (const name of GENERATION_FIELDS) {
      const field = fields[name];
      const integer = (field.anyOf || [field]).find((option) => option.type === "integer") || {};
      const input = $(name);
      if (integer.minimum !== undefined) input.min = integer.minimum;
      if (integer.maximum !== undefined) input.max = integer.maximum;
      input.title = `${field.description || name} (${input.min || "?"}–${input.max || "?"}; empty: the service's default)`;
    }
  } catch {
    // no schema (a proxy in the way): the service still checks every bound and says why
  }
}

function generationSettings() {
  const settings = {};
  const mode = document.querySelector('input[name="mode"]:checked').value;
  if (mode !== "abstractive") settings.mode = mode; // like the fields: only what the visitor chose
  for (const name of GENERATION_FIELDS) {
    const value = $(name).value.trim();
    if (value !== "") settings[name] = Number(value); // only what the visitor set
  }
  return settings;
}

// the extractive mode needs a content selector: offered only when the model card has one
async function loadModes() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) return; // loading, or keys required: the service refuses with a reason
    const card = (await response.json()).card;
    if (!card.selector) {
      const radio = document.querySelector('input[name="mode"][value="extractive"]');
      radio.disabled = true;
      $("mode-extractive-label").title = "this model has no content selector";
    }
  } catch {
    // the service still says why when asked for what it cannot do
  }
}

// --- the summarize view --------------------------------------------------------------------------

async function summarize(event) {
  event.preventDefault();
  const text = $("source").value;
  $("error").hidden = true;
  $("status").textContent = "summarizing…";
  $("summarize").disabled = true;
  try {
    show(await postJSON("/v1/explain", { text, ...generationSettings() }), text);
  } catch (error) {
    clearResult(); // an old summary under a new error would read as the answer to this text
    $("error").textContent = error.message;
    $("error").hidden = false;
  } finally {
    $("status").textContent = "";
    $("summarize").disabled = false;
  }
}

function clearResult() {
  $("result").hidden = true;
  $("summary").textContent = "";
  $("meta").textContent = "";
  $("reading").replaceChildren();
  $("reading-legend").textContent = "";
  $("selection").replaceChildren();
  $("selection-view").hidden = true;
  clearHeatmap(); // heatmap.js
  $("memory").replaceChildren();
}

function show(answer, text) {
  $("summary").textContent = answer.summary;
  const read = answer.mode === "extractive" ? "extractive" : READS[answer.read];
  $("meta").textContent = `${answer.input_tokens} source tokens (${read}) · ${answer.elapsed_ms} ms · ${answer.model}`;
  $("result").hidden = false; // before drawing: the heatmap sizes itself to its frame
  drawReading(answer, text);
  const abstractive = answer.mode !== "extractive"; // an extractive summary has no attention
  $("abstractive-views").hidden = !abstractive;
  if (abstractive) {
    drawHeatmap(answer.attention, answer.summary_tokens, answer.source_tokens);
    drawMemory(answer.memory, answer.source_tokens, text);
  }
  drawSelection(answer.selection, answer.source_tokens);
}

// the content selector's P(copied) per token read, as the model's own tokens (a long text's
// selected sentences are not contiguous in the text as written)
function drawSelection(selection, pieces) {
  const target = $("selection");
  target.replaceChildren();
  $("selection-view").hidden = !selection;
  if (!selection) return;
  pieces.forEach((piece, t) => {
    const span = document.createElement("span");
    span.textContent = display(piece);
    span.style.backgroundColor = `hsla(140, 60%, 38%, ${(0.85 * selection[t]).toFixed(3)})`;
    span.title = `${label(piece)}: P(copied) ${selection[t].toFixed(3)}`;
    target.append(span);
  });
}

// --- what the model read: the sentences the summary came from, highlighted in the text ---------

const READS = {
  whole: "read whole",
  selected: "longer than the model reads: it read the sentences the content selector chose",
  truncated: "longer than the model reads: it read the first part only",
};

function drawReading(answer, text) {
  const target = $("reading");
  target.replaceChildren();
  const used = answer.sentences.length, all = answer.sentence_count;
  const whole = answer.mode !== "extractive" && answer.read === "whole";
  $("reading-legend").textContent = whole
    ? `all ${all} sentences`
    : `highlighted: ${used} of ${all} sentences, ` +
      (answer.mode === "extractive" ? "the summary itself" : answer.read === "selected"
        ? "chosen by the content selector" : "the first ones; the rest was not read");
  const chars = Array.from(text); // the offsets count code points, as the service's strings do
  const piece = (start, end, className) => {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = chars.slice(start, end).join("");
    return span;
  };
  let written = 0;
  for (const sentence of answer.sentences) {
    if (sentence.start < written) continue;
    target.append(piece(written, sentence.start, whole ? "" : "unused"));
    const mark = piece(sentence.start, sentence.end, whole ? "" : "used");
    mark.title = `sentence ${sentence.index + 1} of ${all}` +
      (sentence.score === null ? "" : ` · selector score ${sentence.score.toFixed(3)}`);
    target.append(mark);
    written = sentence.end;
  }
  target.append(piece(written, chars.length, whole ? "" : "unused"));
  const first = target.querySelector(".used"); // in view: the frame scrolls to the first one used
  target.scrollTop = first ? Math.max(0, first.offsetTop - target.offsetTop - 24) : 0;
}

// --- the encoder's memory trace, coloured on a log scale ----------------------------------------

// The colour scale runs over whole decades, from the smallest share in this text (down to 1e-12)
// to 1: pale for what is all but gone, deep orange for what is all still there.
let logFloor = -4;

function traceColour(value) {
  const level = value > 0 ? Math.min(1, Math.max(0, 1 - Math.log10(value) / logFloor)) : 0;
  return `hsl(${(45 - 25 * level).toFixed(1)}, 95%, ${(94 - 40 * level).toFixed(1)}%)`;
}

const percent = (value) => (value >= 0.001 ? `${(value * 100).toFixed(1)}%` : `${value.toExponential(1)} of it`);

function drawLegend(memory) {
  const smallest = Math.min(...memory.filter((value) => value > 0), 1);
  logFloor = Math.max(-12, Math.min(-1, Math.floor(Math.log10(smallest))));
  const legend = $("memory-legend");
  legend.replaceChildren("left at the end (log scale):");
  const step = Math.max(1, Math.round(-logFloor / 4));
  const exponents = [];
  for (let exponent = logFloor; exponent < 0; exponent += step) exponents.push(exponent);
  for (const exponent of [...exponents, 0]) {
    const swatch = document.createElement("span");
    swatch.style.backgroundColor = traceColour(10 ** exponent);
    swatch.textContent = exponent === 0 ? "all" : exponent === logFloor ? `≤ 1e${exponent}` : `1e${exponent}`;
    legend.append(swatch);
  }
}

// Where each piece lies in the text as the visitor wrote it: [start, end) character offsets,
// or null where it cannot be found. The pieces are of the normalized text (lowercased, split at
// punctuation, curly quotes made straight), so the match is case-blind, skips white space and
// invisible characters, and reads a few normalized forms back.
const SAME = { "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'",
               "\u2014": "--", "\u2013": "--", "\u2026": "..." }; // prettier-ignore
const SKIPPED = /[\s\p{Cc}\p{Cf}]/u;

function alignPieces(text, pieces) {
  const chars = [], origins = []; // the text as the normalizer writes it, minus spaces
  for (let i = 0; i < text.length; i++) {
    if (SKIPPED.test(text[i])) continue;
    for (const c of SAME[text[i]] || text[i].toLowerCase()) {
      chars.push(c);
      origins.push(i);
    }
  }
  const stream = chars.join("");
  let cursor = 0;
  return pieces.map((piece) => {
    const wanted = piece.replace(/[▁\s]/g, "");
    if (!wanted) return null;
    let at = stream.startsWith(wanted, cursor) ? cursor : stream.indexOf(wanted, cursor);
    if (at < 0 || at - cursor > 40) return null; // lost here: try the next piece from the same place
    cursor = at + wanted.length;
    return [origins[at], origins[cursor - 1] + 1];
  });
}

function drawMemory(memory, pieces, text) {
  const target = $("memory");
  target.replaceChildren();
  $("memory-legend").replaceChildren();
  if (!memory) {
    target.append("(no memory trace for this model)");
    return;
  }
  drawLegend(memory);
  const spans = alignPieces(text, pieces);
  const blank = (t) => !pieces[t].replace(/[▁\s]/g, ""); // "▁" alone: the space before a word
  const found = spans.filter(Boolean).length;
  const words = pieces.filter((_, t) => !blank(t)).length;
  const token = (t, content) => {
    const span = document.createElement("span");
    span.textContent = content;
    span.dataset.t = t;
    span.style.backgroundColor = traceColour(memory[t]);
    span.title = `${label(pieces[t])}: ${percent(memory[t])} remembered`;
    return span;
  };
  if (found < 0.9 * words) { // the mapping does not hold: the tokens as the model read them
    pieces.forEach((piece, t) => target.append(token(t, display(piece))));
    return;
  }
  const next = []; // where the next found piece starts, for each t
  for (let t = pieces.length - 1, start = text.length; t >= 0; t--) {
    next[t] = start;
    if (spans[t]) start = spans[t][0];
  }
  let written = 0; // characters of the text placed so far
  spans.forEach((span, t) => {
    if (!span && blank(t)) { // "▁": the white space it stands for, up to the next word
      let end = written;
      while (end < next[t] && /\s/.test(text[end])) end++;
      span = [written, end];
    }
    if (!span || span[0] < written) return;
    target.append(text.slice(written, span[0]), token(t, text.slice(span[0], span[1])));
    written = span[1];
  });
  if (text.slice(written).trim()) { // past the model's source limit: not read at all
    const rest = document.createElement("span");
    rest.className = "unread";
    rest.title = "not read: past the number of source tokens the model reads";
    rest.textContent = text.slice(written);
    target.append(rest);
  } else {
    target.append(text.slice(written));
  }
}

// --- start ----------------------------------------------------------------------------------------

// the model's name from /readyz; while the model loads (503 "loading"), ask again every second
async function loadModelName() {
  try {
    const response = await fetch("/readyz");
    const health = await response.json();
    if (response.ok) {
      $("model-name").textContent = `model: ${health.model}`;
      loadModes();
    } else {
      $("model-name").textContent = `model not ready: ${health.reason}`;
      if (health.reason === "loading") setTimeout(loadModelName, 1000);
    }
  } catch {
    $("model-name").textContent = "service unreachable";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("form").addEventListener("submit", summarize);
  window.addEventListener("hashchange", showView);
  showView();
  loadModelName();
  loadGenerationBounds();
});

// genlab serve: the page. Plain JavaScript over the JSON API (no framework, no CDN, no build step).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { runs: [], run: null, limits: { n: 64, seed: 4294967295 } };
const latest = {}; // per image slot: the number of the newest request, so a slow older answer never wins

// --- talking to the API ----------------------------------------------------------------------------------
async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

const postJSON = (path, body) =>
  api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

async function showPNG(slot, img, request) {
  const ticket = (latest[slot] = (latest[slot] || 0) + 1);
  try {
    const blob = await (await request()).blob();
    if (ticket !== latest[slot]) return;
    const old = img.src;
    img.src = URL.createObjectURL(blob);
    if (old.startsWith("blob:")) URL.revokeObjectURL(old);
  } catch (error) {
    if (ticket === latest[slot]) toast(error.message);
  }
}

let toastTimer = null;
function toast(message) {
  const box = $("toast");
  box.textContent = message;
  box.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { box.hidden = true; }, 5000);
}

const runPath = (suffix = "") => `/api/runs/${encodeURIComponent(state.run.name)}${suffix}`;
const clampSeed = (value) => Math.min(state.limits.seed, Math.max(0, Math.floor(Number(value) || 0)));
const randomSeed = () => Math.floor(Math.random() * 1_000_000);

// --- runs ---------------------------------------------------------------------------------------------------
async function loadRuns() {
  const data = await (await api("/api/runs")).json();
  state.runs = data.runs;
  state.limits = data.limits;
  const tabs = $("run-tabs");
  tabs.replaceChildren(...data.runs.map((run) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.run = run.name;
    button.append(run.name);
    const family = document.createElement("span");
    family.className = "family";
    family.textContent = run.model;
    button.append(family);
    button.addEventListener("click", () => selectRun(run.name));
    return button;
  }));
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = data.runs.find((run) => run.name === wanted) || data.runs[0];
  if (first) await selectRun(first.name);
}

async function selectRun(name) {
  const run = await (await api(`/api/runs/${encodeURIComponent(name)}`)).json();
  state.run = run;
  history.replaceState(null, "", `#${encodeURIComponent(name)}`);
  for (const tab of $("run-tabs").children) tab.setAttribute("aria-selected", String(tab.dataset.run === name));
  renderFacts(run);
  renderClassPicker(run);
  renderReconstructAvailability(run);
  refreshSamples();
  refreshWalk();
  loadLosses();
}

function renderFacts(run) {
  const title = $("run-name");
  title.textContent = run.name;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = run.conditional ? `${run.model} · conditional` : run.model;
  title.append(badge);
  const epochs = run.epoch === run.epochs_planned ? `${run.epoch}` : `${run.epoch} of ${run.epochs_planned}`;
  const facts = [
    ["dataset", String(run.dataset).split("/").pop()], ["preset", run.preset], ["epochs", epochs], ["steps", run.step],
    ["parameters", Number(run.parameters).toLocaleString("en")], ["image", run.image_shape.join(" × ")],
    ["checkpoint", run.checkpoint],
  ];
  if (run.denoising) facts.push(["denoising", `noise σ ${run.denoising.noise_std}, mask ${run.denoising.mask_prob}`]);
  $("run-facts").replaceChildren(...facts.flatMap(([key, value]) => {
    const dt = document.createElement("dt"); dt.textContent = key;
    const dd = document.createElement("dd"); dd.textContent = String(value);
    return [dt, dd];
  }));
  $("eval-block").hidden = !run.eval;
  $("eval-table").replaceChildren(...(run.eval || []).map((figure) => {
    const row = document.createElement("tr");
    const name = document.createElement("td");
    name.textContent = `${figure.title} ${figure.lower_is_better ? "↓" : "↑"}`;
    const value = document.createElement("td");
    const size = Math.abs(figure.value);
    value.textContent = figure.value.toFixed(size >= 100 ? 1 : size >= 1 ? 2 : 3);
    row.append(name, value);
    return row;
  }));
  const shown = run.figures.filter((figure) => figure.startsWith("eval_"));
  $("run-figures").replaceChildren(...shown.map((figure) => {
    const img = document.createElement("img");
    img.alt = figure;
    img.src = runPath(`/figures/${figure}`);
    return img;
  }));
}

function renderClassPicker(run) {
  $("class-picker").hidden = !run.conditional;
  const select = $("class-select");
  const names = run.class_names || Array.from({ length: run.num_classes }, (_, i) => String(i));
  const options = [["", "random"], ...names.slice(0, run.num_classes).map((name, i) => [String(i), `${i}: ${name}`])];
  select.replaceChildren(...options.map(([value, text]) => {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = text;
    return option;
  }));
}

const chosenLabel = () => (state.run.conditional && $("class-select").value !== "" ? Number($("class-select").value) : null);

function withLabel(body) {
  const label = chosenLabel();
  return label === null ? body : { ...body, label };
}

// --- samples and the latent walk ------------------------------------------------------------------------------
function refreshSamples() {
  const seed = clampSeed($("seed").value);
  $("seed").value = seed;
  const n = Number($("count").value);
  $("samples-note").textContent = `${n} samples · seed ${seed}`;
  showPNG("samples", $("sample-img"), () => postJSON(runPath("/sample"), withLabel({ n, seed })));
}

function walkBody(extra) {
  return withLabel({ seed_a: clampSeed($("seed-a").value), seed_b: clampSeed($("seed-b").value), ...extra });
}

function refreshWalk() {
  $("walk-a-label").textContent = `seed ${clampSeed($("seed-a").value)}`;
  $("walk-b-label").textContent = `seed ${clampSeed($("seed-b").value)}`;
  showPNG("strip", $("walk-strip"), () => postJSON(runPath("/interpolate"), walkBody({ steps: 10 })));
  refreshWalkFrame();
}

function refreshWalkFrame() {
  const t = Number($("walk-t").value);
  $("walk-t-label").textContent = `t = ${t.toFixed(2)}`;
  showPNG("frame", $("walk-frame"), () => postJSON(runPath("/interpolate"), walkBody({ steps: 2, t })));
}

// --- drawing, uploading, reconstructing --------------------------------------------------------------------------
function setUpCanvas() {
  const canvas = $("draw");
  const context = canvas.getContext("2d");
  const clear = () => { context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height); };
  clear();
  let drawing = false;
  const point = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true;
    canvas.setPointerCapture(event.pointerId);
    context.beginPath();
    context.moveTo(...point(event));
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    context.strokeStyle = "#fff";
    context.lineWidth = canvas.width / 12;
    context.lineCap = "round";
    context.lineJoin = "round";
    context.lineTo(...point(event));
    context.stroke();
  });
  const stop = () => { if (drawing) { drawing = false; reconstructDrawing(); } };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  $("clear-canvas").addEventListener("click", clear);
  $("use-drawing").addEventListener("click", reconstructDrawing);
}

function reconstructDrawing() {
  $("draw").toBlob((blob) => reconstruct(blob, "drawing.png"), "image/png");
}

function renderReconstructAvailability(run) {
  $("recon-unavailable").hidden = run.can_reconstruct;
  $("recon-body").hidden = !run.can_reconstruct;
  for (const id of ["clear-canvas", "use-drawing"]) $(id).disabled = !run.can_reconstruct;
  $("upload").disabled = !run.can_reconstruct;
  for (const id of ["recon-input", "recon-output", "noisy-img", "denoised-img"]) $(id).removeAttribute("src");
  for (const figure of document.querySelectorAll(".denoise")) figure.hidden = true;
}

async function reconstruct(blob, filename) {
  if (!state.run.can_reconstruct) return;
  const form = new FormData();
  form.append("file", blob, filename);
  form.append("seed", String(clampSeed($("seed").value)));
  if (state.run.conditional) form.append("label", String(chosenLabel() ?? 0));
  const ticket = (latest.recon = (latest.recon || 0) + 1);
  try {
    const result = await (await api(runPath("/reconstruct"), { method: "POST", body: form })).json();
    if (ticket !== latest.recon) return;
    $("recon-input").src = result.input;
    $("recon-output").src = result.reconstruction;
    $("recon-caption").textContent = `reconstruction\nPSNR ${result.psnr_db.toFixed(1)} dB`;
    const denoising = result.denoising;
    for (const figure of document.querySelectorAll(".denoise")) figure.hidden = !denoising;
    if (denoising) {
      $("noisy-img").src = denoising.noisy;
      $("denoised-img").src = denoising.denoised;
      $("noisy-caption").textContent = `noisy input\nPSNR ${denoising.psnr_noisy_db.toFixed(1)} dB`;
      $("denoised-caption").textContent = `denoised\nPSNR ${denoising.psnr_denoised_db.toFixed(1)} dB`;
    }
  } catch (error) {
    toast(error.message);
  }
}

// --- loss curves ----------------------------------------------------------------------------------------------
async function loadLosses() {
  const name = state.run.name;
  try {
    const { series } = await (await api(runPath("/losses"))).json();
    if (state.run.name !== name) return;
    const plots = Object.entries(series).map(([key, { step, value }]) => lossPlot(key, step, value));
    if (!plots.length) {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = "This run has no metrics.jsonl.";
      plots.push(note);
    }
    $("loss-plots").replaceChildren(...plots);
  } catch (error) {
    toast(error.message);
  }
}

function lossPlot(key, steps, values) {
  const ns = "http://www.w3.org/2000/svg";
  const box = document.createElement("div");
  box.className = "plot";
  const title = document.createElement("div");
  title.className = "title";
  const name = document.createElement("span"); name.textContent = key;
  const last = document.createElement("span"); last.textContent = values.length ? values[values.length - 1].toPrecision(3) : "";
  title.append(name, last);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 100 40");
  svg.setAttribute("preserveAspectRatio", "none");
  const [x0, x1] = [Math.min(...steps), Math.max(...steps)];
  const [y0, y1] = [Math.min(...values), Math.max(...values)];
  const x = (s) => (x1 > x0 ? ((s - x0) / (x1 - x0)) * 100 : 50);
  const y = (v) => (y1 > y0 ? 38 - ((v - y0) / (y1 - y0)) * 36 : 20);
  const path = document.createElementNS(ns, "path");
  path.setAttribute("d", steps.map((s, i) => `${i ? "L" : "M"}${x(s).toFixed(2)},${y(values[i]).toFixed(2)}`).join(""));
  svg.append(path);
  box.append(title, svg);
  return box;
}

// --- wiring -----------------------------------------------------------------------------------------------------
function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

window.addEventListener("DOMContentLoaded", () => {
  $("new-seed").addEventListener("click", () => { $("seed").value = randomSeed(); refreshSamples(); });
  $("seed").addEventListener("change", refreshSamples);
  $("count").addEventListener("change", refreshSamples);
  $("class-select").addEventListener("change", () => { refreshSamples(); refreshWalk(); });
  $("seed-a").addEventListener("change", refreshWalk);
  $("seed-b").addEventListener("change", refreshWalk);
  $("new-walk").addEventListener("click", () => {
    $("seed-a").value = randomSeed();
    $("seed-b").value = randomSeed();
    refreshWalk();
  });
  $("walk-t").addEventListener("input", debounce(refreshWalkFrame, 30));
  $("upload").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) reconstruct(file, file.name);
    event.target.value = "";
  });
  setUpCanvas();
  loadRuns().catch((error) => toast(error.message));
});

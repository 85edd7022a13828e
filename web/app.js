// tfcnn web demo: image file or drawing -> canvas at the model's input size -> raw 0-255 float32 NHWC
// -> ONNX -> the top classes as bars.
// Query string: ?model=URL of model.onnx (default: the first shipped model listed in
// models/MANIFEST.json, else models/model.onnx), ?meta=URL of its JSON (default MODEL.json, written by
// `python -m tfcnn.export`), ?k=number of classes shown (default 5).
"use strict";

const params = new URLSearchParams(location.search);
let modelUrl = params.get("model");
let metaUrl = params.get("meta");
const topK = Math.max(1, parseInt(params.get("k") || "5", 10) || 5);

const $ = (id) => document.getElementById(id);
let session, meta, inputName, height, width, channels;

function setState(state, message) {
  document.body.dataset.state = state;
  $("status").textContent = message;
  $("status").className = state === "error" ? "error" : "";
}

async function loadMeta() {
  try {
    const response = await fetch(metaUrl);
    if (response.ok) return await response.json();
  } catch (err) { /* no sidecar: fall back to the model's own input shape and class indices */ }
  return {};
}

// The shipped models (saved_models/MANIFEST.json, served as models/MANIFEST.json): a picker, and the
// default model when the URL names none.
async function shippedModels() {
  try {
    const response = await fetch("models/MANIFEST.json");
    if (response.ok) return Object.entries((await response.json()).models || {});
  } catch (err) { /* not served from saved_models/: no picker */ }
  return [];
}

async function init() {
  const shipped = await shippedModels();
  const urlOf = (name) => `models/${name}/model.onnx`;
  modelUrl = modelUrl || (shipped.length ? urlOf(shipped[0][0]) : "models/model.onnx");
  metaUrl = metaUrl || modelUrl + ".json";
  if (shipped.length) {
    const picker = $("picker");
    picker.replaceChildren(...shipped.map(([name, entry]) => {
      const option = new Option(`${name} (${entry.dataset}, test accuracy ${(100 * entry.test.accuracy).toFixed(2)}%)`,
                                urlOf(name));
      option.selected = urlOf(name) === modelUrl;
      return option;
    }));
    picker.hidden = false;
    picker.addEventListener("change", () => { location.search = `?model=${encodeURIComponent(picker.value)}`; });
  }
  $("model-url").textContent = modelUrl;
  // One thread: no SharedArrayBuffer, so no cross-origin isolation headers are needed.
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL("node_modules/onnxruntime-web/dist/", location.href).href;
  meta = await loadMeta();
  session = await ort.InferenceSession.create(modelUrl, { executionProviders: ["wasm"] });
  inputName = session.inputNames[0];
  const shape = meta.input_shape ||
    (session.inputMetadata && session.inputMetadata[0] && session.inputMetadata[0].shape.slice(1));
  if (!shape || shape.length !== 3 || !shape.every((d) => Number.isInteger(d) && d > 0)) {
    throw new Error(`cannot tell the model's input size; put its JSON at ${metaUrl}`);
  }
  [height, width, channels] = shape;
  $("preview").width = width;
  $("preview").height = height;
  $("file").disabled = false;
  const drawable = channels === 1;  // digits and letters; a drawing says nothing to a CIFAR model
  if (drawable) {
    $("draw-what").textContent = meta.dataset === "notmnist" ? "letter (A-J)" : "digit";
    $("draw").hidden = false;
    clearPad();
  }
  setState("ready", `Ready: ${height}x${width}x${channels} input, ` +
    `${(meta.class_names || []).length || "unnamed"} classes. ${drawable ? "Draw or pick an image." : "Pick an image."}`);
}

// One inference at a time: the drawing pad and the file picker share the session.
let queue = Promise.resolve();
function run(tensor) {
  const next = queue.then(() => session.run({ [inputName]: tensor }));
  queue = next.catch(() => {});
  return next.then((output) => output[session.outputNames[0]].data);
}

// The pixels as tfcnn.predict sees them: PIL's "L" (ITU-R 601-2 luma, same integer rounding) for
// grayscale models, RGB otherwise; no normalisation (the model does it).
function pixels(image) {
  const ctx = $("preview").getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingEnabled = true;
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(image, 0, 0, width, height);
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const data = new Float32Array(height * width * channels);
  for (let i = 0, j = 0; i < rgba.length; i += 4) {
    if (channels === 1) {
      data[j++] = (rgba[i] * 19595 + rgba[i + 1] * 38470 + rgba[i + 2] * 7471 + 0x8000) >> 16;
    } else {
      data[j++] = rgba[i];
      data[j++] = rgba[i + 1];
      data[j++] = rgba[i + 2];
    }
  }
  return new ort.Tensor("float32", data, [1, height, width, channels]);
}

// The top classes, each with its probability as a bar.
function show(probs) {
  const names = meta.class_names && meta.class_names.length === probs.length
    ? meta.class_names : Array.from(probs, (_, i) => String(i));
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b).slice(0, topK);
  const span = (className, text) => Object.assign(document.createElement("span"), { className, textContent: text });
  const list = $("results");
  list.replaceChildren(...order.map((i) => {
    const item = document.createElement("li");
    const bar = span("bar", "");
    bar.append(span("", ""));
    bar.firstChild.style.width = `${(100 * probs[i]).toFixed(1)}%`;
    item.append(span("name", names[i]), bar, span("probability", `${(100 * probs[i]).toFixed(2)}%`));
    item.dataset.name = names[i];
    item.dataset.index = i;
    item.dataset.probability = probs[i];
    return item;
  }));
  $("top1").textContent = names[order[0]];
  $("top1").dataset.index = order[0];
  $("top1").dataset.probability = probs[order[0]];
  $("top1-probability").textContent = `(${(100 * probs[order[0]]).toFixed(2)}%)`;
}

async function classify(file) {
  setState("running", `Classifying ${file.name}…`);
  // No colour management or premultiplication: the raw decoded pixels, as PIL gives them.
  const image = await createImageBitmap(file, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const input = pixels(image);
  image.close();
  show(await run(input));
  document.body.dataset.classified = Number(document.body.dataset.classified || 0) + 1;
  setState("done", `${file.name}: done.`);
}

function clearResults() {
  $("results").replaceChildren();
  for (const id of ["top1", "top1-probability"]) $(id).textContent = "";
  delete $("top1").dataset.index;
  delete $("top1").dataset.probability;
}

// ---------------------------------------------------------------- the drawing pad
// A drawing is white ink on black, as the training images are, and is framed the way its dataset
// framed a glyph before the model sees it: a big, thin, off-centre drawing is nothing like a digit
// of the training set until it is. MNIST (LeCun et al. 1998, "Gradient-based learning applied to
// document recognition"; yann.lecun.com/exdb/mnist): each NIST digit was size-normalised to fit a
// 20x20 box with its aspect ratio kept (the anti-aliasing made the grey levels), then put in the
// 28x28 field with its centre of mass at the field's centre. notMNIST's letters are font glyphs
// rendered to fill the whole 28x28 frame. The box scales with the model's input size.
const FRAMING = {
  mnist: { box: 20 / 28, centre: "mass" },
  notmnist: { box: 1, centre: "box" },
};
const pad = $("pad");
const padCtx = pad.getContext("2d", { willReadFrequently: true });
// pad.dataset: version (bumped by every change to the ink), classified (the version the results
// show), runs (inferences so far); the tests wait on them.
let padVersion = 0, padRuns = 0, padBusy = false, padScheduled = false, stroke = null;

function clearPad() {
  padCtx.fillStyle = "#000";
  padCtx.fillRect(0, 0, pad.width, pad.height);
  padChanged();
}

function padChanged() {
  pad.dataset.version = ++padVersion;
  if (!padScheduled) {
    padScheduled = true;
    requestAnimationFrame(classifyPad);  // live, but at most once a frame however fast the pointer moves
  }
}

// The pad's ink as the model's input (uint8 grey levels, height x width), or null if it is empty.
function framedDrawing() {
  const W = pad.width, H = pad.height;
  const rgba = padCtx.getImageData(0, 0, W, H).data;
  const ink = (x, y) => rgba[4 * (y * W + x)];
  let x0 = W, y0 = H, x1 = -1, y1 = -1;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      if (ink(x, y) > 0) {
        x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y);
      }
    }
  }
  if (x1 < 0) return null;
  const framing = FRAMING[meta.dataset] || FRAMING.mnist;
  const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
  const scale = framing.box * Math.min(height, width) / Math.max(bw, bh);
  const tw = Math.max(1, Math.round(bw * scale)), th = Math.max(1, Math.round(bh * scale));
  // Box-filter down-scaling: each small pixel is the mean of the pad pixels it covers (anti-aliasing).
  const small = new Float64Array(tw * th);
  for (let ty = 0; ty < th; ty++) {
    const sy0 = y0 + Math.floor(ty * bh / th), sy1 = Math.max(sy0 + 1, y0 + Math.floor((ty + 1) * bh / th));
    for (let tx = 0; tx < tw; tx++) {
      const sx0 = x0 + Math.floor(tx * bw / tw), sx1 = Math.max(sx0 + 1, x0 + Math.floor((tx + 1) * bw / tw));
      let sum = 0;
      for (let y = sy0; y < sy1; y++) for (let x = sx0; x < sx1; x++) sum += ink(x, y);
      small[ty * tw + tx] = sum / ((sy1 - sy0) * (sx1 - sx0));
    }
  }
  let ox = (width - tw) / 2, oy = (height - th) / 2;
  if (framing.centre === "mass") {
    let mass = 0, mx = 0, my = 0;
    small.forEach((v, i) => { mass += v; mx += v * (i % tw + 0.5); my += v * (Math.floor(i / tw) + 0.5); });
    ox = width / 2 - mx / mass;
    oy = height / 2 - my / mass;
  }
  ox = Math.round(ox);
  oy = Math.round(oy);
  const grey = new Uint8ClampedArray(height * width);  // what falls outside the field is cut, as in MNIST
  for (let ty = 0; ty < th; ty++) {
    for (let tx = 0; tx < tw; tx++) {
      const x = tx + ox, y = ty + oy;
      if (x >= 0 && x < width && y >= 0 && y < height) grey[y * width + x] = Math.round(small[ty * tw + tx]);
    }
  }
  return grey;
}

async function classifyPad() {
  padScheduled = false;
  if (padBusy) return;  // the run in flight schedules the next one when it ends
  padBusy = true;
  const version = padVersion;
  try {
    const grey = framedDrawing();
    const preview = $("preview").getContext("2d", { willReadFrequently: true });
    const image = preview.createImageData(width, height);
    (grey || new Uint8ClampedArray(height * width)).forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
    preview.putImageData(image, 0, 0);
    if (grey) {
      show(await run(new ort.Tensor("float32", Float32Array.from(grey), [1, height, width, 1])));
      pad.dataset.runs = ++padRuns;
      setState("done", "Your drawing: done.");
    } else {
      clearResults();
      if (document.body.dataset.state === "done") setState("ready", "Draw or pick an image.");
    }
    pad.dataset.classified = version;
  } catch (err) {
    setState("error", `Could not classify the drawing: ${err.message || err}`);
  } finally {
    padBusy = false;
    if (padVersion !== version && document.body.dataset.state !== "error") padChanged();
  }
}

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return [(event.clientX - rect.left) * pad.width / rect.width, (event.clientY - rect.top) * pad.height / rect.height];
}

// Pointer events: mouse, pen and touch alike. The ink is about as thick, relative to a digit that fills
// the pad, as MNIST's pen strokes are relative to its 20x20 box.
pad.addEventListener("pointerdown", (event) => {
  if (!session || event.button > 0) return;
  pad.setPointerCapture(event.pointerId);
  stroke = { id: event.pointerId, last: padPoint(event) };
  padCtx.fillStyle = "#fff";
  padCtx.beginPath();
  padCtx.arc(...stroke.last, pad.width / 28, 0, 2 * Math.PI);
  padCtx.fill();
  padChanged();
});
pad.addEventListener("pointermove", (event) => {
  if (!stroke || event.pointerId !== stroke.id) return;
  padCtx.strokeStyle = "#fff";
  padCtx.lineWidth = pad.width / 14;
  padCtx.lineCap = padCtx.lineJoin = "round";
  padCtx.beginPath();
  padCtx.moveTo(...stroke.last);
  // Every sample of a fast stroke, not only the one per frame the event carries.
  const samples = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of samples.length ? samples : [event]) {
    stroke.last = padPoint(e);
    padCtx.lineTo(...stroke.last);
  }
  padCtx.stroke();
  padChanged();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, (event) => { if (stroke && event.pointerId === stroke.id) stroke = null; });
}
$("clear").addEventListener("click", clearPad);

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) classify(file).catch((err) => setState("error", `Could not classify ${file.name}: ${err.message || err}`));
});

init().catch((err) => setState("error", `Could not load ${modelUrl}: ${err.message || err}`));

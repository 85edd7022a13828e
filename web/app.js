// tfcnn web demo: image file -> canvas at the model's input size -> raw 0-255 float32 NHWC -> ONNX.
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
  setState("ready", `Ready: ${height}x${width}x${channels} input, ` +
    `${(meta.class_names || []).length || "unnamed"} classes. Pick an image.`);
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

function show(probs) {
  const names = meta.class_names && meta.class_names.length === probs.length
    ? meta.class_names : Array.from(probs, (_, i) => String(i));
  const order = Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b).slice(0, topK);
  const list = $("results");
  list.replaceChildren(...order.map((i) => {
    const item = document.createElement("li");
    item.textContent = `${names[i]}: ${(100 * probs[i]).toFixed(2)}%`;
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
  const output = await session.run({ [inputName]: pixels(image) });
  image.close();
  show(output[session.outputNames[0]].data);
  document.body.dataset.classified = Number(document.body.dataset.classified || 0) + 1;
  setState("done", `${file.name}: done.`);
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) classify(file).catch((err) => setState("error", `Could not classify ${file.name}: ${err.message || err}`));
});

init().catch((err) => setState("error", `Could not load ${modelUrl}: ${err.message || err}`));

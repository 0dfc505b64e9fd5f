// The page: the model loads and generates in a module worker (worker.mjs), so this thread stays free to
// paint. It shows the worker's progress as it arrives and paints previews and the result in
// requestAnimationFrame, telling the worker once a preview is on screen (the worker decodes the next
// preview only then). window.hart records what happened, for the end-to-end test:
//   ready {ms, ...the worker's ready message}, paints [{run, kind: "preview"|"final", scale, t}],
//   progress [{run, value, max, t}], runs [{run, ms, ids, ...}]   (t and ms from performance.now(), in ms;
//   run counts the Generate, Edit, Wider and Taller clicks from 1; kind "generate" | "edit" | "grow"; ids: the
//   sampled token ids, imageIds: the ids the image was made from, one array per scale (null for a grow); an
//   edit's run also holds its region: {box} or {mask}, the 0/1 mask as a plain array; a grow's its direction;
//   canvas: the worker's {width, height, windows, drawn, seed}, null for an edit; paints of kind "window" are
//   a grow's windows as they land, scale their index). Dragging on the result draws the box an edit redraws, or
//   with the brush paints the region (window.hartSetBox(x0, y0, x1, y1) and window.hartBrush([[x, y], ...],
//   radius) set them in image pixels, for tests).
const $ = (id) => document.getElementById(id);
const query = new URLSearchParams(location.search);
const record = { isolated: self.crossOriginIsolated, ready: null, paints: [], progress: [], runs: [] };
window.hart = record;

const worker = new Worker(new URL("./worker.mjs", import.meta.url), { type: "module" });
let info = null, current = null, pending = null, frame = 0, runs = 0, box = null, hasResult = false;
let brushed = null; // Uint8Array [H*W] of the result, 1 = painted with the brush
let latentCanvas = null; // the result's canvas ({width, height, windows, drawn, seed}) while it can grow

function fail(message) {
  $("status").textContent = message;
  document.body.dataset.state = "error";
  $("generate").disabled = !info;
  if (current?.shown) { // a grow that failed: the image it started from
    Object.assign($("result"), { width: current.shown.width, height: current.shown.height });
    $("result").getContext("2d").putImageData(current.shown, 0, 0);
    markGrown();
  }
  current = null;
  updateEdit();
}

function setProgress(value) {
  $("progress").value = value;
  record.progress.push({ run: current?.id ?? 0, value, max: $("progress").max, t: performance.now() });
}

// Paint the newest image that arrived (an older preview still waiting is dropped) in the next frame.
function paint() {
  frame = 0;
  const image = pending;
  pending = null;
  if (!image) return;
  const canvas = $(image.type === "final" ? "result" : "preview");
  canvas.width = image.width; canvas.height = image.height;
  canvas.getContext("2d").putImageData(new ImageData(image.pixels, image.width, image.height), 0, 0);
  record.paints.push({ run: image.id, kind: image.type, scale: image.scale, t: performance.now() });
  if (image.type === "preview") { worker.postMessage({ type: "painted" }); return; }
  const ms = performance.now() - current.started;
  record.runs.push({ run: current.id, kind: current.kind, ms, worker: image.ms, timings: image.timings,
    graphs: image.graphs, previews: image.previews, ids: image.ids, imageIds: image.imageIds,
    region: current.region, direction: current.direction, canvas: image.canvas });
  hasResult = true;
  latentCanvas = image.canvas;
  setProgress($("progress").max);
  const { windows, drawn } = image.canvas ?? {};
  const counted = windows > 1 ? `, ${windows} windows (${drawn} drawn now)` : "";
  $("status").textContent = `Done in ${(ms / 1000).toFixed(2)} s: ${image.width}×${image.height} px${counted}.`;
  markGrown();
  current = null;
  const shown = { ...image.timings, previews: image.previews.ms };
  $("details").textContent = Object.entries(shown).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(" · ")
    + ` (${image.previews.decoded} preview${image.previews.decoded === 1 ? "" : "s"})`;
  $("generate").disabled = false;
  updateEdit();
  document.body.dataset.state = "done";
}

const tool = () => $("tool").value; // "box" | "brush"
const region = () => (tool() === "box" ? (box && { box }) : (brushed?.includes(1) ? { mask: Array.from(brushed) } : null));
const trainedSize = () => $("result").width === info?.size && $("result").height === info?.size;
const markGrown = () => $("result").closest("figure").classList.toggle("grown", !trainedSize()); // spans the page
function updateEdit() {
  $("edit").disabled = !(info && hasResult && trainedSize() && region() && !current);
  $("wider").disabled = $("taller").disabled = !(info && latentCanvas && !current);
  $("box").hidden = !box || tool() !== "box";
  $("mask").hidden = tool() !== "brush";
}

// The box to edit, in image pixels [x0, y0, x1, y1), drawn over the result canvas.
function setBox(next) {
  const canvas = $("result"), outline = $("box");
  box = next && next[2] > next[0] && next[3] > next[1] ? next : null;
  if (box) {
    const scale = canvas.clientWidth / canvas.width;
    Object.assign(outline.style, { left: `${canvas.offsetLeft + box[0] * scale}px`, top: `${canvas.offsetTop + box[1] * scale}px`,
      width: `${(box[2] - box[0]) * scale}px`, height: `${(box[3] - box[1]) * scale}px` });
  }
  updateEdit();
}
window.hartSetBox = (x0, y0, x1, y1) => { $("tool").value = "box"; setBox([x0, y0, x1, y1]); };

// The brush paints disks: pixel (x, y) is in the disk of centre (cx, cy) and radius r when
// (x + 0.5 - cx)^2 + (y + 0.5 - cy)^2 <= r^2 (image pixels); the mask is drawn over the result, translucent.
function paintDisk(cx, cy, r) {
  const canvas = $("result"), width = canvas.width, height = canvas.height;
  if (!brushed || brushed.length !== width * height) brushed = new Uint8Array(width * height);
  for (let y = Math.max(0, Math.floor(cy - r)); y < Math.min(height, Math.ceil(cy + r) + 1); y++) {
    for (let x = Math.max(0, Math.floor(cx - r)); x < Math.min(width, Math.ceil(cx + r) + 1); x++) {
      if ((x + 0.5 - cx) ** 2 + (y + 0.5 - cy) ** 2 <= r * r) brushed[y * width + x] = 1;
    }
  }
}
function showMask() {
  const canvas = $("result"), overlay = $("mask"), { width, height } = canvas;
  overlay.width = width; overlay.height = height;
  const pixels = new Uint8ClampedArray(4 * width * height);
  brushed?.forEach((on, i) => { if (on) pixels.set([255, 255, 255, 150], 4 * i); });
  overlay.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
  updateEdit();
}
window.hartBrush = (points, radius) => {
  $("tool").value = "brush";
  for (const [x, y] of points) paintDisk(x, y, radius);
  showMask();
};
$("clear").addEventListener("click", () => { brushed = null; setBox(null); showMask(); });
$("tool").addEventListener("change", updateEdit);
let dragFrom = null;
const pixelAt = (event, round = Math.round) => {
  const canvas = $("result"), scale = canvas.width / canvas.clientWidth;
  return [Math.min(canvas.width, Math.max(0, round(event.offsetX * scale))),
    Math.min(canvas.height, Math.max(0, round(event.offsetY * scale)))];
};
const dragTo = (event) => {
  if (tool() === "brush") { // disks every half radius along the stroke, so a fast drag leaves no gaps
    const [x, y] = pixelAt(event, (v) => v), r = Number($("radius").value) || 1;
    const steps = Math.max(1, Math.ceil(Math.hypot(x - dragFrom[0], y - dragFrom[1]) / (r / 2)));
    for (let k = 1; k <= steps; k++) {
      paintDisk(dragFrom[0] + ((x - dragFrom[0]) * k) / steps, dragFrom[1] + ((y - dragFrom[1]) * k) / steps, r);
    }
    dragFrom = [x, y];
    showMask();
    return;
  }
  const [x, y] = pixelAt(event);
  setBox([Math.min(dragFrom[0], x), Math.min(dragFrom[1], y), Math.max(dragFrom[0], x), Math.max(dragFrom[1], y)]);
};
$("result").addEventListener("pointerdown", (event) => {
  if (!hasResult) return;
  dragFrom = tool() === "brush" ? pixelAt(event, (v) => v) : pixelAt(event);
  if (tool() === "brush") { paintDisk(dragFrom[0], dragFrom[1], Number($("radius").value) || 1); showMask(); }
  $("result").setPointerCapture(event.pointerId);
});
$("result").addEventListener("pointermove", (event) => { if (dragFrom) dragTo(event); });
$("result").addEventListener("pointerup", (event) => { if (dragFrom) { dragTo(event); dragFrom = null; } });

function show(image) {
  if (pending?.type === "final") return; // never replace the result with a late preview
  pending = image;
  if (document.hidden) paint(); // no frames come to a hidden page; paint now so the result is there
  else if (!frame) frame = requestAnimationFrame(paint);
}

worker.onmessage = ({ data }) => {
  if (data.type === "ready") {
    info = data;
    record.ready = { ms: performance.now(), ...data };
    $("progress").max = data.scales.length + 1;
    $("cfg").value = data.cfg;
    const threads = data.backend === "wasm" ? `, ${data.threads} thread${data.threads === 1 ? "" : "s"}` : "";
    $("status").textContent = `Ready (${data.backend}${threads}). ${data.name}, ${data.precision}.`;
    $("generate").disabled = false;
    document.body.dataset.state = "ready";
  } else if (data.type === "error") {
    fail(info ? data.message : `Could not load the model: ${data.message}`);
  } else if (current && data.id === current.id) {
    if (data.type === "progress") {
      setProgress(data.scale + 1);
      const n = info.scales[data.scale];
      $("status").textContent = `Scale ${data.scale + 1} of ${data.scales} (${n}×${n} tokens)…`;
    } else if (data.type === "preview" || data.type === "final") {
      show(data);
    } else if (data.type === "window") {
      paintWindow(data);
    }
  }
};
worker.onerror = (event) => { event.preventDefault(); fail(`The worker failed: ${event.message || "it could not start"}`); };
worker.onmessageerror = () => fail("The worker sent a message this page cannot read.");

worker.postMessage({
  type: "load", model: new URL(query.get("model") || "./model", location.href).href,
  backend: query.get("backend") || "auto", threads: Number(query.get("threads")) || 0,
  optimize: query.get("optimize") || null,
});

function start(kind, direction = null) {
  if (current || !info) return;
  current = { id: ++runs, kind, started: performance.now(), region: kind === "edit" ? region() : null, direction };
  $("generate").disabled = true;
  if (kind === "grow") { // a grown canvas cannot be edited; what is shown comes back if the grow fails
    brushed = null; setBox(null); showMask();
    current.shown = $("result").getContext("2d").getImageData(0, 0, $("result").width, $("result").height);
  }
  updateEdit();
  document.body.dataset.state = "running";
  $("progress").max = kind === "grow" ? 1 : info.scales.length + 1; // a grow's: its windows, once they are known
  setProgress(0);
  $("status").textContent = kind === "edit" ? "Encoding the image and the prompt…"
    : kind === "grow" ? `Growing the canvas ${direction}…` : "Encoding the prompt…";
  // a canvas grows with the seed it was drawn with
  const seed = kind === "grow" ? latentCanvas.seed : Number($("seed").value);
  worker.postMessage({ type: kind, id: current.id, prompt: $("prompt").value, seed, direction,
    options: { cfg: Number($("cfg").value) }, ...(current.region ?? {}) });
}

// A grow's window as it lands: the canvas is enlarged (what is on it kept at the top-left) and the tile painted.
function paintWindow(data) {
  const result = $("result"), context = result.getContext("2d"), [width, height] = data.canvas;
  if (result.width !== width || result.height !== height) {
    const shown = context.getImageData(0, 0, result.width, result.height);
    Object.assign(result, { width, height });
    context.putImageData(shown, 0, 0);
    markGrown();
  }
  context.putImageData(new ImageData(data.pixels, data.width, data.height), data.x, data.y);
  record.paints.push({ run: data.id, kind: "window", scale: data.index, t: performance.now() });
  $("progress").max = data.windows + 1;
  setProgress(data.index + 1);
  $("status").textContent = `Window ${data.index + 1} of ${data.windows} drawn (${width}×${height} px)…`;
}

$("form").addEventListener("submit", (event) => { event.preventDefault(); start("generate"); });
$("edit").addEventListener("click", () => start("edit"));
$("wider").addEventListener("click", () => start("grow", "right"));
$("taller").addEventListener("click", () => start("grow", "down"));

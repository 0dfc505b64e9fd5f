// The demo's module worker: it loads the export (model_loader.mjs) and runs hart_runtime.generate off
// the page's thread, so the page keeps painting. Messages:
//   page -> worker  {type: "load", model, backend?, threads?, optimize?}
//                   {type: "generate", id, prompt, seed, options}  (options: generate's, e.g. {cfg})
//                   {type: "edit", id, prompt, seed, options, box: [x0, y0, x1, y1] | mask: [0/1 per pixel]}
//                   (redraws the box, or the brushed pixels, of the last result, in its pixels; options also
//                   threshold, fill, paste, feather as hart_runtime.edit)
//                   {type: "grow", id, prompt, seed, options, direction: "right" | "down"}  (draws the last result's
//                   canvas one window stride larger, hart_runtime.grow; seed: the canvas's own; not after an edit)
//                   {type: "painted"}  (the page painted the last preview; the next one may be decoded)
//   worker -> page  {type: "ready", ...}  {type: "progress", id, scale, scales}
//                   {type: "preview" | "final", id, scale, width, height, pixels, ...}  {type: "error", message}
//                   {type: "window", id, index, windows, x, y, width, height, pixels, canvas: [W, H]}  (a grow's
//                   window as it lands: its decoded tile at pixel (x, y) of the W x H canvas)
// pixels are RGBA bytes (Uint8ClampedArray) whose buffer is transferred, not copied; the final message also
// carries the sampled token ids of every scale (ids: one array of numbers per scale, row-major) and the ids
// the image was made from (imageIds: an edit's kept tokens are the encoder's; both null for a grow), and
// canvas: {width, height, windows, drawn, seed} (pixels, the windows of its plan and how many this run drew),
// null for an edit (its pixels were pasted over the latent, so it cannot grow).
import { edit, generate, grow, grownSize } from "./hart_runtime.mjs";
import { loadModel } from "./model_loader.mjs";
import { toRGBA } from "./pixels.mjs";

const here = new URL(".", self.location.href);
let ort = null, model = null, busy = false;
let pagePainted = true; // no preview is waiting to be painted
let decodeMs = Infinity; // the last preview decode's time (unknown before the first)
// {width, height, pixels, canvas}: the last final image, what an edit starts from, and the latent canvas a
// grow starts from ({latent, width, height, seed} in latent cells; null after an edit)
let lastResult = null;

// A macrotask boundary: the loop's awaits are microtasks, so without this the page's "painted"
// message would wait until the whole image is done.
const channel = new MessageChannel();
const nextTask = () => new Promise((resolve) => { channel.port1.onmessage = resolve; channel.port2.postMessage(0); });

// Previews cost a decoder run each, about a sixth of one image's work, and the coarsest scales show
// little (a flat field), so a scale's preview is decoded only when the page has painted the previous
// one and previews, this one included, stay within PREVIEW_SHARE of the loop's own time so far. Early
// scales come before that budget allows a decode; the second-to-last scale is decoded anyway when no
// preview was, so every image shows at least one.
const PREVIEW_SHARE = 1 / 3;

async function chooseBackend(wanted) {
  if (wanted === "wasm" || !self.navigator.gpu) return "wasm";
  const adapter = await self.navigator.gpu.requestAdapter().catch(() => null);
  if (adapter) return "webgpu";
  if (wanted === "webgpu") throw new Error("WebGPU was asked for but this browser offers no adapter");
  return "wasm";
}

// Every session's run is timed by graph name (shown under the image).
function timed(sessions, totals) {
  return Object.fromEntries(Object.entries(sessions).map(([name, session]) => [name, new Proxy(session, {
    get(target, key) {
      if (key === "run") {
        return async (...args) => {
          const began = performance.now();
          try { return await target.run(...args); } finally {
            totals[name] = (totals[name] ?? 0) + performance.now() - began;
          }
        };
      }
      const value = Reflect.get(target, key, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  })]));
}

async function load({ model: modelUrl, backend: wanted, threads, optimize }) {
  const start = performance.now();
  const backend = await chooseBackend(wanted);
  const adapterMs = performance.now() - start;
  // The WebAssembly-only build loads the smaller runtime (no WebGPU kernels); the full build is needed
  // only for WebGPU.
  ort = await import(backend === "webgpu" ? "./ort/ort.all.min.mjs" : "./ort/ort.wasm.min.mjs");
  const importMs = performance.now() - start - adapterMs;
  ort.env.wasm.wasmPaths = new URL("./ort/", here).href;
  // WebAssembly threads need cross-origin isolation (SharedArrayBuffer). This model's operators are
  // small, so threads pay off little: half the logical cores, at most 4 (onnxruntime-web's own rule; on
  // a 2-core machine one thread beat two). ?threads=N on the page's URL overrides it.
  const cores = self.navigator.hardwareConcurrency || 1;
  const count = Math.floor(Number(threads)) || Math.min(4, Math.ceil(cores / 2));
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(count, cores)) : 1;
  const providers = backend === "webgpu" ? ["webgpu", "wasm"] : ["wasm"];
  // onnxruntime's own graph rewrites ("all", its default) took a third of the time to open the
  // sessions in WebAssembly and made no run faster for this model, so the wasm backend opens the graphs
  // as exported. ?optimize=basic|extended|all on the page's URL overrides it.
  const level = optimize || (backend === "wasm" ? "disabled" : "all");
  model = await loadModel(ort, new URL(modelUrl, here).href,
    { executionProviders: providers, graphOptimizationLevel: level });
  const { manifest } = model;
  self.postMessage({
    type: "ready", backend, threads: ort.env.wasm.numThreads, cores, isolated: self.crossOriginIsolated, optimize: level,
    name: manifest.model.name, precision: manifest.precision, scales: manifest.schedule.patch_nums,
    cfg: manifest.sampling.cfg, size: manifest.model.config.image_size,
    timings: { adapter: adapterMs, import: importMs, ...model.timings, total: performance.now() - start },
  });
}

async function run({ type, id, prompt, seed, options = {}, box = null, mask: brushed = null, direction }) {
  const started = performance.now();
  const scales = model.manifest.schedule.patch_nums;
  const totals = {};
  const sessions = timed(model.sessions, totals);
  const previews = { decoded: 0, skipped: 0, ms: 0 };
  pagePainted = true;
  const onScale = async (si, fHat) => {
    self.postMessage({ type: "progress", id, scale: si, scales: scales.length });
    if (si >= scales.length - 1) return; // the last scale's image is the result, decoded by generate
    await nextTask();
    const loop = performance.now() - started - previews.ms;
    const lastChance = si === scales.length - 2 && previews.decoded === 0;
    if (!pagePainted || !(lastChance || previews.ms + decodeMs <= PREVIEW_SHARE * loop)) {
      previews.skipped++;
      return;
    }
    const began = performance.now();
    const image = toRGBA((await model.sessions.decoder.run({ f_hat: fHat })).image);
    decodeMs = performance.now() - began;
    previews.ms += decodeMs;
    previews.decoded++;
    pagePainted = false;
    self.postMessage({ type: "preview", id, scale: si, ...image }, [image.pixels.buffer]);
  };
  let result;
  const size = model.manifest.model.config.image_size;
  if (type === "edit") {
    if (!lastResult) throw new Error("generate an image first; an edit redraws a region of the last result");
    if (lastResult.width !== size || lastResult.height !== size) {
      throw new Error(`an edit works on ${size}x${size} images only (this one is ${lastResult.width}x`
        + `${lastResult.height}); generate a new image to edit`);
    }
    const { pixels } = lastResult, [x0, y0, x1, y1] = box ?? [];
    const mask = new Uint8Array(size * size);
    if (brushed) { // the brush's 0/1 mask of the result
      if (brushed.length !== size * size || !brushed.some((v) => v === 1)) {
        throw new Error(`brush over the part of the ${size}x${size} image to edit first`);
      }
      mask.set(brushed);
    } else {
      if (!(0 <= x0 && x0 < x1 && x1 <= size && 0 <= y0 && y0 < y1 && y1 <= size)) {
        throw new Error(`draw a box inside the ${size}x${size} image first`);
      }
      for (let y = y0; y < y1; y++) mask.fill(1, y * size + x0, y * size + x1);
    }
    const rgb = new Float32Array(3 * size * size);
    for (let i = 0; i < size * size; i++) for (let c = 0; c < 3; c++) rgb[3 * i + c] = Math.fround(pixels[4 * i + c] / 255);
    result = await edit(ort, model.manifest, sessions, rgb, mask, prompt, seed, options, onScale);
  } else if (type === "grow") {
    if (!lastResult?.canvas) {
      throw new Error(lastResult ? "an edited image cannot grow (its pixels were pasted over what was drawn); "
        + "generate an image, then grow it" : "generate an image first; growing extends the last result");
    }
    const grown = grownSize(model.manifest, lastResult.canvas, direction); // [W, H] pixels
    const onWindow = ({ tile, ...where }) => {
      const image = toRGBA(tile);
      self.postMessage({ type: "window", id, ...where, ...image, canvas: grown }, [image.pixels.buffer]);
    };
    result = await grow(ort, model.manifest, sessions, lastResult.canvas, grown, prompt, seed, options, onWindow);
  } else {
    result = await generate(ort, model.manifest, sessions, prompt, seed, options, onScale);
    const n = scales[scales.length - 1];
    result = { ...result, latent: result.latent.data, width: n, height: n, seed, windows: 1, drawn: 1 };
  }
  const image = toRGBA(result.image);
  const canvas = type === "edit" ? null : { latent: result.latent, width: result.width, height: result.height, seed };
  lastResult = { ...image, pixels: image.pixels.slice(), canvas };
  const numbers = (list) => list?.map((ids) => Array.from(ids, Number)) ?? null;
  self.postMessage({
    type: "final", id, scale: scales.length - 1, ...image, ms: performance.now() - started,
    timings: result.timings, graphs: totals, previews, ids: numbers(result.ids), imageIds: numbers(result.imageIds),
    canvas: canvas && { width: image.width, height: image.height, windows: result.windows, drawn: result.drawn, seed },
  }, [image.pixels.buffer]);
}

self.onmessage = async ({ data }) => {
  if (data.type === "painted") { pagePainted = true; return; }
  if (busy) { self.postMessage({ type: "error", id: data.id, message: "the worker is busy" }); return; }
  busy = true;
  try {
    if (data.type === "load") await load(data);
    else if (["generate", "edit", "grow"].includes(data.type)) await run(data);
    else throw new Error(`unknown message ${JSON.stringify(data.type)}`);
  } catch (error) {
    self.postMessage({ type: "error", id: data.id, during: data.type, message: error?.message ?? String(error) });
  } finally {
    busy = false;
  }
};

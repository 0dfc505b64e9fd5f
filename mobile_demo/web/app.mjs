// The page: load the export (checking every graph's sha256), then run hart_runtime.generate with
// WebGPU when the browser has it and WebAssembly otherwise, drawing each scale as it arrives.
import * as ort from "./ort/ort.all.min.mjs";
import { generate, loadModel } from "./hart_runtime.mjs";

const $ = (id) => document.getElementById(id);
const MODEL_URL = new URLSearchParams(location.search).get("model") || "./model";
ort.env.wasm.wasmPaths = new URL("./ort/", location.href).href;

function draw(canvas, tensor) { // [1, 3, H, W] in [0, 1] -> canvas pixels
  const [, , h, w] = tensor.dims, data = tensor.data;
  canvas.width = w; canvas.height = h;
  const context = canvas.getContext("2d"), pixels = context.createImageData(w, h);
  for (let i = 0; i < h * w; i++) {
    for (let c = 0; c < 3; c++) pixels.data[4 * i + c] = Math.round(Math.min(1, Math.max(0, data[c * h * w + i])) * 255);
    pixels.data[4 * i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
}

async function main() {
  const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
  const providers = adapter ? ["webgpu", "wasm"] : ["wasm"];
  let model;
  try {
    model = await loadModel(ort, MODEL_URL, { executionProviders: providers });
  } catch (error) {
    $("status").textContent = `Could not load the model: ${error.message}`;
    document.body.dataset.state = "error";
    return;
  }
  const scales = model.manifest.schedule.patch_nums;
  $("progress").max = scales.length + 1;
  $("cfg").value = model.manifest.sampling.cfg;
  $("status").textContent = `Ready (${providers[0]}). ${model.manifest.model.name}, ${model.manifest.precision}.`;
  $("generate").disabled = false;
  document.body.dataset.state = "ready";

  $("form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("generate").disabled = true;
    document.body.dataset.state = "running";
    const started = performance.now();
    try {
      const onScale = async (si, fHat) => {
        $("progress").value = si + 1;
        $("status").textContent = `Scale ${si + 1} of ${scales.length} (${scales[si]}×${scales[si]} tokens)…`;
        draw($("preview"), (await model.sessions.decoder.run({ f_hat: fHat })).image);
      };
      const result = await generate(ort, model.manifest, model.sessions, $("prompt").value,
        Number($("seed").value), { cfg: Number($("cfg").value) }, onScale);
      draw($("result"), result.image);
      $("progress").value = scales.length + 1;
      const seconds = (performance.now() - started) / 1000;
      $("status").textContent = `Done in ${seconds.toFixed(2)} s.`;
      $("details").textContent = Object.entries(result.timings).map(([k, v]) => `${k} ${v.toFixed(0)} ms`).join(" · ");
      document.body.dataset.state = "done";
    } catch (error) {
      $("status").textContent = error.message;
      document.body.dataset.state = "error";
    } finally {
      $("generate").disabled = false;
    }
  });
}

main();

// Replays the golden trace (hart/golden.py) through hart_runtime.generate, with no model: a fake graph
// runtime answers every graph call with the recorded outputs and checks the inputs the loop feeds it
// (tokenized prompt, [cond; uncond] rows, RoPE tables, ids of every scale, residual noise and guidance,
// 8-bit pixels; for the edit case also the filled image fed to the encoder, the forced ids and the mixed
// residual, through hart_runtime.edit). The same checks as hart.golden.ReplayBackend. CI runs it under Node:
//   node replay.mjs TRACE.safetensors MANIFEST.json      -> one JSON line {cases: {name: checks}} or exit 1
import { readFileSync } from "node:fs";
import { edit, generate } from "./hart_runtime.mjs";
import { to8bit } from "./pixels.mjs";

const DTYPES = { F32: Float32Array, I64: BigInt64Array, U8: Uint8Array, BOOL: Uint8Array, F64: Float64Array };

// safetensors: 8-byte little-endian header length, a JSON header, then the raw little-endian arrays
export function readSafetensors(path) {
  const bytes = readFileSync(path);
  const length = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + length).toString("utf8"));
  const arrays = {}, base = 8 + length;
  for (const [name, entry] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const [begin, end] = entry.data_offsets, Type = DTYPES[entry.dtype];
    const copy = bytes.buffer.slice(bytes.byteOffset + base + begin, bytes.byteOffset + base + end);
    arrays[name] = { data: new Type(copy), dims: entry.shape };
  }
  return { arrays, meta: JSON.parse(header.__metadata__.trace) };
}

class Tensor {
  constructor(type, data, dims) { this.type = type; this.data = data; this.dims = dims; }
}

const GRAPHS = ["condition", "step", "update"]; // placeholder tags: 1000 * graph index + output index
const placeholder = (graph, output) => new Tensor("float32", new Float32Array([1000 * GRAPHS.indexOf(graph) + output]), [1]);

function fakeSessions(arrays, c, checks) {
  const a = (key) => arrays[key];
  const p = c.prompt_key, t = c.tokens;
  let scale = 0;
  const expect = (what, got, want, atol = 0) => {
    const g = Array.from(got.data ?? got, Number), w = Array.from(want.data ?? want, Number);
    const same = g.length === w.length && g.every((v, i) => (atol ? Math.abs(v - w[i]) <= atol : Object.is(v, w[i]) || v === w[i]));
    if (!same) throw new Error(`case ${c.name}: ${what} differs from the trace`);
    checks.push(what);
  };
  const tagged = (what, got, graph, output) => expect(what, got, placeholder(graph, output));
  const run = {
    encoder(f) {
      expect("encoder image", f.image, a(`${c.name}/encoder_image`));
      const ids = a(`${c.name}/encoder_ids`), residual = a(`${c.name}/encoder_residual`);
      return { ids: new Tensor("int64", ids.data, ids.dims), residual: new Tensor("float32", residual.data, residual.dims) };
    },
    text_encoder(f) {
      expect("text ids", f.ids, a(`${p}/ids`)); expect("text mask", f.mask, a(`${p}/mask`));
      return { hidden: new Tensor("float32", a(`${p}/hidden`).data, a(`${p}/hidden`).dims) };
    },
    condition(f) {
      const hidden = a(`${p}/hidden`).data, rows = new Float32Array(2 * hidden.length);
      rows.set(hidden);
      expect("condition rows", f.hidden, rows);
      const mask = a(`${p}/mask`).data, null_ = new Uint8Array(mask.length);
      null_[0] = 1;
      expect("condition mask", f.mask, [...mask, ...null_]);
      return { tokens: placeholder("condition", 0), cond_blocks: placeholder("condition", 1), cond_head: placeholder("condition", 2) };
    },
    step(f) {
      const si = scale;
      if (si === 0) tagged(`step ${si} x`, f.x, "condition", 0); else tagged(`step ${si} x`, f.x, "update", 1);
      expect(`step ${si} cos`, f.cos, a(`${p}/cos_${si}`), 1e-6);
      expect(`step ${si} sin`, f.sin, a(`${p}/sin_${si}`), 1e-6);
      const logits = a(`${t}/logits_${si}`);
      return { logits: new Tensor("float32", logits.data, logits.dims), hidden: placeholder("step", 0),
        present_k: placeholder("step", 1), present_v: placeholder("step", 2) };
    },
    update(name, f) {
      const si = scale;
      expect(`scale ${si} ids`, f.ids, a(`${t}/ids_${si}`));
      scale += 1;
      if (name === "update_final") {
        const residual = a(`${c.name}/final_residual`) ?? a(`${c.name}/residual`);
        expect("final residual", f.residual, residual ?? new Float32Array(f.residual.data.length));
        return { f_hat_out: placeholder("update", 0) };
      }
      return { f_hat_out: placeholder("update", 0), next_x: placeholder("update", 1) };
    },
    residual(f) {
      tagged("residual hidden", f.hidden, "step", 0);
      expect("residual noise", f.noise, a(`${c.name}/noise`), 1e-6); // libm cos/sin/log may differ in the last bit
      expect("residual guidance", f.guidance, [Math.fround(c.guidance)]);
      const r = a(`${c.name}/residual`);
      return { residual: new Tensor("float32", r.data, r.dims) };
    },
    decoder() {
      const image = a(`${c.name}/image`);
      return { image: new Tensor("float32", image.data, image.dims) };
    },
  };
  return new Proxy({}, {
    get: (_, name) => ({ run: async (feeds) => (name.startsWith("update_") ? run.update(name, feeds) : run[name](feeds)) }),
  });
}

const OPTION_NAMES = { cfg: "cfg", top_k: "topK", top_p: "topP", temperature: "temperature", residual: "residual",
  residual_guidance: "residualGuidance", threshold: "threshold" };

function sameIds(what, got, want) {
  if (got.length !== want.length || got.some((v, i) => v !== want[i])) throw new Error(`${what} differ`);
}

export async function replay(tracePath, manifestPath) {
  const { arrays, meta } = readSafetensors(tracePath);
  const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
  const results = {};
  for (const c of meta.cases) {
    const checks = [];
    const options = Object.fromEntries(Object.entries(c.options).map(([k, v]) => [OPTION_NAMES[k], v]));
    const sessions = fakeSessions(arrays, c, checks);
    let out;
    if (c.task === "edit") { // the input image [1, S, S, 3] and mask [S, S] as hart_runtime.edit takes them
      const rgb = arrays[`${c.name}/input`].data, mask = arrays[`${c.name}/mask`].data;
      out = await edit({ Tensor }, manifest, sessions, rgb, mask, c.prompt, c.seed, { ...options, compose: false });
      out.imageIds.forEach((ids, si) => sameIds(`case ${c.name}: edited ids ${si}`, ids, arrays[`${c.name}/ids_${si}`].data));
      checks.push("edited ids");
    } else {
      out = await generate({ Tensor }, manifest, sessions, c.prompt, c.seed, { ...options, compose: false });
    }
    const sampledKey = c.task === "edit" ? `${c.name}/sampled` : `${c.tokens}/ids`;
    out.ids.forEach((ids, si) => sameIds(`case ${c.name}: result ids ${si}`, ids, arrays[`${sampledKey}_${si}`].data));
    const image = out.image.data, pixels = arrays[`${c.name}/pixels`].data; // image [1, 3, H, W], pixels [1, H, W, 3]
    const plane = image.length / 3;
    for (let i = 0; i < plane; i++) for (let ch = 0; ch < 3; ch++) {
      if (to8bit(image[ch * plane + i]) !== pixels[3 * i + ch]) throw new Error(`case ${c.name}: pixel ${i} channel ${ch} differs`);
    }
    checks.push("pixels");
    results[c.name] = checks;
  }
  const probe = arrays["rounding/values"].data, rounded = arrays["rounding/pixels"].data;
  probe.forEach((v, i) => { if (to8bit(v) !== rounded[i]) throw new Error(`8-bit rounding of ${v} differs`); });
  return results;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  try {
    console.log(JSON.stringify({ cases: await replay(process.argv[2], process.argv[3]) }));
  } catch (error) {
    console.error(error.message);
    process.exit(1);
  }
}

// The HART loop in JavaScript: the same steps as hart/loop.py, driven by manifest.json alone, with the
// same portable RNG (hart/portable/rng.py), sampler (hart/portable/sampling.py) and definitions
// (manifest `spec`, hart/portable/spec.py). No DOM here: Node replays the golden trace through it
// (replay.mjs) in CI. Loading and checking the graphs is model_loader.mjs's job.

const MASK64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;
const STREAM_MULTIPLIER = 0xd1b54a32d192ed03n;
const MIX1 = 0xbf58476d1ce4e5b9n;
const MIX2 = 0x94d049bb133111ebn;

function mix(z) {
  z = ((z ^ (z >> 30n)) * MIX1) & MASK64;
  z = ((z ^ (z >> 27n)) * MIX2) & MASK64;
  return z ^ (z >> 31n);
}

function streamKey(seed, stream) {
  return mix(mix(BigInt(seed) & MASK64) ^ ((BigInt(stream) * STREAM_MULTIPLIER) & MASK64));
}

// The top 24 bits of draw i of a stream, as a Number.
function top24(key, i) {
  return Number(mix((key + BigInt(i + 1) * GOLDEN) & MASK64) >> 40n);
}

export const rng = {
  tokenStream: (si) => si,
  residualStream: (k) => 2048 + k,
  placementStream: 3072,
  choice(seed, stream, count) { // an integer in [0, count): (bits >> 40) * count >> 24, as rng.choice
    return Math.floor(top24(streamKey(seed, stream), 0) * count / 2 ** 24);
  },
  uniform(seed, stream, count) {
    const key = streamKey(seed, stream);
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = top24(key, i) * 2 ** -24;
    return out;
  },
  normal(seed, stream, count) {
    const key = streamKey(seed, stream);
    const out = new Float32Array(count);
    for (let k = 0; 2 * k < count; k++) {
      const u1 = (top24(key, 2 * k) + 1) * 2 ** -24;
      const u2 = top24(key, 2 * k + 1) * 2 ** -24;
      const r = Math.sqrt(-2 * Math.log(u1));
      out[2 * k] = r * Math.cos(2 * Math.PI * u2);
      if (2 * k + 1 < count) out[2 * k + 1] = r * Math.sin(2 * Math.PI * u2);
    }
    return out;
  },
};

// Inverse-CDF sampling of one row: temperature, top-k (keeping ties), HART's top-p, then the first
// index whose running weight exceeds u * total (weights exp(z - max) in float64).
export function sampleRow(logits, u, topK, topP, temperature) {
  const n = logits.length;
  const z = new Float64Array(n);
  const t32 = Math.fround(temperature); // float32 / float32, as numpy does: exact in double, then rounded once
  for (let i = 0; i < n; i++) z[i] = temperature === 1 ? logits[i] : Math.fround(logits[i] / t32);
  if (topK > 0 && topK < n) {
    const kth = Float64Array.from(z).sort()[n - topK];
    for (let i = 0; i < n; i++) if (z[i] < kth) z[i] = -Infinity;
  }
  if (topP > 0) {
    const order = Array.from(z.keys()).sort((a, b) => z[a] - z[b] || a - b);
    const top = z[order[n - 1]];
    let total = 0;
    for (const i of order) total += Math.exp(z[i] - top);
    let running = 0;
    for (let j = 0; j < n - 1; j++) {
      running += Math.exp(z[order[j]] - top) / total;
      if (running <= 1 - topP) z[order[j]] = -Infinity;
    }
  }
  let max = -Infinity;
  for (let i = 0; i < n; i++) max = Math.max(max, z[i]);
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) cdf[i] = sum += Math.exp(z[i] - max);
  const target = u * sum;
  for (let i = 0; i < n; i++) if (cdf[i] > target) return i;
  return n - 1;
}

// The words as the user typed them ('rød', not its letter runs 'r' and 'd'), at most 10 (Python's rule).
function typedUnknown(prompt, unknown) {
  const strip = (t) => t.replace(/^[.,;:!?"'()]+|[.,;:!?"'()]+$/g, "");
  const typed = [...new Set(prompt.split(/\s+/).filter((token) => {
    const runs = token.toLowerCase().match(/[a-z]+/g) || [];
    return !runs.length || runs.some((r) => unknown.has(r));
  }).map(strip).filter((t) => t))].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const named = typed.slice(0, 10).map((w) => `'${w}'`).join(", ");
  return typed.length > 10 ? `${named} and ${typed.length - 10} more` : named;
}

// manifest.text.grammar: a prompt that is not a sentence the model was trained on is refused with Python's
// sentence (hart/portable/grammar.py check_prompt, step for step; only the "prompt N (...)" opening differs).
export function checkGrammar(g, words) {
  const fail = (problem) => { throw new Error(`the prompt ${problem}; ${g.draws}`); };
  const uniq = (values) => [...new Set(values)];
  const at = words.flatMap((w, i) => (w === "background" ? [i] : []));
  let background = null, rest = words;
  if (at.length > 1) fail("names more than one background");
  if (at.length === 1) {
    const k = at[0];
    if (k === 0 || !g.colors.includes(words[k - 1])) {
      fail("says 'background' without a color before it (e.g. 'on a blue background')");
    }
    let start = k - 1, end = k + 1;
    if (start > 0 && g.articles.includes(words[start - 1])) start -= 1;
    if (start > 0 && g.background_prepositions.includes(words[start - 1])) start -= 1;
    else if (start === 0 && end < words.length && words[end] === "with") end += 1;
    background = words[k - 1];
    rest = [...words.slice(0, start), ...words.slice(end)];
  }
  const chunks = [[]];
  for (const w of rest) { if (w === "and") chunks.push([]); else chunks[chunks.length - 1].push(w); }
  if (chunks.length === 1 && !chunks[0].length) {
    if (background === null) fail("names neither an object nor a background");
    return { background, objects: [] };
  }
  if (chunks.some((c) => !c.length)) fail("has an 'and' with no object on one side");
  if (chunks.length > 2) fail(`names ${chunks.length} objects, and this model draws at most two`);
  const objects = chunks.map((chunk) => {
    let r = g.articles.includes(chunk[0]) ? chunk.slice(1) : chunk;
    const size = r.length && Object.hasOwn(g.sizes, r[0]) ? g.sizes[r[0]] : null;
    if (size) r = r.slice(1);
    if (r.length < 2 || !g.colors.includes(r[0]) || !Object.hasOwn(g.shapes, r[1])) {
      fail(`describes an object as '${chunk.join(" ")}'; write each object as '[a] [size] color shape [position]', `
        + `e.g. 'a small red circle on the left', with a color (${g.colors.join(", ")}) and a shape `
        + `(${uniq(Object.values(g.shapes)).join(", ")})`);
    }
    let position = null;
    if (r.length > 2) {
      const phrase = r.slice(2).join(" ");
      if (!Object.hasOwn(g.positions, phrase)) {
        const known = uniq(Object.values(g.positions)).map((name) => Object.keys(g.positions).find((p) => g.positions[p] === name));
        fail(`places an object '${phrase}', which is not a position this model knows (${known.join(", ")})`);
      }
      position = g.positions[phrase];
    }
    return { color: r[0], shape: g.shapes[r[1]], size, position };
  });
  for (const o of objects) {
    if (o.color === background) fail(`puts a ${o.color} object on a ${background} background, where it would not show`);
  }
  if (objects.length === 2) {
    const [a, b] = objects;
    if ((a.position === null) !== (b.position === null)) {
      fail("places one of its two objects and not the other; name a position for both (e.g. 'on the left' and "
        + "'on the right') or for neither");
    }
    if (a.position !== null) {
      const [ax, ay] = g.coordinates[a.position], [bx, by] = g.coordinates[b.position];
      if (Math.hypot(ax - bx, ay - by) < g.min_pair_distance) {
        fail(`places two objects at ${a.position} and ${b.position}, too close for this model: it places two objects `
          + "at least half the image apart");
      }
    }
  }
  return { background, objects };
}

export function tokenize(manifest, prompt) {
  const text = manifest.text;
  const known = new Map(text.vocab.map((w, i) => [w, i + 2]));
  const words = prompt.toLowerCase().match(/[a-z]+/g) || [];
  const unknown = [...new Set(words.filter((w) => !known.has(w)))].sort();
  if (!words.length || unknown.length) {
    const what = unknown.length ? `unknown word(s) ${typedUnknown(prompt, new Set(unknown))}` : "no words";
    throw new Error(`the prompt has ${what}; this model knows: ${[...text.vocab].sort().join(", ")}`);
  }
  if (words.length > text.max_tokens) throw new Error(`the prompt has ${words.length} words; at most ${text.max_tokens}`);
  if (text.grammar) checkGrammar(text.grammar, words);
  const ids = new BigInt64Array(text.max_tokens);
  const mask = new Uint8Array(text.max_tokens);
  words.forEach((w, i) => { ids[i] = BigInt(known.get(w)); mask[i] = 1; });
  return { ids, mask, length: words.length };
}

function ropeText(positions, invFreq) {
  const half = invFreq.length, dim = 2 * half, rows = positions.length;
  const cos = new Float32Array(rows * dim), sin = new Float32Array(rows * dim);
  positions.forEach((p, r) => {
    for (let j = 0; j < half; j++) {
      const angle = Math.fround(p * invFreq[j]);
      for (const d of [j, j + half]) { cos[r * dim + d] = Math.cos(angle); sin[r * dim + d] = Math.sin(angle); }
    }
  });
  return { cos, sin, dim };
}

function ropeImage(n, last, offset, invFreq) {
  const quarter = invFreq.length, dim = 4 * quarter;
  const cos = new Float32Array(n * n * dim), sin = new Float32Array(n * n * dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    const t = i * n + j;
    const row = Math.fround(Math.fround(Math.fround(i / n) * last) + offset);
    const col = Math.fround(Math.fround(Math.fround(j / n) * last) + offset);
    for (let q = 0; q < quarter; q++) {
      const a = Math.fround(row * invFreq[q]), b = Math.fround(col * invFreq[q]);
      for (const [d, angle] of [[q, a], [q + quarter, a], [q + 2 * quarter, b], [q + 3 * quarter, b]]) {
        cos[t * dim + d] = Math.cos(angle); sin[t * dim + d] = Math.sin(angle);
      }
    }
  }
  return { cos, sin, dim };
}

// The sampling settings of one call: options override the manifest's defaults (manifest.sampling.overrides).
// topK is one number for every scale or one per scale; every number must be finite and in range.
export function resolveSettings(manifest, options = {}) {
  const d = manifest.sampling, scales = manifest.schedule.patch_nums.length;
  const pick = (value, fallback) => (value === undefined || value === null ? fallback : Number(value));
  const settings = {
    cfg: pick(options.cfg, d.cfg), topP: pick(options.topP, d.top_p), temperature: pick(options.temperature, d.temperature),
    residualGuidance: pick(options.residualGuidance, d.residual_guidance ?? 1), residual: options.residual ?? true,
  };
  const topK = options.topK ?? d.top_k;
  settings.topK = Array.isArray(topK) ? topK.map(Number) : new Array(scales).fill(Number(topK));
  for (const name of ["cfg", "topP", "temperature", "residualGuidance"]) {
    if (!Number.isFinite(settings[name])) throw new Error(`${name} must be a finite number (got ${settings[name]})`);
  }
  if (settings.cfg < 0 || !(settings.topP >= 0 && settings.topP < 1) || !(settings.temperature >= 1e-3)
      || settings.residualGuidance < 0 || settings.topK.length !== scales
      || settings.topK.some((k) => !Number.isInteger(k) || k < 0)) {
    throw new Error(`invalid sampling settings: cfg ${settings.cfg} (>= 0), top-p ${settings.topP} (in [0, 1)), `
      + `temperature ${settings.temperature} (>= 0.001), top-k ${settings.topK} (integers >= 0, one or one per scale of `
      + `${scales}), residual guidance ${settings.residualGuidance} (>= 0)`);
  }
  return settings;
}

// positions = cumsum(mask) - 1 (manifest spec.positions); rows [cond; uncond] (spec.rows)
function rowPositions(mask) {
  const positions = new Array(mask.length);
  let count = 0;
  mask.forEach((m, i) => { count += m ? 1 : 0; positions[i] = count - 1; });
  return positions;
}

// Generate one image: the loop of hart/loop.py, step for step (manifest.loop). `ort` provides Tensor,
// `sessions` maps graph names to sessions with run(feeds), `onScale(si, fHat)` sees f_hat after every
// scale (for previews). options: {cfg, topK (number or one per scale), topP, temperature, residual
// (false: discrete only), residualGuidance, forced (an edit's kept tokens), decode (false: no image)}.
// Returns { image (null without decode), latent (the final f_hat [1, C, N, N]), ids, imageIds, residual, timings }.
// ------------------------------------------------------------------------------------------ composition
// hart/portable/compose.py, step for step: a two-object prompt of a model whose manifest has text.compose is
// drawn as its two one-object sentences (same seed; without a named background the second pass takes the
// first one's scale-0 id), joined per token: the second image's where the token centre is strictly nearer
// the second position (squared distances in units of 1/(4n), integers), else the first's.
const article = (word) => ("aeiou".includes(word[0]) ? "an" : "a");

function sentence(c, obj, position, background) {
  const words = [...(obj.size ? [obj.size] : []), obj.color, obj.shape, ...c.position_phrases[position].split(" ")];
  if (background !== null) words.push("on", article(background), background, "background");
  return [article(words[0]), ...words].join(" ");
}

export function composition(manifest, prompt, seed) { // null, or {first, second, places, tied}
  const text = manifest.text, c = text.compose;
  if (!c || !text.grammar) return null;
  const words = prompt.toLowerCase().match(/[a-z]+/g) || [];
  if (!words.length || words.some((w) => !text.vocab.includes(w))) return null;
  let said;
  try { said = checkGrammar(text.grammar, words); } catch { return null; }
  if (said.objects.length !== 2) return null;
  const [a, b] = said.objects;
  const places = a.position === null ? c.pairs[rng.choice(seed, c.placement_stream, c.pairs.length)] : [a.position, b.position];
  return { first: sentence(c, a, places[0], said.background), second: sentence(c, b, places[1], said.background),
    places, tied: said.background === null };
}

export function secondRegion(coordinates, first, second, n) { // Uint8Array [n*n], 1 = the second object's token
  const d2 = (name, y, x) => {
    const [px, py] = coordinates[name].map((v) => Math.round(v * 4 * n));
    return (x - px) ** 2 + (y - py) ** 2;
  };
  const out = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    const y = 2 * (2 * i + 1), x = 2 * (2 * j + 1);
    out[i * n + j] = d2(second, y, x) < d2(first, y, x) ? 1 : 0;
  }
  return out;
}

export async function generate(ort, manifest, sessions, prompt, seed, options = {}, onScale = null) {
  const plan = options.compose === false ? null : composition(manifest, prompt, seed);
  if (!plan) return generatePass(ort, manifest, sessions, prompt, seed, options, onScale);
  const scales = manifest.schedule.patch_nums, size = scales[scales.length - 1];
  const a = await generatePass(ort, manifest, sessions, plan.first, seed, { ...options, decode: false }, onScale);
  let forced = options.forced ?? null;
  if (plan.tied) { // one background: scale 0 of the first pass
    const ids = forced ? forced.ids.map((i) => i.slice()) : scales.map((n) => new BigInt64Array(n * n));
    const keep = forced ? forced.keep.map((k) => k.slice()) : scales.map((n) => new Uint8Array(n * n));
    ids[0][0] = a.imageIds[0][0]; keep[0][0] = 1;
    forced = { ...(forced ?? {}), ids, keep };
  }
  const b = await generatePass(ort, manifest, sessions, plan.second, seed, { ...options, decode: false, forced }, onScale);
  const coordinates = manifest.text.grammar.coordinates;
  const region = (n) => secondRegion(coordinates, plan.places[0], plan.places[1], n);
  const joinTokens = (x, y, n, width = 1) => { // per token of an n x n scale, `width` values each
    const out = x.slice(), taken = region(n);
    for (let t = 0; t < n * n; t++) if (taken[t]) for (let k = 0; k < width; k++) out[t * width + k] = y[t * width + k];
    return out;
  };
  const latent = manifest.model.config.tokenizer.latent_channels, taken = region(size);
  const joined = a.latent.data.slice();
  for (let ch = 0; ch < latent; ch++) for (let t = 0; t < size * size; t++) {
    if (taken[t]) joined[ch * size * size + t] = b.latent.data[ch * size * size + t];
  }
  const latentTensor = new ort.Tensor("float32", joined, a.latent.dims);
  const timings = { ...a.timings };
  for (const [k, v] of Object.entries(b.timings)) timings[k] = (timings[k] ?? 0) + v;
  const started = performance.now();
  const image = options.decode === false ? null : (await sessions.decoder.run({ f_hat: latentTensor })).image;
  if (image) timings.decode = (timings.decode ?? 0) + performance.now() - started;
  const residual = a.residual && new ort.Tensor("float32", joinTokens(a.residual.data, b.residual.data, size, latent),
    a.residual.dims);
  return { image, latent: latentTensor, residual, timings,
    ids: scales.map((n, si) => joinTokens(a.ids[si], b.ids[si], n)),
    imageIds: scales.map((n, si) => joinTokens(a.imageIds[si], b.imageIds[si], n)) };
}

async function generatePass(ort, manifest, sessions, prompt, seed, options = {}, onScale = null) {
  const T = ort.Tensor;
  const settings = resolveSettings(manifest, options);
  const { patch_nums: scales, progress } = manifest.schedule;
  const config = manifest.model.config;
  const { depth, heads, width } = config.transformer;
  const headDim = width / heads, latent = config.tokenizer.latent_channels, size = scales[scales.length - 1];
  const steps = manifest.residual.steps, tokensMax = manifest.text.max_tokens, dim = manifest.text.dim;
  const last = scales.length - 1;
  const timings = {};
  let started = performance.now();
  const run = async (name, feeds) => sessions[name].run(feeds);

  const { ids, mask } = tokenize(manifest, prompt);
  const mask2 = new Uint8Array(2 * tokensMax);
  mask2.set(mask); mask2[tokensMax] = 1; // the unconditional row: only its first token counts as real
  const positions = [...rowPositions(mask), ...new Array(tokensMax).fill(0)];
  const offsets = [positions[tokensMax - 1], 0]; // each row's image RoPE starts after its last real token
  const text = await run("text_encoder", { ids: new T("int64", ids, [1, tokensMax]), mask: new T("bool", mask, [1, tokensMax]) });
  const hidden2 = new Float32Array(2 * tokensMax * dim); // [cond; uncond]: the unconditional features are zero
  hidden2.set(text.hidden.data);
  const cond = await run("condition", { hidden: new T("float32", hidden2, [2, tokensMax, dim]), mask: new T("bool", mask2, [2, tokensMax]) });
  let x = cond.tokens;
  timings.text = performance.now() - started;

  let pastK = new T("float32", new Float32Array(0), [depth, 2, heads, 0, headDim]);
  let pastV = pastK;
  let fHat = new T("float32", new Float32Array(latent * size * size), [1, latent, size, size]);
  const sampled = [], used = [], forced = options.forced ?? null;
  let hidden = null, scaleIds = null;
  for (let si = 0; si < scales.length; si++) {
    started = performance.now();
    const n = scales[si], rows = si === 0 ? tokensMax : n * n;
    let cos, sin;
    if (si === 0) {
      ({ cos, sin } = ropeText(positions, manifest.rope.text_inv_freq));
    } else { // offsets differ per row: the conditional row starts after its last real word, the unconditional at 0
      cos = new Float32Array(2 * rows * headDim); sin = new Float32Array(2 * rows * headDim);
      offsets.forEach((offset, r) => {
        const table = ropeImage(n, size, offset, manifest.rope.image_inv_freq);
        cos.set(table.cos, r * rows * headDim); sin.set(table.sin, r * rows * headDim);
      });
    }
    const out = await run("step", {
      x, cond_blocks: cond.cond_blocks, cond_head: cond.cond_head,
      cos: new T("float32", cos, [2, rows, headDim]), sin: new T("float32", sin, [2, rows, headDim]),
      past_k: pastK, past_v: pastV,
    });
    pastK = out.present_k; pastV = out.present_v; hidden = out.hidden;
    const V = out.logits.dims[2], L = out.logits.dims[1], logits = out.logits.data;
    const t = settings.cfg * progress[si]; // spec.guidance: float64 weight, float32 mix
    const count = n * n, uniforms = rng.uniform(seed, rng.tokenStream(si), count);
    scaleIds = new BigInt64Array(count);
    for (let k = 0; k < count; k++) {
      const position = si === 0 ? L - 1 : k; // scale 0: the last text position
      const row = new Float32Array(V);
      for (let v = 0; v < V; v++) {
        const c = logits[position * V + v], u = logits[(L + position) * V + v];
        row[v] = Math.fround(Math.fround(Math.fround(1 + t) * c) - Math.fround(Math.fround(t) * u));
      }
      scaleIds[k] = BigInt(sampleRow(row, uniforms[k], settings.topK[si], settings.topP, settings.temperature));
    }
    sampled.push(scaleIds);
    if (forced) { // an edit keeps the encoder's ids outside the region (hart/portable/edit.py)
      scaleIds = scaleIds.slice();
      for (let k = 0; k < count; k++) if (forced.keep[si][k]) scaleIds[k] = forced.ids[si][k];
    }
    used.push(scaleIds);
    if (si < last) {
      const next = await run(`update_${si}`, { f_hat: fHat, ids: new T("int64", scaleIds, [1, count]) });
      fHat = next.f_hat_out; x = next.next_x;
      if (onScale) await onScale(si, fHat);
    }
    timings[`scale_${si}`] = performance.now() - started;
  }
  started = performance.now();
  const count = size * size;
  let residual = new T("float32", new Float32Array(count * latent), [1, count, latent]); // residual off: zeros
  if (settings.residual) {
    const noise = new Float32Array(steps * count * latent);
    for (let k = 0; k < steps; k++) noise.set(rng.normal(seed, rng.residualStream(k), count * latent), k * count * latent);
    const guidance = settings.cfg * progress[last] * settings.residualGuidance; // spec.residual_guidance
    residual = (await run("residual", {
      hidden, ids: new T("int64", scaleIds, [1, count]), noise: new T("float32", noise, [steps, count, latent]),
      guidance: new T("float32", new Float32Array([guidance]), []),
    })).residual;
  }
  if (forced && settings.residual) { // kept last-scale tokens keep the encoder's residual
    const mixed = new Float32Array(residual.data);
    for (let k = 0; k < count; k++) {
      if (forced.keep[last][k]) mixed.set(forced.residual.subarray(k * latent, (k + 1) * latent), k * latent);
    }
    residual = new T("float32", mixed, [1, count, latent]);
  }
  const final = await run("update_final", { f_hat: fHat, ids: new T("int64", scaleIds, [1, count]), residual });
  timings[settings.residual ? "residual" : "codes"] = performance.now() - started;
  started = performance.now();
  const image = options.decode === false ? null : (await run("decoder", { f_hat: final.f_hat_out })).image;
  if (image) timings.decode = performance.now() - started;
  if (onScale) await onScale(last, final.f_hat_out);
  return { image, latent: final.f_hat_out, ids: sampled, imageIds: used, residual: settings.residual ? residual : null,
    timings };
}

// ---------------------------------------------------------------------------------------------- editing
// hart/portable/edit.py, step for step: fill, encode, per-scale token masks, forced generation, paste.
// The widths and defaults come from the manifest's `edit` section (these are for exports without one).
const FILL_BAND = 1 / 16, FEATHER = 1 / 32, EDIT_DEFAULTS = { threshold: 0, fill: true, paste: true, feather: true };
const roundHalfEven = (x) => { const r = Math.round(x); return r - x === 0.5 && r % 2 === 1 ? r - 1 : r; };

function dilate(mask, size, steps) {
  let grown = mask;
  for (let step = 0; step < steps; step++) {
    const next = new Uint8Array(size * size);
    for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) {
      let on = 0;
      for (let dy = -1; dy <= 1 && !on; dy++) for (let dx = -1; dx <= 1 && !on; dx++) {
        const yy = y + dy, xx = x + dx;
        if (yy >= 0 && yy < size && xx >= 0 && xx < size && grown[yy * size + xx]) on = 1;
      }
      next[y * size + x] = on;
    }
    grown = next;
  }
  return grown;
}

function overlaps(size, n) { // [n][size] integers: the length cell i and pixel p share, in units of 1/n pixel
  return Array.from({ length: n }, (_, i) => Array.from({ length: size }, (_, p) =>
    Math.max(0, Math.min((i + 1) * size, (p + 1) * n) - Math.max(i * size, p * n))));
}

export function editedTokens(mask, size, scales, threshold) { // per scale Uint8Array [n*n], 1 = redraw
  const cell = threshold * (size * size); // masked area in (1/n pixel)^2, compared exactly (integers < 2^53)
  return scales.map((n) => {
    const a = overlaps(size, n), out = new Uint8Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let area = 0;
      for (let y = 0; y < size; y++) {
        if (!a[i][y]) continue;
        let row = 0;
        for (let x = 0; x < size; x++) if (mask[y * size + x]) row += a[j][x];
        area += a[i][y] * row;
      }
      out[i * n + j] = area > cell ? 1 : 0;
    }
    return out;
  });
}

export function fillMasked(rgb, mask, size, band = FILL_BAND) { // rgb Float32Array [S*S*3] (HWC): the region set to the band's mean
  const ring = dilate(mask, size, Math.max(1, roundHalfEven(band * size)));
  let source = Array.from(mask, (m, i) => (ring[i] && !m ? 1 : 0));
  if (!source.some(Boolean)) source = Array.from(mask, (m) => (m ? 0 : 1));
  const sum = [0, 0, 0];
  let count = 0;
  source.forEach((on, i) => { if (on) { for (let c = 0; c < 3; c++) sum[c] += rgb[3 * i + c]; count++; } });
  const colour = count ? sum.map((v) => Math.fround(v / count)) : [0.5, 0.5, 0.5];
  const filled = rgb.slice();
  mask.forEach((m, i) => { if (m) filled.set(colour, 3 * i); });
  return filled;
}

export function pasteWeights(mask, size, feather = true, width = FEATHER) { // Float32Array [S*S]: 1 = the edit shows
  const weight = Float32Array.from(mask);
  if (!feather) return weight;
  const steps = Math.max(1, roundHalfEven(width * size));
  let grown = Uint8Array.from(mask);
  for (let step = 1; step <= steps; step++) {
    const next = dilate(grown, size, 1);
    for (let i = 0; i < weight.length; i++) if (next[i] && !grown[i]) weight[i] = Math.fround(1 - step / (steps + 1));
    grown = next;
  }
  return weight;
}

// [sum(n*n)] ids of every scale, concatenated in patch_nums order (the encoder's, quantize's) -> one array per scale
function splitIds(ids, scales) {
  let start = 0;
  return scales.map((n) => ids.slice(start, start += n * n));
}

// rgb: the image to edit, Float32Array [S*S*3] in [0, 1] (HWC); mask: Uint8Array [S*S], 1 = redraw.
export async function edit(ort, manifest, sessions, rgb, mask, prompt, seed, options = {}, onScale = null) {
  if (!sessions.encoder) throw new Error("this export has no encoder graph, which editing needs; re-export it");
  const scales = manifest.schedule.patch_nums, size = manifest.model.config.image_size;
  const rules = manifest.edit ?? { fill_band: FILL_BAND, feather: FEATHER, defaults: EDIT_DEFAULTS };
  const [threshold, fill, paste, feather] = ["threshold", "fill", "paste", "feather"].map((k) => options[k] ?? rules.defaults[k]);
  const filled = fill ? fillMasked(rgb, mask, size, rules.fill_band) : rgb;
  const chw = new Float32Array(3 * size * size);
  for (let i = 0; i < size * size; i++) for (let c = 0; c < 3; c++) chw[c * size * size + i] = filled[3 * i + c];
  const encoded = await sessions.encoder.run({ image: new ort.Tensor("float32", chw, [1, 3, size, size]) });
  const keep = editedTokens(mask, size, scales, threshold).map((e) => e.map((v) => 1 - v));
  const forced = { ids: splitIds(encoded.ids.data, scales), keep, residual: encoded.residual.data };
  const result = await generate(ort, manifest, sessions, prompt, seed, { ...options, forced }, onScale);
  if (!paste) return result;
  const weights = pasteWeights(mask, size, feather, rules.feather), out = new Float32Array(result.image.data);
  for (let c = 0; c < 3; c++) for (let i = 0; i < size * size; i++) {
    const w = weights[i], e = out[c * size * size + i], o = rgb[3 * i + c];
    out[c * size * size + i] = Math.fround(Math.fround(e * w) + Math.fround(o * Math.fround(1 - w)));
  }
  return { ...result, image: new ort.Tensor("float32", out, result.image.dims) };
}

// --------------------------------------------------------------------------------------------- canvases
// hart/portable/canvas.py and hart.canvas.draw(start=...), step for step: windows of the trained size on a
// latent canvas, each plain generation or an edit keeping the drawn cells re-quantized, then a tiled decode.
// Latents are Float32Array [C, H, W] (H x W latent cells); masks Uint8Array [H * W], 1 = drawn.
const WINDOW_STREAM_BASE = 1n << 32n, MAX_WINDOWS_PER_SIDE = 2 ** 16;

// The manifest's `canvas` section (these defaults are for exports without one).
export const canvasRules = (manifest) => ({ overlap: manifest.canvas?.overlap ?? 2,
  threshold: manifest.canvas?.threshold ?? 0.5 });

// The seed of window (row, col) of a canvas (rng.window_seed): (0, 0) keeps `seed`. A BigInt.
export function windowSeed(seed, row, col) {
  const inside = (v) => Number.isInteger(v) && v >= 0 && v < MAX_WINDOWS_PER_SIDE;
  if (!inside(row) || !inside(col)) {
    throw new Error(`window (${row}, ${col}) is outside the ${MAX_WINDOWS_PER_SIDE} windows a side the RNG numbers`);
  }
  const value = BigInt(seed);
  if (value < 0n || value > MASK64) throw new Error(`seed must be an integer in [0, 2**64) (got ${seed})`);
  if (row === 0 && col === 0) return value;
  return streamKey(value, WINDOW_STREAM_BASE + BigInt(row * MAX_WINDOWS_PER_SIDE + col));
}

function windowStarts(length, window, stride) { // every stride, the last one flush with the far edge
  const starts = [];
  for (let start = 0; start <= length - window; start += stride) starts.push(start);
  if (starts[starts.length - 1] !== length - window) starts.push(length - window);
  return starts;
}

// The windows of a canvas of [width, height] pixels (canvas.plan): sizes in latent cells, `cell` pixels a cell.
export function plan([width, height], imageSize, latentSize, overlap) {
  const cell = imageSize / latentSize, stride = latentSize - overlap;
  if (!(width >= imageSize && height >= imageSize)) {
    throw new Error(`a canvas must be at least the trained size ${imageSize}x${imageSize} (got ${width}x${height})`);
  }
  if (!Number.isInteger(width / cell) || !Number.isInteger(height / cell)) {
    throw new Error(`canvas sides must be multiples of the model's latent cell, ${cell} pixels (got ${width}x`
      + `${height})`);
  }
  if (!(Number.isInteger(overlap) && overlap >= 0 && overlap < latentSize)) {
    throw new Error(`the window overlap must be 0 to ${latentSize - 1} latent cells (got ${overlap})`);
  }
  const longest = (MAX_WINDOWS_PER_SIDE - 1) * stride + latentSize;
  if (Math.max(width, height) > longest * cell) {
    throw new Error(`a canvas side can be at most ${longest * cell} pixels (got ${width}x${height})`);
  }
  const rows = windowStarts(height / cell, latentSize, stride), cols = windowStarts(width / cell, latentSize, stride);
  const windows = rows.flatMap((y, row) => cols.map((x, col) => ({ row, col, y, x })));
  return { height: height / cell, width: width / cell, window: latentSize, overlap, cell, windows };
}

// latent [C, n, n], known [n * n] -> each unknown cell set, ring by ring outward from the known ones, to the
// float32 mean of its already-set 4-neighbours (canvas.fill_unknown; their sum in the order up, down, left, right).
export function fillUnknown(latent, known, n) {
  const filled = Float32Array.from(latent), done = Uint8Array.from(known), plane = n * n;
  if (!done.includes(1)) return filled;
  while (done.includes(0)) {
    const ring = [];
    for (let y = 0; y < n; y++) for (let x = 0; x < n; x++) {
      const near = [[y - 1, x], [y + 1, x], [y, x - 1], [y, x + 1]]
        .filter(([v, u]) => v >= 0 && v < n && u >= 0 && u < n && done[v * n + u]).map(([v, u]) => v * n + u);
      if (!done[y * n + x] && near.length) ring.push([y * n + x, near]);
    }
    for (const [i, near] of ring) for (let c = 0; c < latent.length / plane; c++) {
      let total = 0;
      for (const j of near) total = Math.fround(total + filled[c * plane + j]);
      filled[c * plane + i] = total / near.length;
    }
    for (const [i] of ring) done[i] = 1;
  }
  return filled;
}

// [size * size] tent weights for blending decoded tiles: w[y][x] = r(y) r(x), r(i) = min(i + 0.5, size - i - 0.5).
export function tileWeights(size) {
  const ramp = Array.from({ length: size }, (_, i) => Math.min(i + 0.5, size - i - 0.5));
  return Float32Array.from({ length: size * size }, (_, k) => ramp[Math.floor(k / size)] * ramp[k % size]);
}

// The size [width, height] in pixels of `canvas` ({width, height} in latent cells) grown by one window stride
// ((N - overlap) cells) to the "right" or "down".
export function grownSize(manifest, canvas, direction) {
  const scales = manifest.schedule.patch_nums, n = scales[scales.length - 1];
  const cell = manifest.model.config.image_size / n, step = (n - canvasRules(manifest).overlap) * cell;
  if (direction !== "right" && direction !== "down") throw new Error(`a canvas grows right or down (got ${direction})`);
  const right = direction === "right" ? step : 0;
  return [canvas.width * cell + right, canvas.height * cell + step - right];
}

// Grow `start` ({latent [C, h, w], width: w, height: h (latent cells), seed}; a generate's result is one window:
// its latent, N x N) to `size` [width, height] pixels: start sits at the top-left and counts as drawn, and each
// window of the new plan with an undrawn cell is drawn in raster order, as hart.canvas.draw(start=...) does.
// onWindow({index, windows, row, col, x, y, tile}) sees each one land (x, y: its top-left pixel; tile: its
// decoded [1, 3, S, S] image). options: generate's, and overlap and threshold (default: the manifest's).
// Returns {latent, width, height, seed, image (the tiled decode [1, 3, H, W]), windows (all), drawn, timings}.
export async function grow(ort, manifest, sessions, start, size, prompt, seed, options = {}, onWindow = null) {
  if (!sessions.quantize) throw new Error("this export has no quantize graph, which growing needs; re-export it");
  if (String(start.seed) !== String(seed)) {
    throw new Error(`a canvas grows with the seed it was started with (${start.seed}, got ${seed})`);
  }
  const scales = manifest.schedule.patch_nums, n = scales[scales.length - 1];
  const channels = manifest.model.config.tokenizer.latent_channels, rules = canvasRules(manifest);
  const layout = plan(size, manifest.model.config.image_size, n, options.overlap ?? rules.overlap);
  const { width, height, cell } = layout, plane = width * height;
  if (start.width > width || start.height > height) {
    throw new Error(`a canvas grows to at least its size (${start.width}x${start.height} cells; asked for ${width}x`
      + `${height})`);
  }
  const latent = new Float32Array(channels * plane), drawn = new Uint8Array(plane);
  for (let y = 0; y < start.height; y++) {
    drawn.fill(1, y * width, y * width + start.width);
    for (let c = 0; c < channels; c++) {
      const from = (c * start.height + y) * start.width;
      latent.set(start.latent.subarray(from, from + start.width), c * plane + y * width);
    }
  }
  const cellsOf = (w) => Array.from({ length: n * n }, (_, k) => (w.y + Math.floor(k / n)) * width + w.x + (k % n));
  const crop = (cells) => Float32Array.from({ length: channels * n * n }, (_, k) => latent[
    Math.floor(k / (n * n)) * plane + cells[k % (n * n)]]);
  const timings = {};
  const add = (stage, ms) => { timings[stage] = (timings[stage] ?? 0) + ms; };
  const decode = async (w) => {
    const began = performance.now();
    const f_hat = new ort.Tensor("float32", crop(cellsOf(w)), [1, channels, n, n]);
    const { image } = await sessions.decoder.run({ f_hat });
    add("decode", performance.now() - began);
    return image;
  };
  const todo = layout.windows.filter((w) => cellsOf(w).some((i) => !drawn[i]));
  if (!todo.length) throw new Error("every cell of the canvas is already drawn: nothing to paint; ask for more");
  const tiles = new Map(); // a drawn window's cells are all final, so its tile is the one the tiled decode needs
  for (const [index, w] of todo.entries()) {
    const cells = cellsOf(w), known = Uint8Array.from(cells, (i) => drawn[i]);
    let forced = null;
    if (known.includes(1)) {
      const began = performance.now();
      const f_hat = new ort.Tensor("float32", fillUnknown(crop(cells), known, n), [1, channels, n, n]);
      const quantized = await sessions.quantize.run({ f_hat });
      add("quantize", performance.now() - began);
      const keep = editedTokens(known.map((v) => 1 - v), n, scales, options.threshold ?? rules.threshold)
        .map((e) => e.map((v) => 1 - v));
      forced = { ids: splitIds(quantized.ids.data, scales), keep, residual: quantized.residual.data };
    }
    const result = await generate(ort, manifest, sessions, prompt, windowSeed(seed, w.row, w.col),
      { ...options, forced, decode: false });
    Object.entries(result.timings).forEach(([stage, ms]) => add(stage, ms));
    cells.forEach((i, k) => {
      if (known[k]) return; // what is drawn never changes
      for (let c = 0; c < channels; c++) latent[c * plane + i] = result.latent.data[c * n * n + k];
      drawn[i] = 1;
    });
    tiles.set(w, await decode(w));
    if (onWindow) await onWindow({ index, windows: todo.length, row: w.row, col: w.col, x: w.x * cell, y: w.y * cell,
      tile: tiles.get(w) });
  }
  const [W, H] = [width * cell, height * cell], side = n * cell, weights = tileWeights(side);
  const total = new Float32Array(3 * W * H), sum = new Float32Array(W * H); // float32 sums, as numpy's
  for (const w of layout.windows) {
    const tile = (tiles.get(w) ?? (await decode(w))).data;
    for (let ty = 0; ty < side; ty++) for (let tx = 0; tx < side; tx++) {
      const p = (w.y * cell + ty) * W + w.x * cell + tx, weight = weights[ty * side + tx];
      sum[p] += weight;
      for (let c = 0; c < 3; c++) total[c * W * H + p] += Math.fround(tile[(c * side + ty) * side + tx] * weight);
    }
  }
  const image = total.map((v, k) => v / sum[k % (W * H)]);
  return { latent, width, height, seed: start.seed, image: new ort.Tensor("float32", image, [1, 3, H, W]),
    windows: layout.windows.length, drawn: todo.length, timings };
}

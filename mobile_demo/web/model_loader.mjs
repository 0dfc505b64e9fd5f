// Load an ONNX export for onnxruntime-web: fetch manifest.json and every graph, refuse any graph whose
// sha256 differs from the manifest, and open one InferenceSession per graph. No DOM here (the page's
// worker uses it, and Node can import it).

export async function sha256Hex(buffer) {
  const digest = await crypto.subtle.digest("SHA-256", buffer);
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function fetchBytes(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.arrayBuffer();
}

// Returns { manifest, sessions, timings }. Every graph is fetched and hashed at once (network and
// hashing overlap); sessions open one after another in manifest order, each as soon as its bytes are
// checked, so the first `InferenceSession.create` (which also starts the WebAssembly runtime) overlaps
// the remaining downloads. timings (ms, from the call): manifest, fetched (last graph in),
// checked (last sha256 done), runtime (first session open: runtime start + that graph), sessions (all
// open), and per graph { fetch, sha256, create }.
export async function loadModel(ort, baseUrl, sessionOptions = {}) {
  const start = performance.now();
  const since = () => performance.now() - start;
  const base = String(baseUrl).replace(/\/+$/, "");
  const response = await fetch(`${base}/manifest.json`);
  if (!response.ok) throw new Error(`${base}/manifest.json: HTTP ${response.status}`);
  const manifest = await response.json();
  const timings = { manifest: since(), fetched: 0, checked: 0, runtime: 0, sessions: 0, graphs: {} };
  const checked = Object.entries(manifest.graphs).map(async ([name, graph]) => {
    const entry = manifest.files?.[graph.file];
    if (!entry?.sha256) throw new Error(`manifest.json lists no sha256 for ${graph.file}`);
    const began = performance.now();
    const bytes = await fetchBytes(`${base}/${graph.file}`);
    const fetched = performance.now();
    timings.fetched = Math.max(timings.fetched, since());
    const digest = await sha256Hex(bytes);
    timings.checked = Math.max(timings.checked, since());
    timings.graphs[name] = { fetch: fetched - began, sha256: performance.now() - fetched, create: 0 };
    if (digest !== entry.sha256) throw new Error(`${graph.file} does not match its sha256 in manifest.json`);
    return [name, bytes];
  });
  checked.forEach((promise) => promise.catch(() => {})); // the first failure is reported below, once
  const sessions = {};
  for (const promise of checked) {
    const [name, bytes] = await promise;
    const began = performance.now();
    sessions[name] = await ort.InferenceSession.create(new Uint8Array(bytes), sessionOptions);
    timings.graphs[name].create = performance.now() - began;
    if (!timings.runtime) timings.runtime = since();
  }
  timings.sessions = since();
  return { manifest, sessions, timings };
}

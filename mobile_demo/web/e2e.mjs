// End-to-end check of the web demo in headless Chromium (playwright-core drives Debian's chromium):
// type a prompt, click generate RUNS times (default 2: a cold and a warm image), then generate each
// further PROMPT SEED CFG triple once in the same page; save each prompt's first image (result.png,
// then result_1.png, result_2.png, ... for the further triples) and a screenshot, and print one JSON
// line: the page's state, what it painted and when during the first run (the page's window.hart
// record), the time until "Ready", each image's time and, per triple, the sampled token ids.
// With EDIT='[{"box": [x0, y0, x1, y1] | "brush": {"points": [[x, y], ...], "radius": r}, "prompt": ...,
// "seed": ..., "cfg": ...}, ...]' in the environment, it then marks each region on the last result in turn
// and clicks "Edit the region": edit_input_K.png (what edit K started from), edit_K.png and its ids ("edits"
// in the JSON line: sampled ids, imageIds (the ids the image used) and the region the page sent).
// With GROW='[{"direction": "right" | "down", "prompt": ..., "cfg": ..., "seed": ...}, ...]', it then grows the
// last result in turn with "Wider →" or "Taller ↓" (after generating a fresh image with that seed, saved as
// grow_start_K.png, when a job names one): grow_K.png and, in "grows", each run's canvas (the worker's {width,
// height, windows, drawn, seed}) and the indices of the windows painted before its result.
//   node e2e.mjs URL OUT_DIR PROMPT SEED CFG [RUNS [PROMPT SEED CFG]...]
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, out, prompt, seed, cfg, runs = "2", ...more] = process.argv.slice(2);
if (more.length % 3) throw new Error("further prompts come as PROMPT SEED CFG triples");
const jobs = [{ prompt, seed, cfg, runs: Number(runs) }];
for (let i = 0; i < more.length; i += 3) jobs.push({ prompt: more[i], seed: more[i + 1], cfg: more[i + 2], runs: 1 });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const settled = (wanted) => wanted.includes(document.body.dataset.state);
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 }); // a phone
  const logs = [];
  page.on("console", (message) => logs.push(message.text()));
  page.on("pageerror", (error) => logs.push(`pageerror: ${error.message}`));
  await page.goto(url);
  await page.waitForFunction(settled, ["ready", "error"], { timeout: 180000 });
  let clicks = 0;
  const failed = async () => (await page.evaluate(() => document.body.dataset.state)) === "error";
  const clickAndWait = async (selector) => { // false when the page shows an error
    await page.click(selector);
    clicks++;
    await page.waitForFunction((n) => window.hart.runs.length >= n || document.body.dataset.state === "error",
      clicks, { timeout: 300000 });
    return !(await failed());
  };
  for (const job of jobs) {
    job.images = [];
    await page.fill("#prompt", job.prompt);
    await page.fill("#seed", job.seed);
    await page.fill("#cfg", job.cfg);
    for (let i = 0; i < job.runs; i++) {
      if (await failed() || !(await clickAndWait("#generate"))) break;
      job.images.push(await page.evaluate(() => document.getElementById("result").toDataURL("image/png")));
      job.firstRun ??= clicks;
    }
  }
  const edits = [];
  const png = (id) => page.evaluate((i) => document.getElementById(i).toDataURL("image/png"), id);
  for (const [k, job] of (process.env.EDIT ? JSON.parse(process.env.EDIT) : []).entries()) {
    if (await failed()) break;
    writeFileSync(`${out}/edit_input_${k}.png`, Buffer.from((await png("result")).split(",")[1], "base64"));
    await page.fill("#prompt", job.prompt);
    await page.fill("#seed", String(job.seed));
    await page.fill("#cfg", String(job.cfg));
    if (job.brush) await page.evaluate(({ points, radius }) => window.hartBrush(points, radius), job.brush);
    else await page.evaluate((b) => window.hartSetBox(...b), job.box);
    if (!(await clickAndWait("#edit"))) break;
    writeFileSync(`${out}/edit_${k}.png`, Buffer.from((await png("result")).split(",")[1], "base64"));
    const run = await page.evaluate((n) => window.hart.runs.find((r) => r.run === n), clicks);
    edits.push({ ...job, image: `edit_${k}.png`, input: `edit_input_${k}.png`, kind: run.kind, ids: run.ids,
      imageIds: run.imageIds, region: run.region });
  }
  const grows = [];
  for (const [k, job] of (process.env.GROW ? JSON.parse(process.env.GROW) : []).entries()) {
    if (await failed()) break;
    await page.fill("#prompt", job.prompt);
    await page.fill("#cfg", String(job.cfg));
    if (job.seed !== undefined) { // a fresh canvas first: an edited result cannot grow
      await page.fill("#seed", String(job.seed));
      if (!(await clickAndWait("#generate"))) break;
      writeFileSync(`${out}/grow_start_${k}.png`, Buffer.from((await png("result")).split(",")[1], "base64"));
    }
    if (!(await clickAndWait(job.direction === "right" ? "#wider" : "#taller"))) break;
    writeFileSync(`${out}/grow_${k}.png`, Buffer.from((await png("result")).split(",")[1], "base64"));
    const { run, paints } = await page.evaluate((n) => ({ run: window.hart.runs.find((r) => r.run === n),
      paints: window.hart.paints.filter((p) => p.run === n) }), clicks);
    const final = paints.find((p) => p.kind === "final");
    grows.push({ ...job, image: `grow_${k}.png`, kind: run.kind, canvas: run.canvas,
      windows: paints.filter((p) => p.kind === "window" && p.t <= final.t).map((p) => p.scale) });
  }
  const state = await page.evaluate((repeats) => {
    const { isolated, ready, paints, progress, runs } = window.hart ?? // absent if app.mjs did not run
      { isolated: self.crossOriginIsolated, ready: null, paints: [], progress: [], runs: [] };
    const first = (entries) => entries.filter((entry) => entry.run === 1);
    return {
      state: document.body.dataset.state, status: document.getElementById("status").textContent,
      details: document.getElementById("details").textContent,
      width: document.getElementById("result").width, height: document.getElementById("result").height,
      viewport: [window.innerWidth, document.documentElement.scrollWidth],
      isolated, workerIsolated: ready?.isolated ?? null, backend: ready?.backend ?? null,
      threads: ready?.threads ?? null, cores: ready?.cores ?? null,
      readySeconds: ready ? ready.ms / 1000 : null, // from the page's navigation start
      readyTimings: ready?.timings ?? null,
      // the first prompt's runs (cold, warm), click -> the result painted
      imageSeconds: runs.filter((run) => run.run <= repeats).map((run) => run.ms / 1000),
      runs, paints: first(paints), progress: first(progress),
    };
  }, jobs[0].runs);
  const images = jobs[0].images;
  state.sameImageEveryRun = images.length > 0 && images.every((image) => image === images[0]);
  state.prompts = jobs.map((job, i) => {
    const file = i === 0 ? "result.png" : `result_${i}.png`;
    if (job.images.length) writeFileSync(`${out}/${file}`, Buffer.from(job.images[0].split(",")[1], "base64"));
    const run = state.runs.find((entry) => entry.run === job.firstRun);
    return { prompt: job.prompt, seed: Number(job.seed), cfg: Number(job.cfg), image: job.images.length ? file : null,
      ids: run?.ids ?? null };
  });
  await page.screenshot({ path: `${out}/screenshot.png`, fullPage: true });
  console.log(JSON.stringify({ ...state, edits, grows, logs }));
} finally {
  await browser.close();
}

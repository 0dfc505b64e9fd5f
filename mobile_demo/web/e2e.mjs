// End-to-end check of the web demo in headless Chromium (playwright-core drives Debian's chromium):
// type a prompt, click generate RUNS times (default 2: a cold and a warm image), save the first image
// and a screenshot, and print one JSON line: the page's state, what it painted and when (the page's
// window.hart record), the time until "Ready" and each image's time.
//   node e2e.mjs URL OUT_DIR PROMPT SEED CFG [RUNS]
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, out, prompt, seed, cfg, runs = "2"] = process.argv.slice(2);
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
  await page.fill("#prompt", prompt);
  await page.fill("#seed", seed);
  await page.fill("#cfg", cfg);
  const images = [];
  for (let i = 0; i < Number(runs); i++) {
    if (await page.evaluate(() => document.body.dataset.state) === "error") break;
    await page.click("#generate");
    await page.waitForFunction((n) => window.hart.runs.length >= n || document.body.dataset.state === "error",
      i + 1, { timeout: 300000 });
    images.push(await page.evaluate(() => document.getElementById("result").toDataURL("image/png")));
  }
  const state = await page.evaluate(() => {
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
      imageSeconds: runs.map((run) => run.ms / 1000), // click -> the result painted
      runs, paints: first(paints), progress: first(progress),
    };
  });
  if (images.length) writeFileSync(`${out}/result.png`, Buffer.from(images[0].split(",")[1], "base64"));
  state.sameImageEveryRun = images.length > 0 && images.every((image) => image === images[0]);
  await page.screenshot({ path: `${out}/screenshot.png`, fullPage: true });
  console.log(JSON.stringify({ ...state, logs }));
} finally {
  await browser.close();
}

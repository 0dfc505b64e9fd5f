// End-to-end check of the web demo in headless Chromium (playwright-core drives Debian's chromium):
// type a prompt, click generate, wait for the image, save it and a screenshot.
//   node e2e.mjs URL OUT_DIR PROMPT SEED CFG
import { writeFileSync } from "node:fs";
import { chromium } from "playwright-core";

const [url, out, prompt, seed, cfg] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, deviceScaleFactor: 2 }); // a phone
  const logs = [];
  page.on("console", (message) => logs.push(message.text()));
  await page.goto(url);
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, { timeout: 180000 });
  await page.fill("#prompt", prompt);
  await page.fill("#seed", seed);
  await page.fill("#cfg", cfg);
  await page.click("#generate");
  await page.waitForFunction(() => ["done", "error"].includes(document.body.dataset.state), null, { timeout: 300000 });
  const state = await page.evaluate(() => ({
    state: document.body.dataset.state, status: document.getElementById("status").textContent,
    details: document.getElementById("details").textContent,
    width: document.getElementById("result").width, height: document.getElementById("result").height,
    image: document.getElementById("result").toDataURL("image/png"),
    viewport: [window.innerWidth, document.documentElement.scrollWidth],
  }));
  writeFileSync(`${out}/result.png`, Buffer.from(state.image.split(",")[1], "base64"));
  await page.screenshot({ path: `${out}/screenshot.png`, fullPage: true });
  delete state.image;
  console.log(JSON.stringify({ ...state, logs }));
} finally {
  await browser.close();
}

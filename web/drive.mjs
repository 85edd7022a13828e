// Drive the demo page in headless Chromium (playwright-core, the system browser, no download):
//   node web/drive.mjs URL IMAGE... -> one JSON line {"results": [{"image", "top1", "index", "probability", "top"}]}
// CHROMIUM=/path/to/chromium overrides /usr/bin/chromium; SCREENSHOT=file.png saves the page after the
// last image. Used by tests/test_web.py.
import { chromium } from "playwright-core";

const [url, ...images] = process.argv.slice(2);
if (!url || images.length === 0) {
  console.error("usage: node drive.mjs URL IMAGE...");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Playwright gives each launch a fresh temporary profile (--user-data-dir).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const logs = [];
  page.on("console", (msg) => logs.push(`${msg.type()}: ${msg.text()}`));
  page.on("pageerror", (err) => logs.push(`pageerror: ${err.message}`));
  await page.goto(url);
  await page.waitForFunction(() => ["ready", "error"].includes(document.body.dataset.state), null, { timeout: 60000 });
  const results = [];
  for (const [n, image] of images.entries()) {
    if (await page.evaluate(() => document.body.dataset.state) === "error") break;
    await page.setInputFiles("#file", image);
    await page.waitForFunction(
      (count) => Number(document.body.dataset.classified || 0) >= count || document.body.dataset.state === "error",
      n + 1, { timeout: 60000 });
    results.push(await page.evaluate((img) => ({
      image: img,
      top1: document.getElementById("top1").textContent,
      index: Number(document.getElementById("top1").dataset.index),
      probability: Number(document.getElementById("top1").dataset.probability),
      top: Array.from(document.querySelectorAll("#results li"), (li) => li.textContent),
    }), image));
  }
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  const state = await page.evaluate(() => document.body.dataset.state);
  const status = await page.evaluate(() => document.getElementById("status").textContent);
  console.log(JSON.stringify({ state, status, results, logs }));
} finally {
  await browser.close();
}

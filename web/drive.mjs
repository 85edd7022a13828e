// Drive the demo page in headless Chromium (playwright-core, the system browser, no download):
//   node web/drive.mjs URL [IMAGE...] [--draw DRAWINGS.json]
//   -> one JSON line {"state", "status", "results": [...], "drawings": [...], "logs"}
// results: {"image", "top1", "index", "probability", "top"} per uploaded image.
// DRAWINGS.json: [{"name": "1", "input": "mouse" or "touch", "strokes": [[[x, y], ...], ...]}] with x, y
// in fractions of the pad's size; each drawing starts on a cleared pad and gives
// {"name", "top1", "index", "probability", "top", "runs" (inferences while drawing), "pixels" (the model's
// input, row-major grey levels)}.
// CHROMIUM=/path/to/chromium overrides /usr/bin/chromium; SCREENSHOT=file.png saves the page at the end.
// Used by tests/test_web.py.
import { readFileSync } from "node:fs";
import { chromium } from "playwright-core";

const args = process.argv.slice(2);
const drawAt = args.indexOf("--draw");
const drawings = drawAt >= 0 ? JSON.parse(readFileSync(args[drawAt + 1], "utf8")) : [];
const [url, ...images] = drawAt >= 0 ? [...args.slice(0, drawAt), ...args.slice(drawAt + 2)] : args;
if (!url || images.length + drawings.length === 0) {
  console.error("usage: node drive.mjs URL [IMAGE...] [--draw DRAWINGS.json]");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  // Playwright gives each launch a fresh temporary profile (--user-data-dir).
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"],
});

const topOf = () => ({
  top1: document.getElementById("top1").textContent,
  index: Number(document.getElementById("top1").dataset.index),
  probability: Number(document.getElementById("top1").dataset.probability),
  top: Array.from(document.querySelectorAll("#results li"),
                  (li) => `${li.dataset.name}: ${(100 * li.dataset.probability).toFixed(2)}%`),
});

// Touch strokes go through the DevTools protocol: Playwright's own touchscreen only taps.
async function stroke(page, cdp, input, points) {
  const steps = 8;  // pointer samples between two points of the stroke, as a hand gives
  if (input === "touch") {
    const touch = (type, point) => cdp.send("Input.dispatchTouchEvent",
      { type, touchPoints: point ? [{ x: point[0], y: point[1] }] : [] });
    await touch("touchStart", points[0]);
    for (let i = 1; i < points.length; i++) {
      const [[ax, ay], [bx, by]] = [points[i - 1], points[i]];
      for (let s = 1; s <= steps; s++) await touch("touchMove", [ax + (bx - ax) * s / steps, ay + (by - ay) * s / steps]);
    }
    await touch("touchEnd");
  } else {
    await page.mouse.move(...points[0]);
    await page.mouse.down();
    for (const point of points.slice(1)) await page.mouse.move(...point, { steps });
    await page.mouse.up();
  }
}

async function draw(page, cdp, drawing) {
  await page.click("#clear");
  const box = await page.locator("#pad").boundingBox();
  const runsBefore = await page.evaluate(() => Number(document.getElementById("pad").dataset.runs || 0));
  for (const points of drawing.strokes) {
    await stroke(page, cdp, drawing.input || "mouse",
                 points.map(([x, y]) => [box.x + x * box.width, box.y + y * box.height]));
  }
  await page.waitForFunction(() => {
    const pad = document.getElementById("pad");
    return pad.dataset.classified === pad.dataset.version || document.body.dataset.state === "error";
  }, null, { timeout: 60000 });
  return {
    name: drawing.name, input: drawing.input || "mouse", ...await page.evaluate(topOf),
    runs: await page.evaluate(() => Number(document.getElementById("pad").dataset.runs || 0)) - runsBefore,
    pixels: await page.evaluate(() => {
      const canvas = document.getElementById("preview");
      const rgba = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
      return Array.from({ length: rgba.length / 4 }, (_, i) => rgba[4 * i]);
    }),
  };
}

try {
  const context = await browser.newContext({ hasTouch: true });
  const page = await context.newPage();
  const cdp = await context.newCDPSession(page);
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
    results.push({ image, ...await page.evaluate(topOf) });
  }
  const drawn = [];
  for (const drawing of drawings) {
    if (await page.evaluate(() => document.body.dataset.state) === "error") break;
    drawn.push(await draw(page, cdp, drawing));
  }
  if (process.env.SCREENSHOT) await page.screenshot({ path: process.env.SCREENSHOT, fullPage: true });
  const state = await page.evaluate(() => document.body.dataset.state);
  const status = await page.evaluate(() => document.getElementById("status").textContent);
  console.log(JSON.stringify({ state, status, results, drawings: drawn, logs }));
} finally {
  await browser.close();
}

// Glass-to-glass latency in the studio page: the fake camera clip carries a frame
// counter (16 black/white blocks along the top); requestVideoFrameCallback reads it
// on the input preview and on the output video, and each output frame's latency is
// its display time minus the display time of the same counter on the input.
// Usage: node glass.mjs '{"url": ..., "chromium": ..., "y4m": ..., "seconds": 20, "prompt": null,
//                         "strength": null, "sessions": 1, "screenshot": null}'
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-video-capture=${cfg.y4m}`,
    "--disable-features=WebRtcHideLocalIpsWithMdns",
  ],
});
const result = {};
// One page per session; all measure at once, so N sessions share the server's CPU.
async function measure(page, seconds) {
  return page.evaluate(async ([seconds, bits, block]) => {
    const canvas = document.createElement("canvas");
    canvas.width = bits * block; canvas.height = block;
    const g = canvas.getContext("2d", { willReadFrequently: true });
    const read = (video) => {
      g.drawImage(video, 0, 0, bits * block, block, 0, 0, bits * block, block);
      const data = g.getImageData(0, 0, bits * block, block).data;
      let value = 0;
      for (let i = 0; i < bits; i += 1) {
        const p = ((block >> 1) * bits * block + i * block + (block >> 1)) * 4;
        value = (value << 1) | (data[p] + data[p + 1] + data[p + 2] > 384 ? 1 : 0);
      }
      return value;
    };
    // input: camera capture time (falls back to preview display time); output: display time
    const capturedAt = new Map();
    const previewAt = new Map();
    const latencies = [];
    const fromPreview = [];
    let outputFrames = 0;
    let captureTimes = 0;
    const watch = (video, onFrame) => {
      const tick = (now, meta) => { onFrame(read(video), meta); video.requestVideoFrameCallback(tick); };
      video.requestVideoFrameCallback(tick);
    };
    watch(document.getElementById("input"), (n, meta) => {
      if (meta.captureTime !== undefined) captureTimes += 1;
      capturedAt.set(n, meta.captureTime ?? meta.expectedDisplayTime);
      previewAt.set(n, meta.expectedDisplayTime);
    });
    watch(document.getElementById("output"), (n, meta) => {
      outputFrames += 1;
      if (capturedAt.has(n)) latencies.push(meta.expectedDisplayTime - capturedAt.get(n));
      if (previewAt.has(n)) fromPreview.push(meta.expectedDisplayTime - previewAt.get(n));
    });
    await new Promise((r) => setTimeout(r, seconds * 1000));
    return {
      latencies_ms: latencies, from_preview_ms: fromPreview, capture_times: captureTimes,
      output_frames: outputFrames, seconds, stats: window.studio.stats,
    };
  }, [seconds, 16, 20]);
}

try {
  const pages = [];
  for (let i = 0; i < (cfg.sessions || 1); i += 1) {
    const page = await browser.newPage();
    await page.goto(`${cfg.url}/`);
    await page.waitForFunction(() => window.studio);
    if (cfg.prompt) await page.fill("#prompt", cfg.prompt);
    if (cfg.strength !== undefined && cfg.strength !== null) await page.fill("#strength", String(cfg.strength));
    await page.click("#start");
    await page.waitForFunction(() => window.studio.state === "live", null, { timeout: 30000 });
    pages.push(page);
  }
  await new Promise((r) => setTimeout(r, 2000));  // every session past its first frames
  result.sessions = await Promise.all(pages.map((page) => measure(page, cfg.seconds)));
  if (cfg.screenshot) {
    await pages[0].setViewportSize({ width: 1280, height: 900 });
    await pages[0].waitForTimeout(1000);
    await pages[0].screenshot({ path: cfg.screenshot, fullPage: true });
  }
  for (const page of pages) await page.click("#stop");
} catch (error) {
  result.error = String(error && error.stack || error);
} finally {
  await browser.close();
  console.log(JSON.stringify(result));
}

// Drives headless chromium through the studio page; prints one JSON result line.
// Usage: node studio.mjs '{"url": ..., "chromium": ..., "y4m": ..., "scenario": "studio"|"token"}'
// The Python test (tests/test_studio_browser.py) owns every assertion on the pixels.
import { chromium } from "playwright-core";

const cfg = JSON.parse(process.argv[2]);
const SIZE = [160, 120];

const browser = await chromium.launch({
  executablePath: cfg.chromium,
  headless: true,
  args: [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
    `--use-file-for-fake-video-capture=${cfg.y4m}`,
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
  ],
});
const context = await browser.newContext();
const log = [];
const result = {};
const deletes = [];  // every DELETE a page sends: a freed session must be the page's doing

function pageUrl(token) {
  return token ? `${cfg.url}/?token=${encodeURIComponent(token)}` : `${cfg.url}/`;
}

async function open(token = cfg.token) {
  const page = await context.newPage();
  page.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => log.push(`pageerror: ${e.message}`));
  page.on("request", (r) => { if (r.method() === "DELETE") deletes.push(new URL(r.url()).pathname); });
  await page.goto(pageUrl(token));
  return page;
}

// Input and output pixels drawn at the same moment, as flat RGB arrays of SIZE.
async function sample(page, inputSel, outputSel) {
  return page.evaluate(([inputSel, outputSel, [w, h]]) => {
    const grab = (sel) => {
      const canvas = document.createElement("canvas");
      canvas.width = w; canvas.height = h;
      const g = canvas.getContext("2d");
      g.drawImage(document.querySelector(sel), 0, 0, w, h);
      const rgba = g.getImageData(0, 0, w, h).data;
      const rgb = [];
      for (let i = 0; i < rgba.length; i += 4) rgb.push(rgba[i], rgba[i + 1], rgba[i + 2]);
      return rgb;
    };
    return { input: grab(inputSel), output: grab(outputSel) };
  }, [inputSel, outputSel, SIZE]);
}

async function playing(page, selector) {
  await page.waitForFunction((sel) => {
    const v = document.querySelector(sel);
    return v && v.videoWidth > 0 && v.currentTime > 0.5 && !v.paused;
  }, selector, { timeout: 30000 });
}

async function sessions(page) {
  return page.evaluate(async () => (await (await fetch("/api/sessions")).json()).map((s) => s.id));
}

async function waitFor(fn, timeoutMs) {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) { if (await fn()) return true; await new Promise((r) => setTimeout(r, 200)); }
  return false;
}

try {
  if (cfg.scenario === "token") {
    const refused = await open(null);
    await refused.waitForFunction(() => window.studio && window.studio.state === "error");
    result.without_token = await refused.evaluate(() => window.studio.lastError);
    const allowed = await open(cfg.token);
    await allowed.waitForSelector("#presets button");
    result.with_token_presets = await allowed.$$eval("#presets button", (bs) => bs.map((b) => b.dataset.look));
    result.url_after_load = await allowed.evaluate(() => location.href);
    // a reload keeps the token (the tab's sessionStorage), still out of the address bar
    await allowed.reload();
    await allowed.waitForSelector("#presets button");
    result.reload_presets = await allowed.$$eval("#presets button", (bs) => bs.map((b) => b.dataset.look));
    result.url_after_reload = await allowed.evaluate(() => location.href);
    // plain http beyond localhost: the camera is refused with a hint, not a TypeError
    const insecure = await context.newPage();
    insecure.on("console", (m) => log.push(`${m.type()}: ${m.text()}`));
    await insecure.addInitScript(() => Object.defineProperty(window, "isSecureContext", { value: false }));
    await insecure.goto(pageUrl(cfg.token));
    await insecure.selectOption("#source", "camera");
    await insecure.click("#start");
    await insecure.waitForFunction(() => window.studio.state === "error");
    result.insecure_error = await insecure.evaluate(() => window.studio.lastError);
  } else {
    // 1. page A: camera, a look preset, start; output plays, then a typed prompt changes it
    const a = await open();
    await a.waitForSelector("#presets button");
    await a.click('#presets button[data-look="night_vision"]');
    await a.click("#start");
    await playing(a, "#output");
    await a.waitForFunction(() => window.studio.state === "live");
    result.a_id = await a.evaluate(() => window.studio.sessionId);
    result.night = await sample(a, "#input", "#output");
    await a.fill("#prompt", "sunset");
    await a.fill("#transition", "0");
    await a.press("#prompt", "Enter");
    await a.waitForFunction(() => window.studio.acks >= 1);
    await a.waitForTimeout(1500);
    result.sunset = await sample(a, "#input", "#output");

    // snapshot (PNG) and record (MediaRecorder WebM) of the output, as downloads
    await a.click("#snapshot");
    await a.click("#record");
    await a.waitForTimeout(2500);
    await a.click("#record");
    await a.waitForSelector('#downloads a[download="recording.webm"]');
    await a.waitForSelector('#downloads a[download="snapshot.png"]');
    result.downloads = await a.evaluate(async () => {
      const read = async (name) => {
        const href = document.querySelector(`#downloads a[download="${name}"]`).href;
        const blob = await (await fetch(href)).blob();
        const url = await new Promise((resolve) => {
          const reader = new FileReader();
          reader.onload = () => resolve(reader.result);
          reader.readAsDataURL(blob);
        });
        return url.slice(url.indexOf(",") + 1);
      };
      return { png: await read("snapshot.png"), webm: await read("recording.webm") };
    });

    // the strength slider blends back to the input, live; then back to the full look
    await a.fill("#strength", "0");
    await a.waitForFunction(() => window.studio.acks >= 2);
    await a.waitForTimeout(1500);
    result.strength0 = await sample(a, "#input", "#output");
    await a.fill("#strength", "1");
    await a.waitForFunction(() => window.studio.acks >= 3);
    await a.waitForTimeout(1500);

    // dragging the slider fast: 40 changes in about half a second, then back to 1
    await a.evaluate(async () => {
      const slider = document.getElementById("strength");
      for (let i = 0; i < 40; i++) {
        slider.value = String((i % 20) / 20);
        slider.dispatchEvent(new Event("input"));
        await new Promise((r) => setTimeout(r, 10));
      }
      slider.value = "1";
      slider.dispatchEvent(new Event("input"));
    });
    await a.waitForTimeout(1500);
    result.drag = await a.evaluate(() => ({
      error: document.getElementById("error").textContent, sent: window.studio.sent.strength,
    }));

    // 2. page B: its own session with no prompt (identity) while A keeps its look
    const b = await open();
    await b.waitForSelector("#presets button");
    await b.click("#start");
    await playing(b, "#output");
    result.b_id = await b.evaluate(() => window.studio.sessionId);
    result.plain = await sample(b, "#input", "#output");
    result.a_meanwhile = await sample(a, "#input", "#output");
    result.sessions_two_pages = await sessions(a);
    await a.waitForFunction(() => window.studio.stats && window.studio.stats.frames_out > 0);
    result.readout = await a.evaluate(() => ({
      fps: document.getElementById("fps").textContent,
      p50: document.getElementById("p50").textContent,
      stats: window.studio.stats,
    }));

    // 3. closing page B frees its session
    await b.close({ runBeforeUnload: true });
    result.b_freed = await waitFor(async () => !(await sessions(a)).includes(result.b_id), 15000);
    await a.click("#stop");
    result.a_freed = await waitFor(async () => (await sessions(a)).length === 0, 15000);

    // 4. WHIP publish from a page's RTCPeerConnection, watched over WHEP
    const c = await open();
    await c.evaluate(async () => {
      const stream = await navigator.mediaDevices.getUserMedia({ video: true });
      document.getElementById("input").srcObject = stream;
      const published = await window.studio.whipPublish(stream, "underwater");
      window.whip = published;
      window.whep = await window.studio.whepWatch(published.sessionId, document.getElementById("output"));
    });
    await playing(c, "#output");
    result.whip_location = await c.evaluate(() => window.whip.location);
    result.whep_location = await c.evaluate(() => window.whep.location);
    result.underwater = await sample(c, "#input", "#output");
    await c.evaluate(async () => {
      await fetch(window.whip.location, { method: "DELETE" });
    });
    result.whip_freed = await waitFor(async () => (await sessions(c)).length === 0, 15000);

    // 5. the input ends by itself (a screen share's "Stop sharing"): the page stops cleanly
    const d = await open();
    await d.waitForSelector("#presets button");
    await d.click("#start");
    await d.waitForFunction(() => window.studio.state === "live", null, { timeout: 30000 });
    result.ended = await d.evaluate(async () => {
      const track = window.studio.input.stream.getVideoTracks()[0];
      track.dispatchEvent(new Event("ended"));
      return {
        state: window.studio.state, error: window.studio.lastError, track: track.readyState,
        start_enabled: !document.getElementById("start").disabled,
      };
    });
    result.ended_freed = await waitFor(async () => (await sessions(d)).length === 0, 15000);

    // 6. the server ends the session (another client deletes it, the server stops): the
    // page says so within seconds, not when the peer connection times out (~30 s)
    const e = await open();
    await e.waitForSelector("#presets button");
    await e.click("#start");
    await e.waitForFunction(() => window.studio.state === "live", null, { timeout: 30000 });
    const eId = await e.evaluate(() => window.studio.sessionId);
    const t0 = Date.now();
    await fetch(`${cfg.url}/api/sessions/${eId}`, { method: "DELETE" });  // from outside the page
    await e.waitForFunction(() => window.studio.state === "error", null, { timeout: 30000 });
    result.ended_by_server = {
      state: await e.evaluate(() => window.studio.state),
      error: await e.evaluate(() => window.studio.lastError),
      ms: Date.now() - t0,
    };
    result.deletes = deletes;
  }
} catch (error) {
  result.error = String(error && error.stack || error);
} finally {
  result.log = log.slice(-40);
  await browser.close();
  console.log(JSON.stringify(result));
}

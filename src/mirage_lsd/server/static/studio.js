// mirage-lsd studio: WebRTC both ways, control over the data channel. Plain JS, no build step.
"use strict";

// The token is read once, then taken out of the address bar (history, screen shares); the
// tab keeps it in sessionStorage, so a reload still works (it goes when the tab closes).
const TOKEN_KEY = "mirage-lsd-token";
const token = (() => {
  const given = new URLSearchParams(location.search).get("token");
  try {
    if (given) sessionStorage.setItem(TOKEN_KEY, given);
    else return sessionStorage.getItem(TOKEN_KEY);
  } catch (_) { /* storage blocked: the token lasts until a reload */ }
  if (given) history.replaceState(null, "", location.pathname);
  return given;
})();
const $ = (id) => document.getElementById(id);
const MAX_SEED = 2 ** 31 - 1;
const TUNING_INTERVAL_MS = 150;  // the server allows 10 control messages a second
const KEPT_DOWNLOADS = 6;  // older download links are dropped and their memory released
const DISCONNECTED_GRACE_MS = 5000;  // a "disconnected" peer that is not back by then has gone

function authHeaders(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(method, path, body, contentType = "application/json") {
  const init = { method, headers: authHeaders(body === undefined ? {} : { "Content-Type": contentType }) };
  if (body !== undefined) init.body = contentType === "application/json" ? JSON.stringify(body) : body;
  const response = await fetch(path, init);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    if (Array.isArray(detail)) detail = detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

// Non-trickle signalling: the offer goes out with all ICE candidates.
async function offerWithCandidates(pc) {
  await pc.setLocalDescription(await pc.createOffer());
  if (pc.iceGatheringState !== "complete") {
    await new Promise((resolve) => {
      const done = () => { if (pc.iceGatheringState === "complete") resolve(); };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, 3000);
    });
  }
  return pc.localDescription.sdp;
}

// The chosen input as {stream, clip}: `clip` is the <video> playing a file, if any.
async function openInput(kind) {
  // Browsers hide camera and screen (no navigator.mediaDevices) on plain http beyond localhost.
  if ((kind === "camera" || kind === "screen") && !(window.isSecureContext && navigator.mediaDevices)) {
    throw new Error("camera and screen need https or localhost: run serve with "
      + "--ssl-certfile/--ssl-keyfile or open it on localhost");
  }
  if (kind === "camera") return { stream: await navigator.mediaDevices.getUserMedia({ video: true, audio: false }) };
  if (kind === "screen") return { stream: await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false }) };
  const file = $("file").files[0];
  if (!file) { $("file").click(); throw new Error("choose a video clip, then press Start again"); }
  const clip = document.createElement("video");
  clip.src = URL.createObjectURL(file);
  clip.muted = true; clip.loop = true;
  await clip.play();
  const capture = clip.captureStream || clip.mozCaptureStream;
  if (!capture) throw new Error("this browser cannot stream a video clip: use the camera or a screen share");
  return { stream: capture.call(clip), clip };
}

function closeInput(input) {
  if (!input) return;
  input.stream.getTracks().forEach((t) => t.stop());
  if (input.clip) { input.clip.pause(); URL.revokeObjectURL(input.clip.src); }
}

function readSteps() {
  const max = Number($("steps").max) || 4;
  return Math.min(max, Math.max(1, Math.round(Number($("steps").value) || 1)));
}

function readSeed() {
  const value = $("seed").value.trim();
  if (value === "" || !Number.isFinite(Number(value))) return null;
  return Math.min(MAX_SEED, Math.max(0, Math.floor(Number(value))));
}

function recordingType() {
  const types = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm", "video/mp4"];
  return types.find((t) => window.MediaRecorder && MediaRecorder.isTypeSupported(t)) || null;
}

const studio = {
  state: "idle", sessionId: null, pc: null, channel: null, input: null,
  stats: null, acks: 0, lastError: null, recorder: null, timer: null,
  run: 0,  // bumped by every start and stop: a start overtaken by either gives up
  sent: {},  // the prompt and tuning the server has (or will have from the offer)
  pendingTuning: null, tuningTimer: null, graceTimer: null,
  requestedPrompt: undefined,  // the last prompt sent: its error stays until one applies

  setState(state, message = "") {
    this.state = state;
    $("status").textContent = state; $("status").dataset.state = state;
    $("error").textContent = message;
    if (message) this.lastError = message;
    const busy = state === "live" || state === "connecting";
    $("start").disabled = busy; $("stop").disabled = !busy;
    $("source").disabled = busy; $("steps").disabled = busy;  // they apply at start
    $("snapshot").disabled = state !== "live"; $("record").disabled = state !== "live";
  },

  fail(message) {
    this.stop();
    this.setState("error", message);
  },

  async start() {
    const run = ++this.run;
    const stale = () => run !== this.run;
    let input = null, pc = null;
    try {
      this.setState("connecting");
      input = await openInput($("source").value);
      if (stale()) { closeInput(input); return; }
      this.input = input;
      const track = input.stream.getVideoTracks()[0];
      track.onended = () => { if (!stale()) this.fail("the input ended"); };  // "Stop sharing"
      $("input").srcObject = input.stream;
      pc = this.pc = new RTCPeerConnection();
      pc.addTransceiver(track, { direction: "sendrecv", streams: [input.stream] });
      pc.ontrack = (event) => { $("output").srcObject = event.streams[0] || new MediaStream([event.track]); };
      pc.onconnectionstatechange = () => {
        if (stale()) return;
        if (pc.connectionState === "connected") this.setState("live");
        if (pc.connectionState === "failed" || pc.connectionState === "closed") {
          this.fail("connection lost");
        }
        clearTimeout(this.graceTimer);
        if (pc.connectionState === "disconnected") {  // often back within seconds
          this.graceTimer = setTimeout(() => {
            if (!stale() && pc.connectionState === "disconnected") this.fail("connection lost");
          }, DISCONNECTED_GRACE_MS);
        }
      };
      const channel = this.channel = pc.createDataChannel("control");
      channel.onmessage = (event) => this.onControl(JSON.parse(event.data));
      channel.onopen = () => this.catchUp();
      // the server closed the session (it stopped, or another client deleted it): the
      // channel closes at once, long before the peer connection times out
      channel.onclose = () => { if (!stale()) this.fail("the session has ended"); };
      const prompt = $("prompt").value.trim() || null;
      const strength = Number($("strength").value);
      const seed = readSeed();
      const body = {
        sdp: await offerWithCandidates(pc), type: "offer", steps: readSteps(),
        transition_frames: 0, prompt, strength, seed,
      };
      if (stale()) return;
      this.sent = { prompt, strength, seed };
      const answer = await (await api("POST", "/api/sessions", body)).json();
      if (stale()) { this.deleteSession(answer.session_id); return; }
      this.sessionId = answer.session_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      if (stale()) return;
      this.timer = setInterval(() => this.send({ type: "stats" }), 1000);
    } catch (error) {
      if (stale()) return;  // stopped meanwhile: whoever stopped owns the page now
      this.fail(String(error.message || error));
    }
  },

  stop() {
    this.run += 1;
    clearInterval(this.timer); clearTimeout(this.tuningTimer); clearTimeout(this.graceTimer);
    this.timer = this.tuningTimer = this.pendingTuning = null;
    if (this.recorder && this.recorder.state !== "inactive") this.recorder.stop();
    if (this.sessionId) this.deleteSession(this.sessionId);
    if (this.pc) this.pc.close();
    closeInput(this.input);
    this.pc = this.channel = this.input = this.sessionId = null;
    this.requestedPrompt = undefined;
    this.setState("idle");
  },

  deleteSession(id) {
    fetch(`/api/sessions/${id}`, { method: "DELETE", headers: authHeaders(), keepalive: true })
      .catch(() => { /* the server is gone: so is the session */ });
  },

  send(message) {
    if (this.channel && this.channel.readyState === "open") {
      this.channel.send(JSON.stringify(message));
      return true;
    }
    return false;
  },

  // A change of prompt or tuning: over the data channel, or over REST while it is not
  // open on a live session (its reply is handled alike). False if neither could take it.
  sendParams(params) {
    if (this.send({ type: "params", ...params })) return true;
    if (this.state !== "live" || !this.sessionId) return false;
    const run = this.run;  // a reply after a stop or a new start is not this page's now
    api("POST", `/api/sessions/${this.sessionId}/prompt`, params)
      .then((response) => response.json())
      .then((applied) => { if (run === this.run) this.onControl({ type: "ack", ...applied }); })
      .catch((error) => {
        if (run === this.run) this.onControl({ type: "error", error: String(error.message || error) });
      });
    return true;
  },

  // Changes made while the data channel was still opening: sent once it is open.
  catchUp() {
    const prompt = $("prompt").value.trim() || null;
    if (prompt && prompt !== this.sent.prompt) this.setPrompt(prompt);
    const strength = Number($("strength").value), seed = readSeed();
    const tuning = {};
    if (strength !== this.sent.strength) tuning.strength = strength;
    if (seed !== null && seed !== this.sent.seed) tuning.seed = seed;
    if (Object.keys(tuning).length) this.setTuning(tuning);
  },

  setPrompt(prompt, transitionFrames = Number($("transition").value) || 0) {
    $("prompt").value = prompt;
    if (this.sendParams({ prompt, transition_frames: transitionFrames })) {
      this.sent.prompt = prompt;
      this.requestedPrompt = prompt;
    }
  },

  // Strength and seed: live, without touching the prompt; at most one message per
  // TUNING_INTERVAL_MS (the last value wins), so dragging the slider is not rate limited.
  setTuning(params) {
    this.pendingTuning = { ...this.pendingTuning, ...params };
    if (this.tuningTimer) return;
    const flush = () => {
      this.tuningTimer = null;
      const pending = this.pendingTuning;
      if (!pending) return;
      this.pendingTuning = null;
      if (this.sendParams(pending)) Object.assign(this.sent, pending);
      this.tuningTimer = setTimeout(flush, TUNING_INTERVAL_MS);
    };
    flush();
  },

  onControl(message) {
    if (message.type === "stats") this.showStats(message.stats);
    else if (message.type === "ack") this.onAck(message);
    else if (message.type === "error") $("error").textContent = message.error;
  },

  // An ack carries what the server applies now: the truth `catchUp` compares with. An
  // error stays shown while the last prompt sent is not the one applied (a refused or
  // failed prompt), even when a later tuning change is acked; other errors go.
  onAck(message) {
    this.acks += 1;
    this.sent = { prompt: message.prompt, strength: message.strength, seed: message.seed };
    const applied = this.requestedPrompt === undefined || this.requestedPrompt === message.prompt;
    if (applied) $("error").textContent = "";
  },

  showStats(stats) {
    this.stats = stats;
    if (stats.extra && stats.extra.error) { this.fail(`the model failed: ${stats.extra.error}`); return; }
    const fmt = (v, d = 0) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
    $("fps").textContent = fmt(stats.fps_recent, 1);  // the last 5 s, not the whole session
    $("ttff").textContent = fmt(stats.ttff_ms);
    $("p50").textContent = fmt(stats.latency_ms.p50);
    $("p90").textContent = fmt(stats.latency_ms.p90);
    $("drops").textContent = `${fmt(stats.drop_ratio * 100, 1)}%`;
  },

  snapshot() {
    const video = $("output");
    if (!video.videoWidth) { $("error").textContent = "no output frame yet"; return; }
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => { if (blob) this.offerDownload(blob, "snapshot.png"); }, "image/png");
  },

  toggleRecord() {
    if (this.recorder && this.recorder.state === "recording") { this.recorder.stop(); return; }
    const type = recordingType();
    if (!type) { $("error").textContent = "this browser cannot record video"; return; }
    const chunks = [];
    try {
      this.recorder = new MediaRecorder($("output").srcObject, { mimeType: type });
    } catch (error) {
      $("error").textContent = `cannot record: ${error.message || error}`;
      return;
    }
    this.recorder.ondataavailable = (event) => chunks.push(event.data);
    this.recorder.onstop = () => {
      $("record").textContent = "Record";
      const extension = type.startsWith("video/mp4") ? "mp4" : "webm";
      this.offerDownload(new Blob(chunks, { type: type.split(";")[0] }), `recording.${extension}`);
    };
    this.recorder.start(1000);
    $("record").textContent = "Stop recording";
  },

  offerDownload(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob); link.download = name; link.textContent = name;
    $("downloads").prepend(link);
    for (const old of [...$("downloads").children].slice(KEPT_DOWNLOADS)) {
      URL.revokeObjectURL(old.href);
      old.remove();
    }
  },

  // WHIP: publish `stream` as a new session; returns {sessionId, location, pc}.
  async whipPublish(stream, prompt) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver(stream.getVideoTracks()[0], { direction: "sendonly" });
    const query = prompt ? `?prompt=${encodeURIComponent(prompt)}` : "";
    const response = await api("POST", `/whip${query}`, await offerWithCandidates(pc), "application/sdp");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    const location = response.headers.get("Location");
    return { sessionId: location.split("/").pop(), location, pc };
  },

  // WHEP: watch a session's output in `video`; returns {location, pc}.
  async whepWatch(sessionId, video) {
    const pc = new RTCPeerConnection();
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.ontrack = (event) => { video.srcObject = new MediaStream([event.track]); };
    const response = await api("POST", `/whep/${sessionId}`, await offerWithCandidates(pc), "application/sdp");
    await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
    return { location: response.headers.get("Location"), pc };
  },
};
window.studio = studio;

async function loadPresets() {
  try {
    const config = await (await api("GET", "/api/config")).json();
    $("steps").max = config.max_steps;
    $("prompt").maxLength = config.max_prompt_chars;
    for (const look of config.looks) {
      const button = document.createElement("button");
      button.type = "button"; button.textContent = look.title; button.dataset.look = look.name;
      button.onclick = () => studio.setPrompt(look.prompt);
      $("presets").append(button);
    }
  } catch (error) {
    studio.setState("error", String(error.message || error));
  }
}

$("start").onclick = () => studio.start();
$("stop").onclick = () => studio.stop();
$("snapshot").onclick = () => studio.snapshot();
$("record").onclick = () => studio.toggleRecord();
$("source").onchange = () => { if ($("source").value === "file") $("file").click(); };
$("prompt-form").onsubmit = (event) => {
  event.preventDefault();
  const prompt = $("prompt").value.trim();
  if (prompt) studio.setPrompt(prompt);
};
$("strength").oninput = () => {
  $("strength-value").textContent = Number($("strength").value).toFixed(2);
  studio.setTuning({ strength: Number($("strength").value) });
};
$("seed").onchange = () => {
  const seed = readSeed();
  if (seed === null) return;
  $("seed").value = seed;  // shows the value actually used
  studio.setTuning({ seed });
};
$("steps").onchange = () => { $("steps").value = readSteps(); };
window.addEventListener("pagehide", () => studio.stop());
studio.setState("idle");
loadPresets();

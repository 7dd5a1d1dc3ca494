// mirage-lsd studio: WebRTC both ways, control over the data channel. Plain JS, no build step.
"use strict";

const token = new URLSearchParams(location.search).get("token");
const $ = (id) => document.getElementById(id);

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

async function openInput(kind) {
  if (kind === "camera") return navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  if (kind === "screen") return navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
  const file = $("file").files[0];
  if (!file) { $("file").click(); throw new Error("choose a video clip, then press Start again"); }
  const clip = document.createElement("video");
  clip.src = URL.createObjectURL(file);
  clip.muted = true; clip.loop = true;
  await clip.play();
  return clip.captureStream();
}

function readSeed() {
  const value = $("seed").value.trim();
  return value === "" ? null : Math.max(0, Math.floor(Number(value)));
}

const studio = {
  state: "idle", sessionId: null, pc: null, channel: null, input: null,
  stats: null, acks: 0, lastError: null, recorder: null, timer: null,

  setState(state, message = "") {
    this.state = state;
    $("status").textContent = state; $("status").dataset.state = state;
    $("error").textContent = message;
    if (message) this.lastError = message;
    const live = state === "live" || state === "connecting";
    $("start").disabled = live; $("stop").disabled = !live;
    $("snapshot").disabled = state !== "live"; $("record").disabled = state !== "live";
  },

  async start() {
    try {
      this.setState("connecting");
      this.input = await openInput($("source").value);
      $("input").srcObject = this.input;
      const pc = (this.pc = new RTCPeerConnection());
      pc.addTransceiver(this.input.getVideoTracks()[0], { direction: "sendrecv", streams: [this.input] });
      pc.ontrack = (event) => { $("output").srcObject = event.streams[0] || new MediaStream([event.track]); };
      pc.onconnectionstatechange = () => {
        if (pc.connectionState === "connected") this.setState("live");
        if (pc.connectionState === "failed") this.setState("error", "connection failed");
      };
      this.channel = pc.createDataChannel("control");
      this.channel.onmessage = (event) => this.onControl(JSON.parse(event.data));
      const prompt = $("prompt").value.trim();
      const body = {
        sdp: await offerWithCandidates(pc), type: "offer",
        steps: Number($("steps").value) || 1,
        transition_frames: 0, prompt: prompt || null,
        strength: Number($("strength").value), seed: readSeed(),
      };
      const answer = await (await api("POST", "/api/sessions", body)).json();
      this.sessionId = answer.session_id;
      await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
      this.timer = setInterval(() => this.send({ type: "stats" }), 1000);
    } catch (error) {
      this.stop();
      this.setState("error", String(error.message || error));
    }
  },

  stop() {
    clearInterval(this.timer);
    if (this.recorder && this.recorder.state !== "inactive") this.recorder.stop();
    if (this.sessionId) {
      fetch(`/api/sessions/${this.sessionId}`, { method: "DELETE", headers: authHeaders(), keepalive: true });
    }
    if (this.pc) this.pc.close();
    if (this.input) this.input.getTracks().forEach((t) => t.stop());
    this.pc = this.channel = this.input = this.sessionId = null;
    this.setState("idle");
  },

  send(message) {
    if (this.channel && this.channel.readyState === "open") this.channel.send(JSON.stringify(message));
  },

  setPrompt(prompt, transitionFrames = Number($("transition").value) || 0) {
    $("prompt").value = prompt;
    if (!this.channel) return;  // applied at start
    this.send({ type: "params", prompt, transition_frames: transitionFrames });
  },

  // Strength and seed: live, without touching the prompt.
  setTuning(params) {
    if (this.channel) this.send({ type: "params", ...params });
  },

  onControl(message) {
    if (message.type === "stats") this.showStats(message.stats);
    else if (message.type === "ack") this.acks += 1;
    else if (message.type === "error") $("error").textContent = message.error;
  },

  showStats(stats) {
    this.stats = stats;
    const fmt = (v, d = 0) => (v === null || v === undefined ? "-" : Number(v).toFixed(d));
    $("fps").textContent = fmt(stats.fps, 1);
    $("ttff").textContent = fmt(stats.ttff_ms);
    $("p50").textContent = fmt(stats.latency_ms.p50);
    $("p90").textContent = fmt(stats.latency_ms.p90);
    $("drops").textContent = `${fmt(stats.drop_ratio * 100, 1)}%`;
  },

  snapshot() {
    const video = $("output");
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth; canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    canvas.toBlob((blob) => this.offerDownload(blob, "snapshot.png"), "image/png");
  },

  toggleRecord() {
    if (this.recorder && this.recorder.state === "recording") { this.recorder.stop(); return; }
    const chunks = [];
    this.recorder = new MediaRecorder($("output").srcObject, { mimeType: "video/webm" });
    this.recorder.ondataavailable = (event) => chunks.push(event.data);
    this.recorder.onstop = () => {
      $("record").textContent = "Record";
      this.offerDownload(new Blob(chunks, { type: "video/webm" }), "recording.webm");
    };
    this.recorder.start(1000);
    $("record").textContent = "Stop recording";
  },

  offerDownload(blob, name) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob); link.download = name; link.textContent = name;
    $("downloads").prepend(link);
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
$("seed").onchange = () => { const seed = readSeed(); if (seed !== null) studio.setTuning({ seed }); };
window.addEventListener("pagehide", () => studio.stop());
studio.setState("idle");
loadPresets();

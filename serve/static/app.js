// semdraw's painting page: a client of docs/protocol.md in plain JavaScript (no build step, no CDN).
// State is the composition: `confirmed` (every edit the server has ordered, in its order) and this
// page's own edits not yet acknowledged (`pending`), shown on top. Masks are painted here with the
// core's round pen (semdraw.edits.stroked), pixel for pixel, and travel as stroke edits.
"use strict";

const PROTOCOL = 1;
// A stroke travels as one edit per this many ms, its polyline growing meanwhile (painted here at once): a
// pointer fires 60-120 moves a second, and every message costs the server far more than a few more points.
const STROKE_SEND_MS = 40;
const MAX_STROKE_POINTS = 4096; // semdraw.edits.MAX_STROKE_POINTS
const params = new URLSearchParams(location.search);
const TOKEN = params.get("token") || "";
const FORMAT = params.get("format") === "png" ? "png" : "jpeg";
const NO_RETRY = new Set([4000, 4001, 4004, 4005]);
// Overlay colours: the window's (semdraw.viewer.palette), from the server's /colors.json, so both agree.
let NAMED = {}, DISTINCT = [[128, 128, 128]];
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ masks: the core's round pen, exactly
function stroked(mask, h, w, points, r, erase) {
  const out = mask.slice();
  const pts = points.length === 1 ? [points[0], points[0]] : points;
  for (let i = 0; i + 1 < pts.length; i++) {
    const [ax, ay] = pts[i], [bx, by] = pts[i + 1];
    const x0 = Math.max(Math.floor(Math.min(ax, bx) - r), 0), x1 = Math.min(Math.ceil(Math.max(ax, bx) + r) + 1, w);
    const y0 = Math.max(Math.floor(Math.min(ay, by) - r), 0), y1 = Math.min(Math.ceil(Math.max(ay, by) + r) + 1, h);
    const dx = bx - ax, dy = by - ay, len2 = dx * dx + dy * dy;
    for (let y = y0; y < y1; y++) {
      for (let x = x0; x < x1; x++) {
        const t = len2 === 0 ? 0 : Math.min(1, Math.max(0, ((x - ax) * dx + (y - ay) * dy) / len2));
        const ex = x - ax - t * dx, ey = y - ay - t * dy;
        if (ex * ex + ey * ey <= r * r) out[y * w + x] = erase ? 0 : 255;
      }
    }
  }
  return out;
}

// ------------------------------------------------------------------ bytes, PNG, base64
function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}
function fromBase64(text) { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); }

async function maskToPng(mask, h, w) {
  const c = new OffscreenCanvas(w, h), ctx = c.getContext("2d"), img = ctx.createImageData(w, h);
  for (let i = 0; i < mask.length; i++) { const v = mask[i]; img.data.set([v, v, v, 255], 4 * i); }
  ctx.putImageData(img, 0, 0);
  return toBase64(new Uint8Array(await (await c.convertToBlob({ type: "image/png" })).arrayBuffer()));
}
async function pngToMask(text, h, w) {
  const bitmap = await createImageBitmap(new Blob([fromBase64(text)], { type: "image/png" }),
    { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const c = new OffscreenCanvas(w, h), ctx = c.getContext("2d");
  ctx.drawImage(bitmap, 0, 0);
  const rgba = ctx.getImageData(0, 0, w, h).data, out = new Uint8Array(w * h);
  for (let i = 0; i < out.length; i++) out[i] = rgba[4 * i];
  return out;
}

// ------------------------------------------------------------------ the composition (request contract)
function brushColor(prompt, index) {
  for (const word of prompt.toLowerCase().replace(/,/g, " ").split(/\s+/)) if (NAMED[word]) return NAMED[word];
  return DISTINCT[index % DISTINCT.length];
}
function emptyComposition(h, w) {
  return { height: h, width: w, seed: 0, brushes: [], background: { prompt: "", negative_prompt: "", image: null },
    sampling: null };
}
function clone(c) { return { ...c, brushes: c.brushes.map((b) => ({ ...b })), background: { ...c.background } }; }
async function compositionToDict(c) {
  const brushes = [];
  for (const b of c.brushes) brushes.push({ ...b, mask: await maskToPng(b.mask, c.height, c.width) });
  const out = { format: 2, height: c.height, width: c.width, brushes, background: c.background, seed: c.seed };
  if (c.sampling) out.sampling = c.sampling;
  return out;
}
async function compositionFromDict(d) {
  const brushes = [];
  for (const b of d.brushes || []) brushes.push({ negative_prompt: "", alpha: 1, blur: 0, strength: 1, enabled: true,
    ...b, mask: await pngToMask(b.mask, d.height, d.width) });
  return { height: d.height, width: d.width, seed: d.seed || 0, brushes,
    background: { prompt: "", negative_prompt: "", image: null, ...(d.background || {}) }, sampling: d.sampling || null };
}
// An edit here is its wire form plus `_mask`, the decoded mask of set_mask / set_brush.
async function decodeEdit(e, h, w) {
  if (e.edit === "set_mask") e._mask = await pngToMask(e.mask, h, w);
  if (e.edit === "set_brush") e._mask = await pngToMask(e.brush.mask, h, w);
  return e;
}
function wire(e) { const { _mask, ...rest } = e; return rest; }
function applyEdit(c, e) {
  const out = clone(c), at = (name) => out.brushes.findIndex((b) => b.name === name);
  const i = "name" in e ? at(e.name) : -1;
  switch (e.edit) {
    case "stroke": out.brushes[i].mask = stroked(out.brushes[i].mask, c.height, c.width, e.points, e.radius, e.erase); break;
    case "set_mask": out.brushes[i].mask = e._mask; break;
    case "update_brush": for (const k of ["prompt", "negative_prompt", "alpha", "blur", "strength", "enabled"])
      if (e[k] !== null && e[k] !== undefined) out.brushes[i][k] = e[k]; break;
    case "set_brush": { const b = { ...e.brush, mask: e._mask }, j = at(b.name); if (j >= 0) out.brushes[j] = b; else out.brushes.push(b); break; }
    case "remove_brush": out.brushes.splice(i, 1); break;
    case "move_brush": { const [b] = out.brushes.splice(i, 1); out.brushes.splice(e.index, 0, b); break; }
    case "set_background": out.background = { ...e.background }; break;
    case "set_seed": out.seed = e.seed; break;
    case "set_sampling": out.sampling = e.sampling; break;
  }
  return out;
}

// ------------------------------------------------------------------ the page's state
const state = {
  confirmed: null, pending: new Map(), next: 0, view: null, current: null, seq: 0, session: params.get("session"),
  sessionToken: params.get("key"), ws: null, connections: 0, failures: 0, frames: 0, frameSeq: -1, fps: 0,
  lastFrameAt: 0, lastFrame: null, lastFramePng: null, sentAt: new Map(), seqSentAt: new Map(), undo: [], redo: [],
  status: {}, messages: [], background: null, inFlightAcks: 0, unsent: null,
};
function show() { state.view = [...state.pending.values()].reduce(applyEdit, state.confirmed); render(); }

async function edit(e, { later = false } = {}) {
  // Applied here at once; sent (a stroke: within STROKE_SEND_MS, see paintTo); confirmed when the server's
  // ack comes back in its order. Whatever stroke is still unsent goes first: the order is the painter's.
  sendStroke();
  state.next += 1;
  state.pending.set(state.next, e);
  state.view = applyEdit(state.view, e);
  render();
  if (later) {
    state.unsent = state.next;
    setTimeout(sendStroke, STROKE_SEND_MS);
  } else {
    state.sentAt.set(state.next, performance.now());
    send({ type: "edit", seq: state.next, edit: wire(e) });
  }
}
function sendStroke() {
  const yours = state.unsent;
  if (yours === null) return;
  state.unsent = null;
  const e = state.pending.get(yours);
  if (!e) return;
  state.sentAt.set(yours, performance.now());
  send({ type: "edit", seq: yours, edit: wire(e) });
}
function send(message) { if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify(message)); }
function say(text) { state.messages = [...state.messages.slice(-4), text]; renderMessages(); }

// ------------------------------------------------------------------ the connection
let chain = Promise.resolve();
async function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
  const ws = new WebSocket(url);
  ws.binaryType = "arraybuffer";
  state.ws = ws;
  setConnection("connecting…", "");
  ws.onopen = async () => {
    const hello = { type: "hello", protocol: PROTOCOL, token: TOKEN, composition: await compositionToDict(state.view),
      stream: { layers: null, seed_step: 0 }, session: state.session, session_token: state.sessionToken, frame_format: FORMAT };
    ws.send(JSON.stringify(hello));
  };
  ws.onmessage = (event) => { chain = chain.then(() => receive(event.data)).catch((err) => say(`page error: ${err}`)); };
  ws.onclose = (event) => {
    state.ws = null;
    if (NO_RETRY.has(event.code)) { setConnection(`refused: ${event.reason || event.code}`, "bad"); return; }
    state.failures += 1;
    const delay = Math.min(5000, 250 * 2 ** Math.min(state.failures, 8)) * (0.5 + Math.random());
    setConnection(`reconnecting in ${(delay / 1000).toFixed(1)} s`, "bad");
    setTimeout(connect, delay);
  };
}
async function receive(data) {
  if (data instanceof ArrayBuffer) return frame(data);
  const msg = JSON.parse(data);
  switch (msg.type) {
    case "welcome": {
      state.failures = 0; state.connections += 1;
      state.session = msg.session; state.sessionToken = msg.session_token; state.replica = msg.replica;
      state.confirmed = await compositionFromDict(msg.composition); state.seq = msg.seq;
      if (!state.confirmed.brushes.some((b) => b.name === state.current)) state.current = state.confirmed.brushes[0]?.name ?? null;
      $("steps").value = msg.steps; $("layers").value = msg.layers; $("session-id").value = msg.session;
      setConnection(`connected (${msg.replica})`, "ok");
      show();
      state.unsent = null; // re-sent below with the rest
      for (const [yours, e] of state.pending) send({ type: "edit", seq: yours, edit: wire(e) });
      break;
    }
    case "ack": {
      const e = state.pending.get(msg.yours);
      if (e) { state.confirmed = applyEdit(state.confirmed, e); state.pending.delete(msg.yours); }
      state.seqSentAt.set(msg.seq, state.sentAt.get(msg.yours)); state.sentAt.delete(msg.yours);
      state.seq = msg.seq;
      break;
    }
    case "edit": state.confirmed = applyEdit(state.confirmed, await decodeEdit(msg.edit, state.confirmed.height, state.confirmed.width));
      state.seq = msg.seq; show(); break;
    case "refused": state.pending.delete(msg.yours); say(`edit refused: ${msg.message}`); show(); break;
    case "composition": state.confirmed = await compositionFromDict(msg.composition); state.seq = msg.seq; show(); break;
    case "status": state.status = msg; renderBrushes(); renderMessages();
      if (document.activeElement !== $("steps")) $("steps").value = msg.steps;
      $("layers").value = msg.layers; break;
    case "error": say(msg.message); break;
    case "reconnect": say(msg.reason); state.ws && state.ws.close(); break;
  }
}
async function frame(buffer) {
  const view = new DataView(buffer);
  const magic = String.fromCharCode(...new Uint8Array(buffer, 0, 4));
  if (magic !== "SDFR") return;
  const number = view.getUint32(4, true), seq = view.getUint32(8, true), png = view.getUint8(12) === 1;
  const bytes = new Uint8Array(buffer, 16);
  const bitmap = await createImageBitmap(new Blob([bytes], { type: png ? "image/png" : "image/jpeg" }),
    { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  state.lastFrame = bitmap; state.lastFramePng = png ? bytes.slice() : null; state.frames += 1; state.frameSeq = seq;
  const now = performance.now();
  if (state.lastFrameAt) state.fps = state.fps ? 0.9 * state.fps + 0.1 * (1000 / (now - state.lastFrameAt)) : 1000 / (now - state.lastFrameAt);
  state.lastFrameAt = now;
  const sent = state.seqSentAt.get(seq);
  if (sent !== undefined) { $("latency").value = `${Math.round(now - sent)} ms`; state.seqSentAt.delete(seq); }
  $("fps").value = state.fps.toFixed(1);
  drawFrame();
  send({ type: "ack", frame: number });
}
function setConnection(text, kind) { const el = $("connection"); el.textContent = text; el.className = `pill ${kind}`; }

// ------------------------------------------------------------------ drawing
function overlay(ctx, c, alphaOf) {
  const img = ctx.getImageData(0, 0, c.width, c.height), d = img.data;
  c.brushes.forEach((b, index) => {
    const [r, g, bl] = brushColor(b.prompt, index), a0 = alphaOf(b);
    for (let i = 0; i < b.mask.length; i++) {
      const a = (b.mask[i] / 255) * a0;
      if (a === 0) continue;
      d[4 * i] = d[4 * i] * (1 - a) + r * a; d[4 * i + 1] = d[4 * i + 1] * (1 - a) + g * a; d[4 * i + 2] = d[4 * i + 2] * (1 - a) + bl * a;
    }
  });
  ctx.putImageData(img, 0, 0);
}
function render() {
  const c = state.view, canvas = $("canvas"), ctx = canvas.getContext("2d", { willReadFrequently: true });
  if (canvas.width !== c.width || canvas.height !== c.height) { canvas.width = $("frame").width = c.width; canvas.height = $("frame").height = c.height; }
  ctx.fillStyle = "#ebebeb"; ctx.fillRect(0, 0, c.width, c.height);
  if (state.background) ctx.drawImage(state.background, 0, 0, c.width, c.height);
  overlay(ctx, c, (b) => (b.name === state.current ? 0.6 : 0.4));
  renderBrushes(); drawFrame();
  $("seed").value = c.seed; $("background-prompt").value = c.background.prompt; $("background-negative").value = c.background.negative_prompt;
}
function drawFrame() {
  if (!state.lastFrame) return;
  const ctx = $("frame").getContext("2d", { willReadFrequently: true });
  ctx.drawImage(state.lastFrame, 0, 0);
  if ($("overlay").checked) overlay(ctx, state.view, () => 0.4);
}
function renderMessages() {
  const lines = [...(state.status.messages || []), ...state.messages];
  $("messages").replaceChildren(...lines.map((t) => Object.assign(document.createElement("li"), { textContent: t })));
}
function labelled(text, input) { const l = document.createElement("label"); l.append(`${text} `, input); return l; }
function renderBrushes() {
  const list = $("brushes"), c = state.view, rows = state.status.rows || {}, refused = new Set(state.status.refused || []);
  if (document.activeElement && list.contains(document.activeElement) && document.activeElement.type === "text") return;  // keep typing
  list.replaceChildren(...c.brushes.map((b, index) => {
    const li = document.createElement("li"); li.className = b.name === state.current ? "current" : "";
    const swatch = document.createElement("span"); swatch.className = "swatch";
    swatch.style.background = `rgb(${brushColor(b.prompt, index).join(",")})`;
    const fields = document.createElement("div"); fields.className = "fields";
    const pick = Object.assign(document.createElement("button"), { type: "button", textContent: `brush ${b.name}` });
    pick.onclick = () => { state.current = b.name; render(); };
    const text = (key, label) => { const i = Object.assign(document.createElement("input"), { type: "text", value: b[key] });
      i.dataset.brush = b.name; i.dataset.field = key; i.onchange = () => edit({ edit: "update_brush", name: b.name, [key]: i.value.trim() }); return labelled(label, i); };
    const range = (key, label, max, step) => { const i = Object.assign(document.createElement("input"), { type: "range", min: 0, max, step, value: b[key] });
      const o = Object.assign(document.createElement("output"), { value: b[key] }); i.oninput = () => { o.value = i.value; };
      i.onchange = () => edit({ edit: "update_brush", name: b.name, [key]: Number(i.value) }); const l = labelled(label, i); l.append(" ", o); return l; };
    const on = Object.assign(document.createElement("input"), { type: "checkbox", checked: b.enabled });
    on.onchange = () => edit({ edit: "update_brush", name: b.name, enabled: on.checked });
    const up = Object.assign(document.createElement("button"), { type: "button", textContent: "↑", title: "paint earlier", disabled: index === 0 });
    up.onclick = () => edit({ edit: "move_brush", name: b.name, index: index - 1 });
    const down = Object.assign(document.createElement("button"), { type: "button", textContent: "↓", title: "paint later", disabled: index === c.brushes.length - 1 });
    down.onclick = () => edit({ edit: "move_brush", name: b.name, index: index + 1 });
    const remove = Object.assign(document.createElement("button"), { type: "button", textContent: "remove" });
    remove.onclick = () => { edit({ edit: "remove_brush", name: b.name }); if (state.current === b.name) state.current = null; };
    const where = Object.assign(document.createElement("span"), { className: refused.has(b.name) ? "refused" : "",
      textContent: refused.has(b.name) ? "refused: no free row" : (b.name in rows ? `row ${rows[b.name]}` : "not generated") });
    fields.append(pick, text("prompt", "prompt"), text("negative_prompt", "negative"), range("alpha", "alpha", 1, 0.001),
      range("blur", "blur", 32, 0.5), range("strength", "strength", 1, 0.01), labelled("enabled", on), up, down, remove, where);
    li.append(swatch, fields);
    return li;
  }));
}

// ------------------------------------------------------------------ painting with pointers
let stroking = null;
function canvasPoint(event) {
  const canvas = $("canvas"), box = canvas.getBoundingClientRect();
  return [Math.round((event.clientX - box.left) * canvas.width / box.width * 100) / 100,
    Math.round((event.clientY - box.top) * canvas.height / box.height * 100) / 100];
}
function radius(event) {
  const size = Number($("size").value);
  const scale = $("pressure").checked && event.pointerType === "pen" && event.pressure > 0 ? event.pressure * 2 : 1;
  return Math.max(0.5, size * Math.min(scale, 2) - 0.5);
}
function paintTo(event) {
  const point = canvasPoint(event), from = stroking.last || point;
  const segment = { edit: "stroke", name: state.current, points: [from, point], radius: radius(event), erase: $("eraser").checked };
  stroking.last = point;
  const open = state.unsent !== null ? state.pending.get(state.unsent) : null;
  if (open && open.edit === "stroke" && open.name === segment.name && open.radius === segment.radius &&
      open.erase === segment.erase && open.points.length < MAX_STROKE_POINTS) {
    // the unsent stroke's polyline grows: painting it is painting its segments one after another
    open.points.push(point);
    state.view = applyEdit(state.view, segment);
    render();
  } else {
    edit(segment, { later: true });
  }
}
function currentBrush() { return state.view.brushes.find((b) => b.name === state.current); }
function remember(name) { state.undo.push({ name, mask: currentBrush().mask }); state.redo = []; if (state.undo.length > 100) state.undo.shift(); }
async function restore(from, to) {
  const step = from.pop();
  if (!step) { say(from === state.undo ? "nothing to undo" : "nothing to redo"); return; }
  const b = state.view.brushes.find((x) => x.name === step.name);
  if (!b) return;
  to.push({ name: step.name, mask: b.mask });
  const png = await maskToPng(step.mask, state.view.height, state.view.width);
  edit({ edit: "set_mask", name: step.name, mask: png, _mask: step.mask });
}
function nextName() { let n = 1; while (state.view.brushes.some((b) => b.name === String(n))) n += 1; return String(n); }
async function addBrush() {
  const name = nextName(), c = state.view, empty = new Uint8Array(c.width * c.height);
  const brush = { name, prompt: "", negative_prompt: "", alpha: 1, blur: 0, strength: 1, enabled: true,
    mask: await maskToPng(empty, c.height, c.width) };
  state.current = name;
  edit({ edit: "set_brush", brush, _mask: empty });
}

function wire_controls() {
  const canvas = $("canvas");
  canvas.addEventListener("pointerdown", (event) => {
    if (!state.view || !currentBrush()) { say("add a brush first"); return; }
    try { canvas.setPointerCapture(event.pointerId); } catch { /* a pointer the browser does not track: strokes still work over the canvas */ }
    remember(state.current);
    stroking = { last: null };
    paintTo(event);
  });
  canvas.addEventListener("pointermove", (event) => { if (stroking) paintTo(event); });
  for (const type of ["pointerup", "pointercancel"]) canvas.addEventListener(type, () => { stroking = null; sendStroke(); });
  $("size").oninput = () => { $("size-value").value = $("size").value; };
  $("clear").onclick = async () => { const b = currentBrush(); if (!b) return; remember(b.name);
    const empty = new Uint8Array(b.mask.length); edit({ edit: "set_mask", name: b.name, mask: await maskToPng(empty, state.view.height, state.view.width), _mask: empty }); };
  $("undo").onclick = () => restore(state.undo, state.redo);
  $("redo").onclick = () => restore(state.redo, state.undo);
  document.addEventListener("keydown", (event) => {
    if (!(event.ctrlKey || event.metaKey) || (event.target.type === "text" || event.target.type === "number")) return;
    const key = event.key.toLowerCase();
    if (key === "z" && !event.shiftKey) { event.preventDefault(); restore(state.undo, state.redo); }
    if (key === "y" || (key === "z" && event.shiftKey)) { event.preventDefault(); restore(state.redo, state.undo); }
  });
  $("add-brush").onclick = addBrush;
  $("overlay").onchange = drawFrame;
  const background = () => ({ ...state.view.background, prompt: $("background-prompt").value.trim(), negative_prompt: $("background-negative").value.trim() });
  $("background-prompt").onchange = () => edit({ edit: "set_background", background: background() });
  $("background-negative").onchange = () => edit({ edit: "set_background", background: background() });
  $("background-image").onchange = async () => {
    const file = $("background-image").files[0]; if (!file) return;
    const bytes = new Uint8Array(await file.arrayBuffer());
    state.background = await createImageBitmap(file);
    edit({ edit: "set_background", background: { ...background(), image: toBase64(bytes) } });
  };
  $("background-clear").onclick = () => { state.background = null; edit({ edit: "set_background", background: { ...background(), image: null } }); };
  $("seed").onchange = () => { const seed = Number($("seed").value);
    if (Number.isInteger(seed) && seed >= 0) edit({ edit: "set_seed", seed }); else say("a seed is a whole number ≥ 0"); };
  $("steps").onchange = () => { const steps = Number($("steps").value);
    if (!Number.isInteger(steps) || steps < 1 || steps > 50) { say("steps is a whole number from 1 to 50"); return; }
    edit({ edit: "set_sampling", sampling: { ...(state.view.sampling || {}), steps, timesteps: null } }); };
  $("random-seed").onclick = () => edit({ edit: "set_seed", seed: Math.floor(Math.random() * 2 ** 31) });
  $("save-frame").onclick = async () => {
    if (!state.lastFrame) { say("no frame yet"); return; }
    const blob = state.lastFramePng ? new Blob([state.lastFramePng], { type: "image/png" }) : await new Promise((ok) => $("frame").toBlob(ok, "image/png"));
    download(blob, "frame.png");
  };
  $("save-palette").onclick = async () => download(new Blob([JSON.stringify(await compositionToDict(state.view))], { type: "application/json" }), "palette.json");
  $("load-palette").onchange = async () => {
    const file = $("load-palette").files[0]; if (!file) return;
    let loaded;
    try { loaded = await compositionFromDict(JSON.parse(await file.text())); } catch (err) { say(`not a palette: ${err.message}`); return; }
    if (loaded.height !== state.view.height || loaded.width !== state.view.width) { say(`the palette is ${loaded.height}x${loaded.width}, this canvas ${state.view.height}x${state.view.width}`); return; }
    for (const b of state.view.brushes) edit({ edit: "remove_brush", name: b.name });
    for (const b of loaded.brushes) edit({ edit: "set_brush", brush: { ...b, mask: await maskToPng(b.mask, loaded.height, loaded.width) }, _mask: b.mask });
    edit({ edit: "set_background", background: loaded.background }); edit({ edit: "set_seed", seed: loaded.seed });
    if (JSON.stringify(loaded.sampling) !== JSON.stringify(state.view.sampling)) edit({ edit: "set_sampling", sampling: loaded.sampling || {} });
    state.current = loaded.brushes.length ? loaded.brushes[0].name : null;
  };
  $("share").onclick = () => {
    const link = `${location.origin}/?token=${encodeURIComponent(TOKEN)}&session=${encodeURIComponent(state.session)}&key=${encodeURIComponent(state.sessionToken)}${FORMAT === "png" ? "&format=png" : ""}`;
    $("share-link").value = link;
    if (navigator.clipboard) navigator.clipboard.writeText(link).catch(() => {});
  };
}
function download(blob, name) {
  const a = Object.assign(document.createElement("a"), { href: URL.createObjectURL(blob), download: name });
  document.body.append(a); a.click(); a.remove(); setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

// ------------------------------------------------------------------ start
async function start() {
  wire_controls();
  const [health, colors] = await Promise.all([fetch("healthz"), fetch("colors.json")].map(async (r) => (await r).json()));
  ({ named: NAMED, distinct: DISTINCT } = colors);
  const [h, w] = health.canvas;
  state.confirmed = emptyComposition(h, w);
  state.view = state.confirmed;
  if (!state.session) {  // a new canvas starts with one brush
    const empty = new Uint8Array(h * w);
    state.confirmed = applyEdit(state.confirmed, { edit: "set_brush", brush: { name: "1", prompt: "", negative_prompt: "",
      alpha: 1, blur: 0, strength: 1, enabled: true }, _mask: empty });
    state.current = "1";
  }
  show();
  connect();
}
// For tests and the curious: the page's state, read-only.
window.semdraw = { state, brushColor, composition: async () => compositionToDict(state.view), framePixels: () => {
  const c = $("frame"), ctx = c.getContext("2d"); ctx.drawImage(state.lastFrame, 0, 0);
  return Array.from(ctx.getImageData(0, 0, c.width, c.height).data); } };
start();

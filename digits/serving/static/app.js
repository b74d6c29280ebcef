// The page: draw on a canvas, send it as PNG to /v1/predict while drawing (debounced),
// show the answer; list the registry's versions with their card and plots. When the
// service keeps a prediction log, an answer carries an id, and "Wrong? It's [0]..[9]"
// sends a person's label for it to /v1/feedback, as a suggestion (the page holds no token).
// An answer the served version flags as not a digit says so in place of the digit.
// No framework and nothing loaded from elsewhere: the page works offline.
"use strict";

const PREDICT_DELAY_MS = 150; // wait this long after the last stroke movement
const STATUS_EVERY_MS = 5000; // how often the header re-reads /readyz
const PLOT_RE = /^plots\/[A-Za-z0-9_.-]+\.png$/;
const NOT_A_DIGIT = "That doesn't look like a digit";

const pad = document.getElementById("pad");
const pen = pad.getContext("2d");
let drawing = false;
let inked = false;
let timer = null;
let sent = 0; // number of the latest request; older answers are dropped
let servedVersion = null;
let answerId = null; // the log's id of the answer shown; null: nothing to correct

function clearPad() {
  pen.fillStyle = "#fff";
  pen.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  clearTimeout(timer);
  sent += 1; // an answer still on its way is for a drawing that is gone
  setBusy(false);
  showIdle();
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * pad.width) / box.width,
    ((event.clientY - box.top) * pad.height) / box.height,
  ];
}

function startStroke(event) {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  drawing = true;
  const [x, y] = point(event);
  pen.beginPath();
  pen.moveTo(x, y);
  pen.lineTo(x, y); // a tap leaves a dot
  pen.stroke();
  inked = true;
}

function moveStroke(event) {
  if (!drawing) return;
  event.preventDefault();
  const [x, y] = point(event);
  pen.lineTo(x, y);
  pen.stroke();
  predictSoon(PREDICT_DELAY_MS);
}

function endStroke() {
  if (!drawing) return;
  drawing = false;
  predictSoon(0);
}

function predictSoon(delay) {
  clearTimeout(timer);
  setBusy(true);
  timer = setTimeout(predict, delay);
}

// data-busy on the pad: "true" from a stroke until the answer to the latest drawing is
// shown, so a script (the browser test) knows an answer on screen is the final one.
function setBusy(busy) {
  pad.dataset.busy = String(busy);
}

function predict() {
  if (!inked) return setBusy(false);
  const number = ++sent;
  pad.toBlob((png) => {
    const form = new FormData();
    form.append("file", png, "canvas.png");
    fetch("/v1/predict", { method: "POST", body: form })
      .then((response) => response.json().then((body) => [response.ok, body]))
      .then(([ok, body]) => {
        if (number !== sent) return;
        if (ok) showPrediction(body);
        else showError(body.error || "the service refused the drawing");
        setBusy(false);
      })
      .catch((error) => {
        if (number !== sent) return;
        showError(`no answer from the service (${error})`);
        setBusy(false);
      });
  }, "image/png");
}

function showIdle() {
  showFeedback(null);
  showAnswer("?");
  setText("confidence", "Draw with the mouse or a finger.");
  document.getElementById("confidence").className = "muted";
  setText("answered-by", "");
  drawBars(null);
}

function showPrediction(body) {
  const { digit, probabilities, id, not_a_digit: flagged } = body.predictions[0];
  showFeedback(id || null); // no id: the service keeps no log, so no buttons
  const probability = `${(probabilities[digit] * 100).toFixed(1)}%`;
  if (flagged) {
    showAnswer(NOT_A_DIGIT, "not-a-digit");
    setText("confidence", `closest digit ${digit}, probability ${probability}`);
  } else {
    showAnswer(String(digit));
    setText("confidence", `probability ${probability}`);
  }
  document.getElementById("confidence").className = "muted";
  setText("answered-by", `answered by ${body.model.version} (${body.model.ref})`);
  drawBars(probabilities);
}

// The big answer: a digit, "?", or (flagged, kind "not-a-digit") a sentence in smaller type.
function showAnswer(text, kind = "") {
  const answer = document.getElementById("digit");
  answer.textContent = text;
  answer.className = kind ? `digit ${kind}` : "digit";
}

function showError(message) {
  showFeedback(null);
  showAnswer("?");
  setText("confidence", message);
  document.getElementById("confidence").className = "error";
  drawBars(null);
}

function drawBars(probabilities) {
  const list = document.getElementById("bars");
  list.replaceChildren();
  const top = probabilities ? probabilities.indexOf(Math.max(...probabilities)) : -1;
  for (let digit = 0; digit < 10; digit++) {
    const share = probabilities ? probabilities[digit] : 0;
    const item = element("li", digit === top ? "top" : "");
    const track = element("span", "track");
    const fill = element("span", "fill");
    fill.style.display = "block";
    fill.style.width = `${(share * 100).toFixed(1)}%`;
    track.append(fill);
    item.append(element("span", "", String(digit)), track);
    item.append(element("span", "pct", probabilities ? `${(share * 100).toFixed(1)}%` : ""));
    list.append(item);
  }
}

function makeFeedbackButtons() {
  const group = document.getElementById("feedback-buttons");
  for (let digit = 0; digit < 10; digit++) {
    const button = element("button", "", String(digit));
    button.type = "button";
    button.id = `feedback-${digit}`;
    button.setAttribute("aria-label", `It's ${digit}: send ${digit} as the right answer`);
    button.addEventListener("click", () => sendFeedback(digit));
    group.append(button);
  }
}

function showFeedback(id) {
  answerId = id;
  document.getElementById("feedback").hidden = id === null;
  setFeedbackEnabled(true);
  setFeedbackStatus("", "muted small");
}

function setFeedbackEnabled(enabled) {
  document.querySelectorAll("#feedback-buttons button").forEach((button) => {
    button.disabled = !enabled;
  });
}

function setFeedbackStatus(text, className) {
  const status = document.getElementById("feedback-status");
  status.textContent = text;
  status.className = className;
}

function sendFeedback(label) {
  const id = answerId;
  if (id === null) return;
  setFeedbackEnabled(false);
  setFeedbackStatus(`sending ${label}…`, "muted small");
  fetch("/v1/feedback", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ id, label }),
  })
    .then((response) => response.json().then((body) => [response.ok, body]))
    .then(([ok, body]) => {
      if (id !== answerId) return; // a newer answer is shown: this one's news is old
      setFeedbackEnabled(true);
      // The page holds no token: its labels are suggestions, which a person reviews.
      const note = "a reviewer checks it before the model learns from it";
      if (ok) setFeedbackStatus(`Thanks: suggested ${body.label}; ${note}`, "small ok");
      else setFeedbackStatus(body.error || "the service refused the label", "small error");
    })
    .catch((error) => {
      if (id !== answerId) return;
      setFeedbackEnabled(true);
      setFeedbackStatus(`no answer from the service (${error})`, "small error");
    });
}

function refreshStatus() {
  fetch("/readyz")
    .then((response) => response.json())
    .then((status) => {
      const pill = document.getElementById("status");
      if (status.ready) {
        const { version, ref, backend } = status.model;
        pill.textContent = `serving ${version} (${ref}, ${backend})`;
        pill.className = status.problem ? "pill warn" : "pill ok";
        pill.title = status.problem || "";
        if (status.model.version !== servedVersion) {
          servedVersion = status.model.version;
          loadVersions();
        }
      } else {
        pill.textContent = "no model loaded";
        pill.className = "pill warn";
        pill.title = status.problem || "";
      }
    })
    .catch(() => {
      const pill = document.getElementById("status");
      pill.textContent = "service unreachable";
      pill.className = "pill warn";
    });
}

function loadVersions() {
  fetch("/v1/registry/versions")
    .then((response) => response.json().then((body) => [response.ok, body]))
    .then(([ok, versions]) => {
      const list = document.getElementById("versions");
      list.replaceChildren();
      if (!ok) {
        list.append(element("p", "error", versions.error));
      } else if (versions.length === 0) {
        list.append(element("p", "muted", "No versions yet: run `digits run`."));
      } else {
        versions.slice().reverse().forEach((manifest) => list.append(versionEntry(manifest)));
      }
    })
    .catch((error) => {
      const list = document.getElementById("versions");
      list.replaceChildren(element("p", "error", `cannot read the registry (${error})`));
    });
}

function versionEntry(manifest) {
  const entry = element("details", "version");
  const summary = element("summary");
  const aliases = element("span");
  manifest.aliases.forEach((name) => aliases.append(element("span", "alias", name)));
  summary.append(
    element("strong", "", manifest.version),
    element("span", "", manifest.model),
    element("span", "", `${(manifest.metrics.accuracy * 100).toFixed(2)}%`),
    aliases,
    element("span", "muted small", manifest.created_at),
  );
  entry.append(summary);
  // The card and plots load the first time a version is opened.
  entry.addEventListener("toggle", () => showDetails(entry, manifest), { once: true });
  return entry;
}

function showDetails(entry, manifest) {
  const base = `/v1/registry/versions/${encodeURIComponent(manifest.version)}/files/`;
  const card = element("pre", "card", "Loading the model card…");
  entry.append(card);
  fetch(`${base}card.md`)
    .then((response) => response.text().then((text) => [response.ok, text]))
    .then(([ok, text]) => { card.textContent = ok ? text : JSON.parse(text).error; })
    .catch((error) => { card.textContent = `cannot load the card (${error})`; });
  const plots = element("div", "plots");
  Object.keys(manifest.files).filter((name) => PLOT_RE.test(name)).sort().forEach((name) => {
    const figure = element("figure");
    const image = element("img");
    image.src = base + name;
    image.alt = `${manifest.version} ${name}`;
    image.loading = "lazy";
    figure.append(image, element("figcaption", "", name.slice("plots/".length)));
    plots.append(figure);
  });
  entry.append(plots);
}

function element(tag, className = "", text = null) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== null) node.textContent = text; // text only: manifests never become markup
  return node;
}

function setText(id, text) {
  document.getElementById(id).textContent = text;
}

pen.lineWidth = 18;
pen.lineCap = "round";
pen.lineJoin = "round";
pen.strokeStyle = "#000";
pad.addEventListener("pointerdown", startStroke);
pad.addEventListener("pointermove", moveStroke);
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);
document.getElementById("clear").addEventListener("click", clearPad);
makeFeedbackButtons();
clearPad();
refreshStatus();
loadVersions();
setInterval(refreshStatus, STATUS_EVERY_MS);

// The cluster review page. The server holds the review and writes it to disk on every
// change; this page keeps nothing but the window choice, so closing it loses nothing.
"use strict";

const $ = (id) => document.getElementById(id);
let state = null;      // /api/state
let screen = null;     // /api/screen of the lesion shown
let windowName = localStorage.getItem("review-window");

async function call(path, body) {
  const options = body === undefined ? {} : {
    method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  let response;
  try {
    response = await fetch(path, options);
  } catch (error) {
    showError("The review server does not answer (was it stopped?). Your answers so far are " +
              "saved; start it again and reload this page.");
    throw error;
  }
  const value = await response.json();
  if (!response.ok) {
    showError(value.error || response.statusText);
    throw new Error(value.error);
  }
  $("error").hidden = true;
  if (body !== undefined) {
    $("saved").textContent = "saved " + new Date().toLocaleTimeString();
  }
  return value;
}

function showError(text) {
  $("error").textContent = text;
  $("error").hidden = false;
}

function figure(value) {
  return value === null || value === undefined ? "" : value.toFixed(3);
}

function purityText(cluster) {
  const p = cluster.purity;
  if (!p.reviewed) return "purity: not reviewed yet";
  let text = `purity ${figure(p.estimate)} [${figure(p.low)}, ${figure(p.high)}] ` +
             `(${p.belongs}/${p.reviewed} belong)`;
  if (p.paper !== null) text += `; the paper's ${figure(p.paper)}`;
  return text;
}

// ---- Overview: every cluster's montage, size, name and purity. ----

function renderOverview() {
  const list = $("clusters");
  list.replaceChildren();
  for (const cluster of state.clusters) {
    const card = document.createElement("section");
    card.className = "cluster";
    card.id = `cluster-${cluster.cluster}`;
    const title = document.createElement("h2");
    title.textContent = `Cluster ${cluster.cluster}: ${cluster.size} lesions`;
    card.append(title);
    if (cluster.montage) {
      const link = document.createElement("a");
      link.href = `/montage/${cluster.cluster}.png`;
      link.target = "_blank";
      link.title = "the montage at full size";
      const montage = document.createElement("img");
      montage.src = link.href;
      montage.alt = `montage of cluster ${cluster.cluster}`;
      link.append(montage);
      card.append(link);
    }
    const form = document.createElement("form");
    const input = document.createElement("input");
    input.type = "text";
    input.name = "name";
    input.placeholder = "name, e.g. liver lesion";
    input.value = cluster.mixed ? "" : (cluster.name || "");
    const save = document.createElement("button");
    save.type = "submit";
    save.className = "save-name";
    save.textContent = "Save name";
    const mixed = document.createElement("button");
    mixed.type = "button";
    mixed.className = "mark-mixed";
    mixed.textContent = "Mixed / noisy";
    form.append(input, save, mixed);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      state = await call("/api/name", {cluster: cluster.cluster, name: input.value});
      renderOverview();
    });
    mixed.addEventListener("click", async () => {
      state = await call("/api/name", {cluster: cluster.cluster, mixed: true});
      renderOverview();
    });
    card.append(form);
    const status = document.createElement("p");
    status.className = "status";
    if (cluster.mixed) {
      status.innerHTML = '<span class="mixed-label">mixed / noisy</span>: no purity review';
    } else {
      status.textContent = `${cluster.name ? "named " + cluster.name : "not named"}; ` +
        `${cluster.answered} of ${cluster.sample_size} sampled lesions reviewed`;
    }
    card.append(status);
    const purity = document.createElement("p");
    purity.className = "purity";
    purity.textContent = cluster.mixed ? "" : purityText(cluster);
    card.append(purity);
    if (!cluster.mixed) {
      const start = document.createElement("button");
      start.type = "button";
      start.className = "start-review";
      start.disabled = !cluster.name;
      start.title = cluster.name ? "" : "name the cluster first";
      start.textContent = cluster.answered < cluster.sample_size ?
        (cluster.answered ? "Continue purity review" : "Review purity") : "Look through again";
      start.addEventListener("click", () => openReview(cluster.cluster,
        cluster.answered < cluster.sample_size ? null : 0));
      card.append(start);
    }
    list.append(card);
  }
}

async function showOverview() {
  state = await call("/api/state");
  $("reviewer").value = state.reviewer || "";
  $("simulated").hidden = !state.simulated;
  $("review").hidden = true;
  $("overview").hidden = false;
  screen = null;
  history.replaceState(null, "", "#");
  renderOverview();
}

// ---- Review: one lesion of the sample per screen. ----

function renderWindows() {
  const box = $("windows");
  box.querySelectorAll("label").forEach((label) => label.remove());
  if (!state.windows.some((w) => w.name === windowName)) windowName = state.windows[0].name;
  state.windows.forEach((w, index) => {
    const label = document.createElement("label");
    const radio = document.createElement("input");
    radio.type = "radio";
    radio.name = "window";
    radio.value = w.name;
    radio.checked = w.name === windowName;
    radio.addEventListener("change", () => chooseWindow(w.name));
    label.append(radio, ` ${w.name.replace("_", " ")} [${w.low}, ${w.high}] HU (${index + 1})`);
    box.append(label);
  });
}

function chooseWindow(name) {
  windowName = name;
  localStorage.setItem("review-window", name);
  document.querySelectorAll("#windows input").forEach((r) => { r.checked = r.value === name; });
  if (screen && screen.position !== null) {
    $("view").src = `/view/${screen.cluster}/${screen.position}.png?window=${name}`;
  }
}

function drawBookmark(fractions) {
  const svg = $("bookmark");
  svg.replaceChildren();
  if (!fractions) return;
  [[0, "long"], [4, "short"]].forEach(([start, kind]) => {
    const line = document.createElementNS("http://www.w3.org/2000/svg", "line");
    line.setAttribute("x1", fractions[start]);
    line.setAttribute("y1", fractions[start + 1]);
    line.setAttribute("x2", fractions[start + 2]);
    line.setAttribute("y2", fractions[start + 3]);
    line.setAttribute("class", kind);
    svg.append(line);
  });
  svg.style.visibility = $("show-bookmark").checked ? "visible" : "hidden";
}

async function openReview(cluster, position) {
  const query = position === null || position === undefined ? "" : `&position=${position}`;
  screen = await call(`/api/screen?cluster=${cluster}${query}`);
  $("overview").hidden = true;
  $("review").hidden = false;
  history.replaceState(null, "", `#review/${cluster}`);
  renderWindows();
  renderScreen();
}

function renderScreen() {
  const done = screen.position === null;
  $("review-title").textContent = `Cluster ${screen.cluster}: ${screen.name}`;
  $("review-progress").textContent =
    `${screen.answered} of ${screen.sample_size} reviewed` +
    (done ? "" : `; lesion ${screen.position + 1} of ${screen.sample_size}`);
  $("review-meter").max = screen.sample_size;
  $("review-meter").value = screen.answered;
  $("screen").hidden = done;
  $("finished").hidden = !done;
  if (done) {
    const cluster = state.clusters.find((c) => c.cluster === screen.cluster);
    $("finished-text").textContent =
      `Every sampled lesion of cluster ${screen.cluster} is reviewed: ` + purityText(cluster) + ".";
    return;
  }
  $("view").src = `/view/${screen.cluster}/${screen.position}.png?window=${windowName}`;
  drawBookmark(screen.bookmark);
  $("question").textContent = `Does this lesion belong to "${screen.name}"?`;
  $("previous-answer").textContent = screen.belongs === null ? "" :
    `answered before: ${screen.belongs ? "belongs" : "does not belong"}`;
  $("back").disabled = screen.position === 0;
}

async function answer(belongs) {
  if (!screen || screen.position === null) return;
  state = await call("/api/answer",
                     {cluster: screen.cluster, position: screen.position, belongs: belongs});
  screen = await call(`/api/screen?cluster=${screen.cluster}`);
  renderScreen();
}

async function previous() {
  if (!screen) return;
  const position = screen.position === null ? screen.sample_size - 1 : screen.position - 1;
  if (position < 0) return;
  screen = await call(`/api/screen?cluster=${screen.cluster}&position=${position}`);
  renderScreen();
}

// ---- Wiring. ----

$("belongs").addEventListener("click", () => answer(true));
$("not-belongs").addEventListener("click", () => answer(false));
$("back").addEventListener("click", previous);
$("to-overview").addEventListener("click", showOverview);
$("finished-overview").addEventListener("click", showOverview);
$("show-bookmark").addEventListener("change", () => drawBookmark(screen && screen.bookmark));
$("reviewer").addEventListener("change", async (event) => {
  state = await call("/api/reviewer", {name: event.target.value});
});

document.addEventListener("keydown", (event) => {
  if ($("review").hidden || event.target.tagName === "INPUT" && event.target.type === "text") {
    return;
  }
  const key = event.key.toLowerCase();
  if (key === "y") answer(true);
  else if (key === "n") answer(false);
  else if (key === "u" || key === "backspace") previous();
  else if (key === "escape") showOverview();
  else if (key === "h") {
    $("show-bookmark").checked = !$("show-bookmark").checked;
    drawBookmark(screen && screen.bookmark);
  } else if (/^[1-9]$/.test(key) && state.windows[Number(key) - 1]) {
    chooseWindow(state.windows[Number(key) - 1].name);
  } else return;
  event.preventDefault();
});

(async () => {
  const reopen = location.hash.match(/^#review\/(\d+)$/);
  await showOverview();
  if (reopen) openReview(Number(reopen[1]), null);
})();

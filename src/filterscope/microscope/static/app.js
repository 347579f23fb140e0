// filterscope microscope: fills the page shells from the JSON API. Plain JavaScript, no build step.
"use strict";

const app = document.getElementById("app");
const kind = app.dataset.kind;
const page = JSON.parse(app.dataset.page || "{}");

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : document.createTextNode(child));
  }
  return node;
}

async function getJSON(url, options) {
  const response = await fetch(url, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.detail || response.statusText);
  return data;
}

function fmt(value, digits = 3) {
  return value === null || value === undefined ? "–" : Number(value).toPrecision(digits);
}

function pct(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value * 100)}%`;
}

function crumbs(items) {
  const target = document.getElementById("crumbs");
  target.replaceChildren(...items.flatMap((item, i) => [i ? " / " : "", item.href ? el("a", { href: item.href }, item.text) : item.text]));
}

function fail(error) {
  app.replaceChildren(el("p", { class: "error" }, `Could not load this page: ${error.message}`));
}

// ------------------------------------------------------------------------------------------- home
async function home() {
  const models = await getJSON(page.api);
  crumbs([{ text: "home" }]);
  if (!models.length) {
    app.replaceChildren(el("p", {}, "This atlas holds no model yet: build it with filterscope atlas build."));
    return;
  }
  app.replaceChildren(...models.map((model) => el("section", { class: "model" },
    el("h1", {}, model.name),
    el("p", { class: "muted" }, `weights: ${model.weights} (sha256 ${model.weights_hash.slice(0, 12)}…)`),
    el("table", { class: "layers" },
      el("thead", {}, el("tr", {}, ["layer", "units", "rendered", "failed", "exemplars from"].map((h) => el("th", {}, h)))),
      el("tbody", {}, model.layers.map((layer) => el("tr", {},
        el("td", {}, el("a", { href: layer.url, class: "layer-link" }, layer.name)),
        el("td", {}, String(layer.channels)),
        el("td", {}, el("progress", { max: layer.channels, value: layer.rendered }), ` ${layer.rendered}`),
        el("td", {}, String(layer.failed)),
        el("td", {}, layer.exemplar_images ? `${layer.exemplar_images} images` : "–"),
      )))))));
}

// ------------------------------------------------------------------------------------------ layer
const SORTS = {
  index: { label: "unit index", key: (u) => u.unit, descending: false },
  max: { label: "maximum activation", key: (u) => u.max, descending: true },
  sparsity: { label: "sparsity (fraction of images positive)", key: (u) => u.fraction_positive, descending: true },
  quality: { label: "quality (robustness)", key: (u) => u.robustness, descending: true },
  paths: { label: "trust: path similarity", key: (u) => u.path_share, descending: true },
  afc: { label: "trust: 2-AFC of renders", key: (u) => u.afc_renders, descending: true },
};
const FILTERS = {
  all: { label: "all units", keep: () => true },
  flagged: { label: "flagged (another path, silent, not improved)", keep: (u) => u.flags !== null && u.flags.length > 0 },
  trusted: { label: "not flagged", keep: (u) => u.flags !== null && u.flags.length === 0 },
};

function sortUnits(units, how) {
  const sort = SORTS[how] || SORTS.index;
  return [...units].sort((a, b) => {
    const x = sort.key(a), y = sort.key(b);
    if (x === null && y === null) return a.unit - b.unit;
    if (x === null) return 1;
    if (y === null) return -1;
    return (sort.descending ? y - x : x - y) || a.unit - b.unit;
  });
}

function metric(unit, how) {
  if (how === "max") return `max ${fmt(unit.max)}`;
  if (how === "sparsity") return `${pct(unit.fraction_positive)} positive`;
  if (how === "quality") return `robustness ${fmt(unit.robustness)}`;
  if (how === "paths") return unit.path_share === null ? "" : `path ${pct(unit.path_share)}`;
  if (how === "afc") return unit.afc_renders === null ? "" : `2-AFC ${fmt(unit.afc_renders, 2)}`;
  return unit.final_activation === null ? "" : `act. ${fmt(unit.final_activation)}`;
}

async function layer() {
  const data = await getJSON(page.api);
  crumbs([{ text: "home", href: page.home }, { text: data.model }, { text: data.layer }]);
  const params = new URLSearchParams(location.search);
  let how = SORTS[params.get("sort")] ? params.get("sort") : "index";
  let show = FILTERS[params.get("show")] ? params.get("show") : "all";
  const cards = new Map(data.units.map((u) => [u.unit, el("a", { class: "card", href: `${data.url}/${u.unit}`, "data-unit": u.unit },
    u.thumb ? el("img", { src: u.thumb, loading: "lazy", width: 160, height: 160, alt: `unit ${u.unit}` })
      : u.exemplar_thumb ? el("span", { class: "exemplar-only", title: "not rendered: its top dataset exemplar" },
        el("img", { src: u.exemplar_thumb, loading: "lazy", width: 160, height: 160, alt: `unit ${u.unit} exemplar` }))
        : el("div", { class: "placeholder" }, u.status === "failed" ? "failed" : "not rendered"),
    el("span", { class: "caption" }, el("b", {}, `${u.unit}`), " ", el("span", { class: "metric" }, metric(u, how)),
      u.flags && u.flags.length ? el("span", { class: "flag", title: u.flags.join(", ") }, " ⚑ " + u.flags.join(", "))
        : u.status === "not-improved" ? el("span", { class: "flag", title: "the objective did not rise" }, " ⚑ not-improved") : null))]));
  const grid = el("div", { class: "grid", id: "grid" });
  const select = el("select", { id: "sort", onchange: () => { how = select.value; draw(); } },
    Object.entries(SORTS).map(([key, sort]) => el("option", { value: key, selected: key === how }, sort.label)));
  const filter = el("select", { id: "show", onchange: () => { show = filter.value; draw(); } },
    Object.entries(FILTERS).map(([key, f]) => el("option", { value: key, selected: key === show }, f.label)));
  const jump = el("input", { id: "jump", type: "number", min: 0, max: data.channels - 1, placeholder: "unit #" });
  const go = () => {
    const n = Number(jump.value);
    if (jump.value !== "" && Number.isInteger(n) && n >= 0 && n < data.channels) location.href = `${data.url}/${n}`;
    else jump.setCustomValidity(`0 to ${data.channels - 1}`), jump.reportValidity();
  };
  jump.addEventListener("keydown", (event) => { if (event.key === "Enter") go(); });
  jump.addEventListener("input", () => jump.setCustomValidity(""));
  function draw() {
    const order = sortUnits(data.units, how).filter(FILTERS[show].keep);
    for (const u of order) cards.get(u.unit).querySelector(".metric").textContent = metric(u, how);
    grid.replaceChildren(...order.map((u) => cards.get(u.unit)));
    const url = new URL(location.href);
    url.searchParams.set("sort", how);
    if (show === "all") url.searchParams.delete("show"); else url.searchParams.set("show", show);
    history.replaceState(null, "", url);
  }
  const rendered = data.units.filter((u) => u.render).length;
  app.replaceChildren(
    el("h1", {}, `${data.model} ${data.layer}`),
    el("p", { class: "muted" }, `${data.channels} units, ${rendered} rendered; output ${data.shape.join("×")}`),
    el("div", { class: "controls" }, el("label", {}, "sort by ", select), el("label", {}, "show ", filter), el("label", {}, "go to unit ", jump), el("button", { onclick: go }, "go"),
      data.image_page ? el("a", { id: "image-page", href: data.image_page }, "explain an image at this layer →") : null,
      data.map_page ? el("a", { id: "map-page", href: data.map_page }, "activation atlas of this layer →") : null,
      data.diff_page ? el("a", { id: "diff-page", href: data.diff_page }, "this layer against another network →") : null),
    grid);
  draw();
}

// ------------------------------------------------------------------------------------------- unit
function histogram(stats) {
  const { edges, counts } = stats.histogram;
  if (!counts || !counts.length) return el("p", { class: "muted" }, "no histogram");
  const width = 360, height = 110, top = Math.max(...counts), bar = width / counts.length;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height + 16}`);
  svg.setAttribute("class", "histogram");
  counts.forEach((count, i) => {
    const rect = document.createElementNS(ns, "rect");
    const h = top ? (count / top) * height : 0;
    rect.setAttribute("x", i * bar + 0.5);
    rect.setAttribute("y", height - h);
    rect.setAttribute("width", Math.max(bar - 1, 1));
    rect.setAttribute("height", h);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${fmt(edges[i])} to ${fmt(edges[i + 1])}: ${count} images`;
    rect.append(title);
    svg.append(rect);
  });
  for (const [x, anchor, value] of [[0, "start", edges[0]], [width, "end", edges[edges.length - 1]]]) {
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", x);
    label.setAttribute("y", height + 13);
    label.setAttribute("text-anchor", anchor);
    label.textContent = fmt(value);
    svg.append(label);
  }
  return svg;
}

function exemplarTile(e, big) {
  const src = big ? e.crop : e.thumb;
  return el("a", { class: "exemplar", href: e.page, title: `${e.path.split("/").pop()}: ${fmt(e.value)}` },
    el("span", { class: "frame" },
      src ? el("img", { src, loading: "lazy", alt: `exemplar ${e.rank + 1}` }) : el("span", { class: "placeholder" }, "no crop"),
      e.marker ? el("span", { class: "marker", style: `left:${e.marker[0] * 100}%;top:${e.marker[1] * 100}%` }) : null),
    el("span", { class: "caption" }, fmt(e.value)));
}

function renderFigure(r) {
  return el("figure", { class: "render" },
    r.image ? el("img", { src: r.image, alt: `${r.recipe_name} seed ${r.seed}` }) : el("div", { class: "placeholder" }, r.status),
    el("figcaption", {},
      el("b", {}, `${r.recipe_name}, seed ${r.seed}`), r.status === "not-improved"
        ? el("span", { class: "flag" }, " · ⚑ not-improved: the objective did not rise, the picture shows nothing of the unit") : ` · ${r.status}`, el("br"),
      `activation ${fmt(r.initial_activation)} → ${fmt(r.final_activation)}`, el("br"),
      `ratio ${fmt(r.activation_ratio)} · robustness ${fmt(r.robustness)} · high-freq. ${fmt(r.high_frequency_share, 2)}`,
      r.message ? el("div", { class: "error" }, r.message) : null));
}

function renderButton(data) {
  const status = el("span", { id: "render-status", class: "muted" });
  const bar = el("progress", { id: "render-progress", max: 1, value: 0, hidden: true });
  const button = el("button", { id: "render", onclick: () => start() }, "Render this unit");
  async function poll(job) {
    bar.hidden = false;
    button.disabled = true;
    while (job.state === "queued" || job.state === "running") {
      bar.value = job.progress;
      status.textContent = job.state === "queued" ? "queued…" : `rendering… ${Math.round(job.progress * 100)}%`;
      await new Promise((resolve) => setTimeout(resolve, 400));
      job = await getJSON(job.url);
    }
    if (job.state === "done") { unit(); return; }
    status.textContent = `failed: ${job.message}`;
    button.disabled = false;
  }
  async function start() {
    try {
      poll(await getJSON(data.render_url, { method: "POST" }));
    } catch (error) {
      status.textContent = error.message;
    }
  }
  if (data.job) poll(data.job);
  return el("div", { class: "render-on-demand" }, button, " ", bar, " ", status);
}

// A kernel as a small heat map: red where the input excites the unit, blue where it inhibits it.
function kernelCanvas(kernel, scale) {
  const h = kernel.length, w = kernel[0].length;
  const canvas = el("canvas", { class: "kernel", width: w, height: h, title: `${h}×${w} expanded weights` });
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  kernel.flat().forEach((v, i) => {
    const t = Math.min(Math.abs(v) / (scale || 1), 1);
    const [r, g, b] = v >= 0 ? [255, 255 * (1 - t), 255 * (1 - t)] : [255 * (1 - t), 255 * (1 - t), 255];
    image.data.set([r, g, b, 255], i * 4);
  });
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function connectionTable(title, rows, scale, kind) {
  if (!rows || !rows.length) return el("div", {}, el("h3", {}, title), el("p", { class: "muted small" }, "none"));
  return el("div", {}, el("h3", {}, title), el("table", { class: `connections ${kind}` },
    el("tr", {}, el("th", {}, "unit"), el("th", {}, ""), rows[0].kernel ? el("th", {}, "kernel") : null, el("th", {}, "weight"), el("th", {}, "attribution")),
    rows.map((c) => el("tr", {},
      el("td", {}, el("a", { href: c.url, class: "input-link", "data-unit": c.unit }, String(c.unit))),
      el("td", {}, el("a", { href: c.url }, c.thumb ? el("img", { class: "thumb", src: c.thumb, loading: "lazy", alt: `unit ${c.unit}` }) : el("span", { class: "thumb none" }))),
      c.kernel ? el("td", {}, kernelCanvas(c.kernel, scale)) : null,
      el("td", {}, fmt(c.weight)), el("td", {}, fmt(c.attribution))))));
}

function weightsSection(w) {
  const parts = [el("h2", {}, "Weights")];
  if (!w) return el("section", { id: "weights" }, ...parts, el("p", { class: "muted" }, "No circuit recorded (build two or more layers, without --no-circuits)."));
  const inputs = w.inputs;
  if (inputs) {
    const all = [...inputs.inputs.excite, ...inputs.inputs.inhibit, ...inputs.inputs.attribution];
    const scale = Math.max(...all.flatMap((c) => (c.kernel ? c.kernel.flat().map(Math.abs) : [0])), 1e-12);
    parts.push(el("p", { class: "muted small" }, `inputs from ${inputs.source}: expanded weights (the network linearized, ${inputs.kernel_size[0]}×${inputs.kernel_size[1]} kernels, red excites, blue inhibits) and attribution (activation × gradient at the unit's maximum, mean over ${inputs.exemplars} exemplars)`));
    if (inputs.note) parts.push(el("p", { class: "note" }, inputs.note));
    parts.push(el("div", { class: "weights" }, connectionTable("Excited by", inputs.inputs.excite, scale, "excite"),
      connectionTable("Inhibited by", inputs.inputs.inhibit, scale, "inhibit"), connectionTable("Driven on its exemplars by", inputs.inputs.attribution, scale, "attribution")));
    const check = inputs.ablation;
    if (check) {
      const random = check.random_drops.reduce((a, d) => a + Math.abs(d), 0) / Math.max(check.random_drops.length, 1);
      parts.push(el("div", { class: "check", id: "ablation" }, el("b", {}, "Causal check: "),
        `zeroing the top ${check.k} inputs lowers the unit (baseline ${fmt(check.baseline)}) by `,
        Object.keys(check.drops).flatMap((view, i) => [i ? "; " : "", el("b", {}, `${fmt(check.ratios[view], 2)}×`), ` random (top by ${view}: drop ${fmt(check.drops[view])})`]),
        ` — ${check.random_drops.length} random sets of ${check.k}: mean |drop| ${fmt(random)}`));
    }
  }
  if (w.outputs) {
    const rows = [...w.outputs.excite, ...w.outputs.inhibit];
    const scale = Math.max(...rows.flatMap((c) => (c.kernel ? c.kernel.flat().map(Math.abs) : [0])), 1e-12);
    parts.push(el("p", { class: "muted small" }, `outputs into ${w.outputs.layer}`));
    parts.push(el("div", { class: "weights" }, connectionTable("Excites", w.outputs.excite, scale, "excites"), connectionTable("Inhibits", w.outputs.inhibit, scale, "inhibits")));
  }
  if (w.classes && (w.classes.promoted.length || w.classes.suppressed.length)) {
    const item = (c) => el("li", {}, `${c.name || `class ${c.unit}`} `, el("span", { class: "muted" }, fmt(c.weight)));
    parts.push(el("div", { class: "row" },
      el("div", {}, el("h3", {}, "Promotes"), el("ol", { class: "classes" }, w.classes.promoted.map(item))),
      el("div", {}, el("h3", {}, "Suppresses"), el("ol", { class: "classes" }, w.classes.suppressed.map(item)))));
    parts.push(el("p", { class: "muted small" }, "classes by the linearized direct path from the unit to the logits (most telling near the classifier)"));
  }
  return el("section", { id: "weights" }, ...parts);
}

const FLAG_TEXT = {
  "another-path": "the render drives the earlier layers unlike the unit's natural exemplars: the picture may show another mechanism",
  "renders-2afc": "the renders tell the unit's strong photos from its weak ones worse than sets of its own exemplars do: the picture may show another feature",
  silent: "the dataset barely drives the unit: its exemplars are arbitrary, and the picture shows what no natural image does",
  "not-improved": "the optimization did not raise the unit: the picture shows nothing of it",
};

function trustSection(t) {
  const head = el("h2", {}, "Can these pictures be trusted?");
  if (!t) return el("section", { id: "trust" }, head, el("p", { class: "muted" }, "No trust record (built with --no-trust, or without a dataset of 20 images or more)."));
  const parts = [head];
  parts.push(t.flags.length
    ? el("ul", { class: "flags" }, t.flags.map((f) => el("li", { class: "flag" }, el("b", {}, `⚑ ${f}: `), FLAG_TEXT[f] || "")))
    : el("p", { class: "ok" }, "No flags."));
  parts.push(el("p", {}, el("b", {}, "What it is: "), t.description.text));
  const score = (kind) => t.afc.find((s) => s.references === kind);
  parts.push(el("table", { class: "afc" },
    el("tr", {}, el("th", {}, "2-AFC references"), el("th", {}, "share right"), el("th", {}, "tasks")),
    ["renders", "exemplars", "random"].filter(score).map((kind) => el("tr", {}, el("td", {}, kind === "random" ? "random images (control)"
      : kind === "renders" ? `renders (${score(kind).signs === "both" ? "both signs" : "maximizing only"}, ${score(kind).k ?? "?"})` : kind),
      el("td", {}, `${score(kind).score.toFixed(2)} ± ${score(kind).stderr.toFixed(2)}`), el("td", {}, String(score(kind).tasks))))));
  parts.push(el("p", { class: "muted small" }, `which of two held-out images drives the unit more, judged in ${t.independent}'s features (${t.judge || "pooled"} judge; chance 0.50; people score 0.92 with natural exemplars, 0.82 with visualizations: Borowski et al. 2021)`));
  const test = score("renders") && score("renders").test;
  if (test) parts.push(el("p", { class: "muted small", id: "render-test" }, `renders against ${test.null.length} sets of as many of the unit's own exemplars: ` +
    `${fmt(test.score, 2)} against their median ${fmt(test.null[Math.floor(test.null.length / 2)], 2)}, p = ${fmt(test.p_value, 2)} ` +
    `(flagged at p ≤ ${test.alpha}: ${pct(test.false_alarm)} false alarms for renders as informative as exemplars)`));
  if (t.paths) {
    const p = t.paths;
    parts.push(el("table", { class: "paths" },
      el("tr", {}, el("th", {}, "earlier layer"), el("th", {}, "render ↔ exemplars"), el("th", {}, "band: random … exemplars")),
      p.layers.map((name, i) => el("tr", { class: p.render[i] > p.lower[i] ? "inside" : "outside" }, el("td", {}, name), el("td", {}, fmt(p.render[i], 2)),
        el("td", {}, `${fmt(p.lower[i], 2)} … ${fmt(p.upper[i], 2)}`)))));
    parts.push(el("p", { class: "muted small" }, `path similarity (Spearman correlations of spatially averaged channels): the render is closer to the exemplars than random images are in ${pct(p.share)} of ${p.layers.length} layers` +
      (p.p_value == null ? "" : `; p = ${fmt(p.p_value, 2)} against ${p.null.length} held-out exemplars (flagged at p ≤ 0.1: ${pct(p.false_alarm)} false alarms on natural images)`)));
  }
  return el("section", { id: "trust" }, ...parts);
}

async function unit() {
  const data = await getJSON(page.api);
  crumbs([{ text: "home", href: page.home }, { text: data.model }, { text: data.layer, href: data.layer_url }, { text: `unit ${data.unit}` }]);
  const nav = el("nav", { class: "unitnav" },
    data.prev ? el("a", { id: "prev", href: data.prev, rel: "prev" }, "← previous") : el("span", { class: "muted" }, "← previous"),
    el("span", {}, `unit ${data.unit} of ${data.channels}`),
    data.next ? el("a", { id: "next", href: data.next, rel: "next" }, "next →") : el("span", { class: "muted" }, "next →"));
  const renders = el("section", { class: "renders" }, el("h2", {}, "Optimized images"),
    data.renders.length ? el("div", { class: "row" }, data.renders.map(renderFigure))
      : el("div", {}, el("p", { class: "muted" }, "Not rendered yet."), data.can_render ? renderButton(data) : null));
  const s = data.stats;
  const stats = el("section", { class: "stats" }, el("h2", {}, "Activation statistics"),
    s ? el("div", { class: "row" },
      el("table", {}, [["images", s.images], ["mean", fmt(s.mean)], ["std", fmt(s.std)], ["max", fmt(s.max)], ["min", fmt(s.min)],
        ["positive in", pct(s.fraction_positive)]].map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v))))),
      el("div", {}, histogram(s), el("p", { class: "muted small" }, "per-image maxima over the dataset")))
      : el("p", { class: "muted" }, "No exemplar pass yet (build with --dataset)."));
  const sections = [nav, renders, stats];
  const same = data.same_unit;
  if (same) sections.push(el("section", { id: "same-unit" }, el("h2", {}, "The same unit in another network"),
    el("p", {}, `unit ${same.unit} of ${same.layer} in ${same.model}: correlation ${fmt(same.correlation, 2)} over images and positions` +
      (same.buddies ? ", each the other's best match" : "") + (same.matched ? "" : " (below the null's threshold: no real match)") + " ",
      el("a", { href: same.diff_page }, "the whole diff →"))));
  const ex = data.exemplars;
  if (ex.max) sections.push(el("section", {}, el("h2", {}, "Top exemplars"),
    el("p", { class: "muted small" }, `where the unit fires most in ${data.dataset}, cropped to its receptive field; the dot marks the maximum`),
    el("div", { class: "exemplars big" }, ex.max.map((e) => exemplarTile(e, true)))));
  if (ex.mean) sections.push(el("section", {}, el("h2", {}, "Top by mean activation"),
    el("div", { class: "exemplars" }, ex.mean.map((e) => exemplarTile(e, false)))));
  if (ex.min) sections.push(el("section", {}, el("h2", {}, "Most negative"),
    el("div", { class: "exemplars" }, ex.min.map((e) => exemplarTile(e, false)))));
  if (data.cofiring.length) sections.push(el("section", {}, el("h2", {}, "Fires together with"),
    el("ul", { class: "cofiring" }, data.cofiring.map((c) => el("li", {}, el("a", { href: c.url }, `unit ${c.unit}`), ` r = ${fmt(c.correlation, 2)}`)))));
  sections.splice(2, 0, trustSection(data.trust));
  sections.push(weightsSection(data.weights));
  app.replaceChildren(el("h1", {}, `${data.model} ${data.layer} · unit ${data.unit}`), ...sections);
}

document.addEventListener("keydown", (event) => {
  if (kind !== "unit" || event.target.closest("input, select, textarea") || event.altKey || event.ctrlKey || event.metaKey) return;
  const link = document.getElementById(event.key === "ArrowLeft" ? "prev" : event.key === "ArrowRight" ? "next" : "");
  if (link) location.href = link.href;
});

// -------------------------------------------------------------------------------------- exemplar
function exemplar() {
  const back = page.unit_url;
  crumbs([{ text: "home", href: page.home }, { text: page.model }, { text: page.layer, href: page.base }, { text: `unit ${page.unit}`, href: back }, { text: page.path }]);
  const outline = el("span", { class: "outline", id: "outline", hidden: true });
  const image = el("img", { id: "source", src: page.source, alt: page.path });
  image.addEventListener("load", () => {
    const [x0, y0, x1, y1] = page.box;
    const w = image.naturalWidth, h = image.naturalHeight;
    const left = Math.max(x0, 0), top = Math.max(y0, 0);
    Object.assign(outline.style, { left: `${(left / w) * 100}%`, top: `${(top / h) * 100}%`,
      width: `${((Math.min(x1, w) - left) / w) * 100}%`, height: `${((Math.min(y1, h) - top) / h) * 100}%` });
    outline.hidden = false;
  });
  app.replaceChildren(el("h1", {}, page.path),
    el("p", { class: "muted" }, `${page.kind_} exemplar of unit ${page.unit}: value ${fmt(page.value)}; the outline is the crop shown on the unit page. `,
      el("a", { href: back }, "back to the unit")),
    el("div", { class: "source" }, image, outline));
}

// ----------------------------------------------------------------------------------------- image
// A map of the layer's grid as a canvas over the image: red-blue for signed values, a heat scale otherwise.
function mapCanvas(map, signed) {
  const h = map.length, w = map[0].length;
  const canvas = el("canvas", { class: "overlay", width: w, height: h });
  const ctx = canvas.getContext("2d");
  const image = ctx.createImageData(w, h);
  const scale = Math.max(...map.flat().map(Math.abs), 1e-12);
  map.flat().forEach((v, i) => {
    const t = Math.min(Math.abs(v) / scale, 1);
    const rgb = signed ? (v >= 0 ? [229, 72, 77] : [47, 111, 219]) : [255, 160 * t + 40, 0];
    image.data.set([...rgb, Math.round(t * 200)], i * 4);
  });
  ctx.putImageData(image, 0, 0);
  return canvas;
}

function image() {
  crumbs([{ text: "home", href: page.home }, { text: page.model }, { text: page.layer, href: page.layer_url }, { text: "an image" }]);
  const status = el("p", { id: "image-status", class: "muted" }, page.can_explain ? "Choose or drop an image." : "This microscope holds no model: start it with --explain (or --render) to explain images.");
  const input = el("input", { id: "upload", type: "file", accept: "image/*", disabled: !page.can_explain });
  const result = el("div", { id: "explained" });
  async function explain(file) {
    status.textContent = `explaining ${file.name}…`;
    status.className = "muted";
    result.replaceChildren();
    try {
      const response = await fetch(page.api, { method: "POST", body: file, headers: { "Content-Type": "application/octet-stream" } });
      const data = await response.json();
      if (!response.ok) throw new Error(data.detail || response.statusText);
      const top = data.attribution ? `class ${data.attribution.name || data.attribution.target} (logit ${fmt(data.attribution.logit)}); ` : "";
      status.textContent = `${file.name}: ${top}hover the image to see the units at each position`;
      show(URL.createObjectURL(file), data);
    } catch (error) {
      status.textContent = `refused: ${error.message}`;
      status.className = "error";
    }
  }
  function show(src, data) {
    const [gh, gw] = data.grid;
    const picture = el("img", { id: "picture", src, alt: "the image" });
    const marker = el("span", { class: "cell", id: "cell", hidden: true });
    const units = el("div", { id: "position-units", class: "exemplars" });
    const frame = el("div", { class: "explain-frame" }, picture, marker);
    function at(y, x) {
      marker.hidden = false;
      Object.assign(marker.style, { left: `${(x / gw) * 100}%`, top: `${(y / gh) * 100}%`, width: `${100 / gw}%`, height: `${100 / gh}%` });
      units.replaceChildren(el("p", { class: "muted small", id: "position" }, `position (${y}, ${x})`),
        ...data.units[y][x].map((u, i) => {
          const link = data.links[u];
          return el("a", { class: "exemplar unit-link", href: link.url, "data-unit": u },
            el("span", { class: "frame" }, link.thumb ? el("img", { src: link.thumb, alt: `unit ${u}` }) : el("span", { class: "placeholder" }, "not rendered")),
            el("span", { class: "caption" }, `unit ${u}: ${fmt(data.values[y][x][i])}`));
        }));
    }
    frame.addEventListener("mousemove", (event) => {
      const box = frame.getBoundingClientRect();
      const x = Math.min(gw - 1, Math.max(0, Math.floor(((event.clientX - box.left) / box.width) * gw)));
      const y = Math.min(gh - 1, Math.max(0, Math.floor(((event.clientY - box.top) / box.height) * gh)));
      at(y, x);
    });
    const groups = data.groups.spatial.map((map, g) => el("figure", { class: "group" },
      el("div", { class: "explain-frame small" }, el("img", { src, alt: `group ${g}` }), mapCanvas(map, false)),
      el("figcaption", {}, data.groups.attribution ? `group ${g}: attribution ${fmt(data.groups.attribution[g])}` : `group ${g}`,
        el("div", { class: "group-units" }, data.groups.units[g].map((u) => el("a", { href: data.links[u].url, title: `unit ${u}`, class: "group-unit" },
          data.links[u].thumb ? el("img", { src: data.links[u].thumb, alt: `unit ${u}` }) : el("span", { class: "placeholder" }, String(u))))))));
    result.replaceChildren(
      el("div", { class: "row" }, frame, el("div", {}, el("h2", {}, "Top units here"), units)),
      el("h2", {}, `Neuron groups (${Math.round(data.groups.explained * 100)}% explained)`), el("div", { class: "row", id: "groups" }, groups),
      data.attribution ? el("h2", {}, `Where ${data.attribution.name || data.attribution.target} comes from`) : null,
      data.attribution ? el("div", { class: "explain-frame", id: "attribution" }, el("img", { src, alt: "attribution" }), mapCanvas(data.attribution.map, true)) : null);
    at(0, 0);
  }
  input.addEventListener("change", () => input.files.length && explain(input.files[0]));
  const picker = el("select", { id: "pick", disabled: !page.can_explain }, el("option", { value: "" }, "one of the atlas's images…"));
  picker.addEventListener("change", async () => {
    if (!picker.value) return;
    const response = await fetch(picker.value);
    const blob = await response.blob();
    explain(new File([blob], picker.selectedOptions[0].textContent, { type: blob.type }));
  });
  getJSON(page.images).then((images) => picker.append(...images.map((i) => el("option", { value: i.source }, i.name)))).catch(() => null);
  const drop = el("div", { id: "drop", class: "drop" }, "drop an image here, or ", input, " or ", picker);
  drop.addEventListener("dragover", (event) => event.preventDefault());
  drop.addEventListener("drop", (event) => { event.preventDefault(); if (event.dataTransfer.files.length) explain(event.dataTransfer.files[0]); });
  app.replaceChildren(el("h1", {}, `${page.model} ${page.layer}: what an image is made of`), drop, status, result);
}

// --------------------------------------------------------------------------- activation atlas (map)
const CELL = 80;

async function map() {
  const data = await getJSON(page.api);
  crumbs([{ text: "home", href: page.home }, { text: data.model }, { text: data.layer, href: data.layer_url }, { text: "activation atlas" }]);
  const canvas = el("canvas", { id: "map", width: 720, height: 720, tabindex: 0 });
  const tip = el("div", { id: "map-tip", class: "map-tip", hidden: true });
  const panel = el("div", { id: "cell-panel", class: "cell-panel" }, el("p", { class: "muted" }, "Click a cell to see the image patches in it and the units most active there."));
  const view = { scale: 1, x: 0, y: 0 };
  const side = data.grid * CELL;
  view.scale = canvas.width / side;
  const icons = new Map();
  const byPlace = new Map(data.cells.map((c) => [`${c.row},${c.col}`, c]));
  let hover = null, chosen = null;
  for (const c of data.cells) {
    if (!c.icon) continue;
    const image = new Image();
    image.onload = () => draw();
    image.src = c.icon;
    icons.set(c.cell, image);
  }
  function draw() {
    const ctx = canvas.getContext("2d");
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.setTransform(view.scale, 0, 0, view.scale, view.x, view.y);
    for (const c of data.cells) {
      const image = icons.get(c.cell);
      if (image && image.complete && image.naturalWidth) ctx.drawImage(image, c.col * CELL, c.row * CELL, CELL, CELL);
      else { ctx.strokeStyle = "#ccc"; ctx.strokeRect(c.col * CELL + 1, c.row * CELL + 1, CELL - 2, CELL - 2); }
    }
    for (const [c, colour] of [[hover, "#2f6fdb"], [chosen, "#e5484d"]]) {
      if (!c) continue;
      ctx.lineWidth = 3 / view.scale;
      ctx.strokeStyle = colour;
      ctx.strokeRect(c.col * CELL, c.row * CELL, CELL, CELL);
    }
    canvas.dataset.scale = view.scale.toFixed(4);
    canvas.dataset.offset = `${Math.round(view.x)},${Math.round(view.y)}`;
  }
  function cellAt(event) {
    const box = canvas.getBoundingClientRect();
    const px = ((event.clientX - box.left) * canvas.width) / box.width, py = ((event.clientY - box.top) * canvas.height) / box.height;
    const gx = (px - view.x) / view.scale, gy = (py - view.y) / view.scale;
    return byPlace.get(`${Math.floor(gy / CELL)},${Math.floor(gx / CELL)}`) || null;
  }
  function zoom(factor, cx = canvas.width / 2, cy = canvas.height / 2) {
    const next = Math.min(Math.max(view.scale * factor, 0.2), 12);
    view.x = cx - ((cx - view.x) * next) / view.scale;
    view.y = cy - ((cy - view.y) * next) / view.scale;
    view.scale = next;
    draw();
  }
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    const box = canvas.getBoundingClientRect();
    zoom(event.deltaY < 0 ? 1.25 : 0.8, ((event.clientX - box.left) * canvas.width) / box.width, ((event.clientY - box.top) * canvas.height) / box.height);
  }, { passive: false });
  let drag = null;
  canvas.addEventListener("mousedown", (event) => { drag = { x: event.clientX, y: event.clientY, vx: view.x, vy: view.y, moved: false }; });
  window.addEventListener("mouseup", (event) => {
    if (drag && !drag.moved) { const c = cellAt(event); if (c) show(c); }
    drag = null;
  });
  canvas.addEventListener("mousemove", (event) => {
    if (drag) {
      const box = canvas.getBoundingClientRect();
      const dx = ((event.clientX - drag.x) * canvas.width) / box.width, dy = ((event.clientY - drag.y) * canvas.height) / box.height;
      if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
      view.x = drag.vx + dx;
      view.y = drag.vy + dy;
      draw();
      return;
    }
    const c = cellAt(event);
    if (c !== hover) { hover = c; draw(); }
    if (c) {
      tip.hidden = false;
      tip.textContent = `${c.count} samples${c.label ? ` · ${c.label} (${pct(c.label_share)})` : ""}`;
      tip.style.left = `${event.pageX + 12}px`;
      tip.style.top = `${event.pageY + 12}px`;
    } else tip.hidden = true;
  });
  canvas.addEventListener("mouseleave", () => { tip.hidden = true; hover = null; draw(); });
  async function show(c) {
    chosen = c;
    draw();
    const cell = await getJSON(c.api);
    panel.replaceChildren(
      el("h2", {}, `Cell row ${cell.row}, column ${cell.col}: ${cell.count} samples`),
      cell.label ? el("p", {}, `top attributed class: ${cell.label} (${pct(cell.label_share)} of its samples)`) : null,
      cell.cosine !== null ? el("p", { class: "muted" }, `icon: cosine ${fmt(cell.cosine, 2)} with the cell's mean activation`) : null,
      el("h2", {}, "Image patches in this cell"),
      el("div", { class: "patches", id: "patches" }, cell.members.map((m) => el("figure", { class: "patch" },
        el("img", { src: m.patch, alt: `${m.image} at ${m.y},${m.x}`, title: `${m.image} at (${m.y}, ${m.x})` })))),
      el("h2", {}, "Units most active here"),
      el("div", { class: "group-units", id: "cell-units" }, cell.units.map((u) => el("a", { href: u.url, title: `unit ${u.unit}: ${fmt(u.value)}`, class: "group-unit" },
        u.thumb ? el("img", { src: u.thumb, alt: `unit ${u.unit}` }) : el("span", { class: "placeholder" }, String(u.unit))))));
  }
  window.filterscopeMap = {
    view,
    centre(row, col) {
      const box = canvas.getBoundingClientRect();
      const px = view.x + (col + 0.5) * CELL * view.scale, py = view.y + (row + 0.5) * CELL * view.scale;
      return [box.left + (px * box.width) / canvas.width, box.top + (py * box.height) / canvas.height];
    },
  };
  const trust = data.trustworthiness === null ? "" : `, trustworthiness ${fmt(data.trustworthiness, 3)}`;
  const s = data.settings;
  app.replaceChildren(
    el("h1", {}, `${data.model} ${data.layer}: activation atlas`),
    el("p", { class: "muted" }, `${data.cells.length} cells of ${data.grid}×${data.grid} (${s.layout}, ${s.positions} positions${s.label_class !== null ? `, class ${s.label_class}` : ""}${trust}). Each icon is the image that drives its cell's mean activation; scroll to zoom, drag to pan.`),
    el("div", { class: "controls" }, el("button", { id: "zoom-in", onclick: () => zoom(1.25) }, "+"), el("button", { id: "zoom-out", onclick: () => zoom(0.8) }, "−"),
      el("button", { id: "zoom-reset", onclick: () => { view.scale = canvas.width / side; view.x = 0; view.y = 0; draw(); } }, "reset")),
    el("div", { class: "row" }, canvas, panel), tip);
  draw();
}

function ckaColour(v) {
  const t = Math.max(0, Math.min(1, v));
  return `rgb(${Math.round(68 + 185 * t)}, ${Math.round(1 + 230 * t)}, ${Math.round(84 + (t < 0.5 ? 100 * t : 150 - 200 * (t - 0.5)))})`;
}

async function diff() {
  const data = await getJSON(page.api);
  crumbs([{ text: "home", href: page.home }, { text: data.model }, { text: data.layer, href: data.layer_url }, { text: "diff" }]);
  const short = (name) => name.replace("_blocks.", "b");
  const best = data.cka.map((row) => row.indexOf(Math.max(...row)));
  const heat = el("table", { class: "cka", id: "cka" },
    el("tr", {}, el("th", {}, "A \\ B"), data.layers_b.map((name) => el("th", { title: name }, short(name)))),
    data.layers_a.map((name, i) => el("tr", {}, el("th", { title: name }, short(name)),
      data.cka[i].map((v, j) => el("td", { style: `background:${ckaColour(v)}`, class: best[i] === j ? "best" : "", title: `${name} ↔ ${data.layers_b[j]}: ${fmt(v, 3)}` },
        best[i] === j ? "●" : "")))));
  const sections = [el("h1", {}, `${data.model} ${data.layer} against another network`),
    el("p", { class: "muted" }, `A: ${data.model_a}; B: ${data.model_b}; over ${data.images} images (${data.diffs} diff(s) of this layer, the newest shown).`),
    el("h2", {}, "Layer similarity (linear CKA" + (data.debiased ? ", debiased" : "") + "; ● each row's best partner)"), heat];
  const concepts = data.concepts.find((c) => c.layer_a === data.layer);
  if (concepts) {
    const exclusive = concepts.latents.filter((lt) => (lt.kind === "b-only" || lt.kind === "a-only") && (lt.readable === null || lt.readable <= 0.5))
      .sort((x, y) => (x.kind === y.kind ? y.usage - x.usage : x.kind === "b-only" ? -1 : 1));
    sections.push(el("h2", {}, "Concepts of one network only"),
      el("p", { class: "muted" }, Object.entries(concepts.counts).map(([k, n]) => `${n} ${k}`).join(", ") + ` of ${concepts.latents.length} (crosscoder, k ${concepts.k})`),
      el("table", { id: "exclusive" }, el("tr", {}, el("th", {}, "concept"), el("th", {}, "only in"), el("th", {}, "used on"), el("th", {}, "top images")),
        exclusive.map((lt) => el("tr", {}, el("td", {}, String(lt.index)), el("td", {}, lt.kind === "b-only" ? "B" : "A"), el("td", {}, pct(lt.usage)),
          el("td", {}, (concepts.top_images[String(lt.index)] || []).map((i) => data.image_names[i] || `#${i}`).join(", "))))));
  }
  for (const m of data.matches) {
    sections.push(el("h2", {}, `Units of ${m.layer_a} matched with ${m.layer_b}`),
      el("p", { class: "muted" }, `${pct(m.share)} of A's ${m.units_a} units matched above ${fmt(m.threshold, 2)} (the 99th percentile of a shuffled-image null); ${m.matches.filter((x) => x.buddies).length} best buddies`),
      el("table", { class: "matches", id: "matches" }, el("tr", {}, el("th", {}, "unit of A"), el("th", {}, "unit of B"), el("th", {}, "correlation"), el("th", {}, "")),
        m.matches.map((x) => el("tr", { class: x.correlation > m.threshold ? "matched" : "unmatched" }, el("td", {}, el("a", { href: x.url }, String(x.a))),
          el("td", {}, String(x.b)), el("td", {}, fmt(x.correlation, 3)), el("td", {}, x.buddies ? "best buddies" : "")))));
  }
  app.replaceChildren(...sections);
}

const handler = { home, layer, unit, exemplar, image, map, diff }[kind];
if (handler) Promise.resolve().then(handler).catch(fail);

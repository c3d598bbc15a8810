// muva serve page: plain JS, no build step, no external resources.
"use strict";

(function () {
  const PAGE_SIZE = 10;       // hits shown per page of one query
  const MAX_FILES = 16;       // the API's limit of images per search
  const ALPHA = 0.45;         // overlay opacity
  // Part colours come with the masks ("colours", from the part records: the colours of
  // every muva picture); a part the API gave no colour is drawn grey.
  const NO_COLOUR = [128, 128, 128];
  const TOKEN_KEY = "muva-token";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const form = $("#search-form");
  const fileInput = $("#images");
  const drop = $("#drop");
  const message = $("#message");
  const results = $("#results");
  const toggles = $("#part-toggles");

  let chosenFiles = [];
  const partColours = {};
  const shownParts = new Set();     // parts whose overlay is on
  const overlays = [];              // {canvas, masks} of every drawn thumbnail
  const blobUrls = new Map();       // image_url -> object URL (gallery thumbnails)
  let queryUrls = [];               // object URLs of the query files (revoked on a new search)

  // ------------------------------------------------------------------ token
  function readToken() {
    const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
    if (m) {
      sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
      // drop the token from the address bar (and from the history)
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(path, options, retried) {
    const opts = Object.assign({}, options || {});
    const headers = new Headers(opts.headers || {});
    const token = readToken();
    if (token) headers.set("Authorization", "Bearer " + token);
    opts.headers = headers;
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (err) {
      throw new Error("The server cannot be reached (" + err.message + ").");
    }
    if (resp.status === 401 && !retried) {
      const entered = window.prompt("This server needs an access token:");
      if (entered) {
        sessionStorage.setItem(TOKEN_KEY, entered.trim());
        return api(path, options, true);
      }
    }
    if (!resp.ok) {
      let detail = resp.statusText || "request failed";
      try {
        const body = await resp.json();
        if (body && body.error) detail = body.error;
        else if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      } catch (_) { /* not JSON */ }
      const e = new Error(detail + " (HTTP " + resp.status + ")");
      e.status = resp.status;
      throw e;
    }
    return resp;
  }

  // ------------------------------------------------------------------ messages
  function showMessage(text, kind) {
    message.textContent = text;
    message.className = kind || "error";
    message.hidden = !text;
  }

  // ------------------------------------------------------------------ status line
  async function refreshStatus() {
    try {
      const stats = await (await api("stats")).json();
      const p50 = stats.latency_ms && stats.latency_ms.p50;
      $("#status").textContent = "Gallery: " + stats.gallery_size + " images" +
        (stats.model ? " \u00b7 model " + (typeof stats.model === "string" ? stats.model : (stats.model.name || "")) : "") +
        (p50 != null ? " \u00b7 median search " + Number(p50).toFixed(0) + " ms" : "");
    } catch (err) {
      $("#status").textContent = "Status unavailable";
      showMessage("Could not read the server status: " + err.message);
    }
  }

  // ------------------------------------------------------------------ files
  function setFiles(list) {
    const files = Array.from(list).filter((f) => f.type === "" || f.type.startsWith("image/"));
    if (files.length > MAX_FILES) {
      showMessage("At most " + MAX_FILES + " images per search; the first " + MAX_FILES + " are used.", "warning");
    }
    chosenFiles = files.slice(0, MAX_FILES);
    $("#chosen").textContent = chosenFiles.length
      ? chosenFiles.length + " chosen: " + chosenFiles.map((f) => f.name).join(", ")
      : "";
  }

  fileInput.addEventListener("change", () => setFiles(fileInput.files));
  ["dragenter", "dragover"].forEach((ev) => drop.addEventListener(ev, (e) => {
    e.preventDefault();
    drop.classList.add("over");
  }));
  ["dragleave", "drop"].forEach((ev) => drop.addEventListener(ev, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) {
      setFiles(e.dataTransfer.files);
      if (chosenFiles.length) form.requestSubmit();
    }
  });

  // ------------------------------------------------------------------ part toggles
  function learnParts(masks) {
    if (!masks || !masks.parts) return;
    masks.parts.forEach((name, i) => {
      const c = masks.colours && (Array.isArray(masks.colours) ? masks.colours[i] : masks.colours[name]);
      if (c) partColours[name] = c;
      if (document.getElementById("part-" + name)) return;
      const label = document.createElement("label");
      label.className = "inline part-toggle";
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = "part-" + name;
      box.value = name;
      box.addEventListener("change", () => {
        if (box.checked) shownParts.add(name); else shownParts.delete(name);
        redrawAll();
      });
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = "rgb(" + (partColours[name] || NO_COLOUR).join(",") + ")";
      label.append(box, swatch, document.createTextNode(" " + name.replace(/_/g, " ")));
      toggles.append(label);
    });
  }

  function draw(canvas, masks) {
    const ctx = canvas.getContext("2d");
    const img = canvas.parentElement.querySelector("img");
    const w = img.naturalWidth || img.width || 64;
    const h = img.naturalHeight || img.height || 128;
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    ctx.clearRect(0, 0, w, h);
    if (!masks || !masks.grid) return;
    const rows = masks.grid[0], cols = masks.grid[1];
    const cw = w / cols, ch = h / rows;
    masks.parts.forEach((name, p) => {
      if (!shownParts.has(name)) return;
      const c = partColours[name] || NO_COLOUR;
      ctx.fillStyle = "rgba(" + c.join(",") + "," + ALPHA + ")";
      const v = masks.values[p] || [];
      for (let r = 0; r < rows; r++) {
        for (let q = 0; q < cols; q++) {
          if (v[r * cols + q]) ctx.fillRect(Math.floor(q * cw), Math.floor(r * ch), Math.ceil(cw), Math.ceil(ch));
        }
      }
    });
  }

  function redrawAll() { overlays.forEach((o) => draw(o.canvas, o.masks)); }

  function attachOverlay(figure, masks) {
    const canvas = figure.querySelector("canvas");
    const img = figure.querySelector("img");
    const o = { canvas: canvas, masks: masks };
    overlays.push(o);
    if (img.complete && img.naturalWidth) draw(canvas, masks);
    img.addEventListener("load", () => draw(canvas, masks));
  }

  // ------------------------------------------------------------------ images (token-safe)
  async function galleryImage(img, url) {
    try {
      if (!blobUrls.has(url)) {
        const blob = await (await api(url.replace(/^\//, ""))).blob();
        blobUrls.set(url, URL.createObjectURL(blob));
      }
      img.src = blobUrls.get(url);
    } catch (err) {
      img.alt = "image unavailable";
      showMessage("Could not load a gallery image: " + err.message);
    }
  }

  // ------------------------------------------------------------------ results
  function renderQuery(result, file) {
    const node = $("#query-template").content.firstElementChild.cloneNode(true);
    const name = result.filename || (file && file.name) || "query " + (result.query + 1);
    node.querySelector(".query-title").textContent = "Query " + (result.query + 1) + ": " + name;
    node.setAttribute("aria-label", "Results for " + name);
    const qfig = node.querySelector(".query-thumb");
    const qimg = qfig.querySelector("img");
    qimg.alt = "query " + name;
    if (file) {
      const u = URL.createObjectURL(file);
      queryUrls.push(u);
      qimg.src = u;
    }
    learnParts(result.masks);
    attachOverlay(qfig, result.masks);

    const hits = result.hits || [];
    const list = node.querySelector(".hits");
    const pages = Math.max(1, Math.ceil(hits.length / PAGE_SIZE));
    let page = 0;
    const prev = node.querySelector(".prev"), next = node.querySelector(".next");

    function showPage() {
      list.textContent = "";
      list.start = page * PAGE_SIZE + 1;
      if (!hits.length) {
        const li = document.createElement("li");
        li.className = "empty";
        li.textContent = "No gallery image passes the filters.";
        list.append(li);
      }
      hits.slice(page * PAGE_SIZE, (page + 1) * PAGE_SIZE).forEach((hit) => {
        const li = $("#hit-template").content.firstElementChild.cloneNode(true);
        li.dataset.camid = hit.camid;
        li.dataset.pid = hit.pid;
        li.dataset.id = hit.id;
        li.querySelector(".rank").textContent = hit.rank;
        li.querySelector(".pid").textContent = hit.pid;
        li.querySelector(".camid").textContent = hit.camid;
        li.querySelector(".distance").textContent = Number(hit.distance).toFixed(4);
        const fig = li.querySelector(".thumb");
        const img = fig.querySelector("img");
        img.alt = "rank " + hit.rank + ": identity " + hit.pid + ", camera " + hit.camid;
        learnParts(hit.masks);
        attachOverlay(fig, hit.masks);
        galleryImage(img, hit.image_url);
        list.append(li);
      });
      node.querySelector(".page-info").textContent = "Page " + (page + 1) + " of " + pages +
        " (" + hits.length + " hits)";
      prev.disabled = page === 0;
      next.disabled = page >= pages - 1;
      // forget overlays of thumbnails no longer in the document
      for (let i = overlays.length - 1; i >= 0; i--) {
        if (!document.contains(overlays[i].canvas) && !node.contains(overlays[i].canvas)) overlays.splice(i, 1);
      }
    }
    prev.addEventListener("click", () => { if (page > 0) { page--; showPage(); } });
    next.addEventListener("click", () => { if (page < pages - 1) { page++; showPage(); } });
    node.querySelector(".pager").hidden = pages < 2;
    showPage();
    return node;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!chosenFiles.length) { showMessage("Choose at least one image to search with."); return; }
    const k = Number($("#k").value);
    if (!Number.isInteger(k) || k < 1 || k > 100) { showMessage("k must be a whole number from 1 to 100."); return; }
    const cams = $("#cameras").value.trim();
    if (cams && !/^\d+(\s*,\s*\d+)*$/.test(cams)) { showMessage("Cameras must be comma-separated numbers, e.g. 1,3."); return; }
    const exclude = $("#exclude-camera").value.trim();

    const body = new FormData();
    chosenFiles.forEach((f) => body.append("images", f, f.name));
    body.append("k", String(k));
    if (cams) body.append("cameras", cams.replace(/\s+/g, ""));
    if (exclude !== "") body.append("exclude_camera", exclude);
    body.append("masks", $("#want-masks").checked ? "true" : "false");

    const button = $("#search");
    button.disabled = true;
    showMessage("");
    results.setAttribute("aria-busy", "true");
    try {
      const data = await (await api("search", { method: "POST", body: body })).json();
      queryUrls.forEach((u) => URL.revokeObjectURL(u));
      queryUrls = [];
      overlays.length = 0;
      results.textContent = "";
      (data.results || []).forEach((r) => results.append(renderQuery(r, chosenFiles[r.query])));
      if (!(data.results || []).length) showMessage("The server returned no results.", "warning");
      refreshStatus();
    } catch (err) {
      showMessage("Search failed: " + err.message);
    } finally {
      button.disabled = false;
      results.removeAttribute("aria-busy");
    }
  });

  // parts known before the first search: the default three (more appear when MASKS name them)
  learnParts({ parts: ["head", "upper_body", "legs"] });
  readToken();
  refreshStatus();
})();

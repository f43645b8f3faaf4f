// The browser upload page: files, folders and .zip archives sent in resumable chunks, then one summary per study.
//
// No build step: a plain ES module with setup(root) / teardown(). The server decides everything that matters
// (who may upload, what is accepted); this module only moves bytes, survives dropped connections and shows results.
// Finishing is done by a server worker (a 1 GB archive takes minutes): the page polls the batch for its progress
// and its summary, and after a reload it picks up the polling of a batch it had finished.

const CHUNK_BYTES = 8 * 1024 * 1024; // well under the server's 16 MiB per PUT, and small enough to resend cheaply
const PARALLEL_FILES = 3; // enough to hide per-request latency without starving one big file of bandwidth
const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
// A server that has not answered for this long (dropped connections, 5xx) stops the upload with a message; the batch
// stays open, so picking the same files again resumes it.
const GIVE_UP_AFTER_MS = 10 * 60 * 1000;
const CHUNK_TYPE = "application/offset+octet-stream";
const POLL_MS = 1000; // one small GET a second shows "file N of M" moving without loading the server
// Per tab: a reload can resume the same batch, another tab never picks up this one's files.
const STORAGE_KEY = "readroom.upload.v1";

let current = null;

class Retryable extends Error {}

// Ends the whole upload at once (a session that ended, a server that stopped answering): every file would fail alike.
class Stop extends Error {}

async function stopUnlessAllowed(response) {
  if (response.status === 401) {
    throw new Stop("your session has ended. Sign in again, then pick the same files: the upload resumes where it stopped.");
  }
  if (response.status === 403) throw new Stop(await reasonOf(response));
  if (response.status === 404) {
    // A batch belongs to the clinic it was opened in: after a switch of clinic (another tab) it is not found here.
    throw new Stop(
      "this upload is not found in the clinic you are working in now (was the clinic switched in another tab?). " +
        "Switch back to it and pick the same files: the upload resumes where it stopped.",
    );
  }
}

export function setup(root) {
  teardown();
  const q = (name) => root.querySelector(`[data-upload-${name}]`);
  const view = {
    root,
    api: root.dataset.api,
    drop: q("drop"),
    filesInput: q("files"),
    folderInput: q("folder"),
    status: q("status"),
    overall: q("overall"),
    overallProgress: q("overall-progress"),
    overallText: q("overall-text"),
    processing: q("processing"),
    processingProgress: q("processing-progress"),
    processingText: q("processing-text"),
    list: q("list"),
    summary: q("summary"),
    summaryHeading: q("summary-heading"),
    studies: q("studies"),
    noStudies: q("no-studies"),
    refused: q("refused"),
    refusedSection: q("refused-section"),
    failed: q("failed"),
    failedSection: q("failed-section"),
    skipped: q("skipped"),
    skippedSection: q("skipped-section"),
    again: q("again"),
  };
  const abort = new AbortController();
  const listeners = [];
  const on = (target, type, handler) => {
    target.addEventListener(type, handler);
    listeners.push(() => target.removeEventListener(type, handler));
  };
  current = { view, abort, listeners, busy: false };

  on(view.filesInput, "change", () => start(filesFromInput(view.filesInput)));
  on(view.folderInput, "change", () => start(filesFromInput(view.folderInput)));
  on(view.drop, "dragover", (event) => {
    event.preventDefault(); // without this the browser opens the dropped file instead
    view.drop.classList.add("is-over");
  });
  on(view.drop, "dragleave", () => view.drop.classList.remove("is-over"));
  on(view.drop, "drop", (event) => {
    event.preventDefault();
    view.drop.classList.remove("is-over");
    // Entries must be taken synchronously: the DataTransfer is emptied once the event handler returns.
    const entries = Array.from(event.dataTransfer.items || [])
      .filter((item) => item.kind === "file")
      .map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null));
    const plain = Array.from(event.dataTransfer.files || []);
    filesFromDrop(entries, plain).then(start, (error) => say(`Could not read the dropped files: ${error.message}`));
  });
  on(view.again, "click", reset);
  on(window, "beforeunload", (event) => {
    if (current && current.busy) event.preventDefault(); // the upload resumes after a reload, but ask first
  });
  const stored = readStored();
  if (stored && stored.finishing) resumeFinishing(stored.batchId);
  return teardown;
}

export function teardown() {
  if (!current) return;
  current.abort.abort();
  for (const remove of current.listeners) remove();
  current = null;
}

// Collecting files ----------------------------------------------------------------------------------------

function filesFromInput(input) {
  // webkitRelativePath keeps the folder structure, which tells the server that a stray .txt is a folder extra.
  const files = Array.from(input.files).map((file) => ({ file, name: file.webkitRelativePath || file.name }));
  input.value = ""; // choosing the same files again must fire `change` again
  return files;
}

async function filesFromDrop(entries, plain) {
  if (!entries.length || entries.some((entry) => !entry)) {
    return plain.map((file) => ({ file, name: file.name }));
  }
  const found = [];
  for (const entry of entries) await walk(entry, found);
  return found;
}

async function walk(entry, found) {
  if (entry.isFile) {
    const file = await new Promise((resolve, reject) => entry.file(resolve, reject));
    found.push({ file, name: entry.fullPath.replace(/^\/+/, "") });
    return;
  }
  if (!entry.isDirectory) return;
  const reader = entry.createReader();
  // readEntries answers in batches (100 in Chromium) until it answers an empty one.
  for (;;) {
    const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
    if (!batch.length) break;
    for (const child of batch) await walk(child, found);
  }
}

// Uploading -----------------------------------------------------------------------------------------------

async function start(items) {
  if (!current || !items.length) return;
  if (current.busy) {
    say("An upload is running: add these files once it has finished.");
    return;
  }
  const { view } = current;
  current.busy = true;
  setPickersDisabled(true);
  view.summary.hidden = true;
  view.processing.hidden = true;
  view.list.replaceChildren();
  const skippedHere = [];
  const uploads = [];
  const taken = new Set();
  for (const { file, name: given } of items) {
    // Loose files dropped from two folders may share a name (IM0001); the server knows a file by its name and size
    // (a repeated declaration is a retry), so a second one gets a name of its own rather than the first one's upload.
    let name = given;
    for (let copy = 2; taken.has(name); copy++) name = `${given} (${copy})`;
    taken.add(name);
    if (file.size === 0) {
      skippedHere.push({ file: name, reason: "empty file" }); // the server refuses empty files; nothing to send
      continue;
    }
    uploads.push({ file, name, key: `${name}|${file.size}|${file.lastModified}`, received: 0, row: addRow(name, file.size) });
  }
  const clientRefused = [];
  const clientFailed = [];
  try {
    if (uploads.length) {
      say(`Uploading ${uploads.length} file${uploads.length === 1 ? "" : "s"}…`);
      view.overall.hidden = false;
      const batchId = await openBatch(uploads);
      updateOverall(uploads);
      await pool(uploads, PARALLEL_FILES, (upload) => sendFile(batchId, upload, uploads));
      for (const upload of uploads) {
        if (upload.refused) clientRefused.push({ file: upload.name, reason: upload.refused });
        else if (upload.failed) clientFailed.push({ file: upload.name, reason: upload.failed });
      }
      say("Checking the files and storing the images…");
      const summary = await finish(batchId);
      sessionStorage.removeItem(STORAGE_KEY);
      showSummary(summary, { skipped: skippedHere, refused: clientRefused, failed: clientFailed });
    } else {
      showSummary({ studies: [], refused: [], failed: [], skipped: [] }, { skipped: skippedHere, refused: [], failed: [] });
    }
  } catch (error) {
    if (error.name !== "AbortError") say(`The upload stopped: ${error.message}`);
  } finally {
    if (current) current.busy = false;
    setPickersDisabled(false);
  }
}

async function openBatch(uploads) {
  // After a reload, pick up the stored batch only if it still takes files and some of these files belong to it.
  const stored = readStored();
  if (stored && !stored.finishing && uploads.some((upload) => stored.files[upload.key]) && (await isOpen(stored.batchId))) {
    const resumable = await Promise.all(uploads.map((upload) => resumeState(stored, upload)));
    if (resumable.some(Boolean)) return stored.batchId;
    for (const upload of uploads) delete upload.fileId;
  }
  const response = await withRetry(() => api(current.view.api, { method: "POST", json: {} }));
  await stopUnlessAllowed(response);
  if (!response.ok) throw new Error(await reasonOf(response));
  const { id } = await response.json();
  writeStored({ batchId: id, files: {} });
  return id;
}

async function isOpen(batchId) {
  const response = await withRetry(() => api(batchUrl(batchId)));
  return response.ok && (await response.json()).status === "open";
}

async function resumeState(stored, upload) {
  const fileId = stored.files[upload.key];
  if (!fileId) return false;
  const response = await withRetry(() => api(fileUrl(stored.batchId, fileId)));
  if (!response.ok) return false; // finished or gone: this file starts again in a new batch
  const state = await response.json();
  if (state.status === "processed") return false;
  upload.fileId = fileId;
  upload.received = state.received;
  showProgress(upload);
  return true;
}

async function sendFile(batchId, upload, uploads) {
  if (!upload.fileId) {
    const response = await withRetry(() =>
      api(`${current.view.api}${batchId}/files/`, { method: "POST", json: { name: upload.name, size: upload.file.size } }),
    );
    if (!response.ok) {
      await stopUnlessAllowed(response);
      upload.refused = await reasonOf(response);
      rowStatus(upload, `Refused: ${upload.refused}`);
      return;
    }
    upload.fileId = (await response.json()).id;
    const stored = readStored();
    if (stored && stored.batchId === batchId) {
      stored.files[upload.key] = upload.fileId;
      writeStored(stored);
    }
  }
  const url = fileUrl(batchId, upload.fileId);
  let attempt = 0;
  let failingSince = null;
  while (upload.received < upload.file.size) {
    try {
      const end = Math.min(upload.received + CHUNK_BYTES, upload.file.size);
      const response = await api(url, {
        method: "PUT",
        headers: { "Upload-Offset": String(upload.received), "Content-Type": CHUNK_TYPE },
        body: upload.file.slice(upload.received, end),
      });
      if (response.status >= 500) throw new Retryable(`the server answered ${response.status}`);
      await stopUnlessAllowed(response);
      const body = await response.json().catch(() => ({}));
      if (typeof body.received === "number" && (response.ok || response.status === 409)) {
        // A 409 carries where the server's copy really ends: continue from there, not from our guess.
        upload.received = body.received;
        attempt = 0;
        failingSince = null;
        rowStatus(upload, "");
        showProgress(upload);
        updateOverall(uploads);
        continue;
      }
      upload.failed = body.reason || body.detail || `the server answered ${response.status}`;
      rowStatus(upload, `Failed: ${upload.failed}`);
      return;
    } catch (error) {
      if (error.name === "AbortError" || error instanceof Stop) throw error;
      // A dropped connection (fetch rejects) or a 5xx: wait, then ask the server what it holds and resume there.
      failingSince ??= Date.now();
      if (Date.now() - failingSince > GIVE_UP_AFTER_MS) throw noAnswer();
      const delay = backoff(attempt++);
      rowStatus(upload, `Connection lost; retrying in ${Math.round(delay / 1000)} s`);
      await sleep(delay);
      try {
        const response = await api(url);
        if (response.ok) upload.received = (await response.json()).received;
        showProgress(upload);
        updateOverall(uploads);
      } catch (stateError) {
        if (stateError.name === "AbortError") throw stateError;
      }
    }
  }
  rowStatus(upload, "Sent");
}

async function finish(batchId) {
  // Finishing is idempotent on the server, so a lost answer is simply asked for again.
  const response = await withRetry(() => api(`${current.view.api}${batchId}/finish`, { method: "POST", json: {} }));
  await stopUnlessAllowed(response);
  if (response.status !== 200 && response.status !== 202) throw new Error(await reasonOf(response));
  const stored = readStored();
  if (stored && stored.batchId === batchId) writeStored({ ...stored, finishing: true });
  return waitForSummary(await response.json());
}

async function waitForSummary(state) {
  // 202 at once, then the batch reports "file N of M" until a worker has checked and stored every file.
  while (state.status !== "processed") {
    showProcessing(state);
    await sleep(POLL_MS);
    const response = await withRetry(() => api(state.status_url));
    await stopUnlessAllowed(response);
    if (!response.ok) throw new Error(await reasonOf(response));
    state = await response.json();
  }
  showProcessing(state);
  return state.summary;
}

async function resumeFinishing(batchId) {
  // A reload while the server was still processing: show its progress and summary instead of forgetting it.
  const { view } = current;
  current.busy = true;
  setPickersDisabled(true);
  say("Checking the files and storing the images…");
  try {
    const response = await withRetry(() => api(batchUrl(batchId)));
    if (!response.ok) {
      sessionStorage.removeItem(STORAGE_KEY); // gone, or another person's: nothing to wait for
      say("");
      return;
    }
    const summary = await waitForSummary(await response.json());
    sessionStorage.removeItem(STORAGE_KEY);
    view.overall.hidden = true;
    showSummary(summary, { skipped: [], refused: [], failed: [] });
  } catch (error) {
    if (error.name !== "AbortError") say(`The upload stopped: ${error.message}`);
  } finally {
    if (current) current.busy = false;
    if (current) setPickersDisabled(false);
  }
}

async function withRetry(request) {
  const started = Date.now();
  for (let attempt = 0; ; attempt++) {
    try {
      const response = await request();
      if (response.status < 500) return response;
    } catch (error) {
      if (error.name === "AbortError") throw error;
    }
    if (Date.now() - started > GIVE_UP_AFTER_MS) throw noAnswer();
    await sleep(backoff(attempt));
  }
}

function noAnswer() {
  const minutes = Math.round(GIVE_UP_AFTER_MS / 60000);
  return new Stop(`the server has not answered for ${minutes} minutes. Pick the same files again later: the upload resumes where it stopped.`);
}

async function pool(items, size, worker) {
  let next = 0;
  let stopped = false;
  const run = async () => {
    while (!stopped && next < items.length) {
      try {
        await worker(items[next++]);
      } catch (error) {
        stopped = true; // the other workers finish the file in hand and take no new one
        throw error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(size, items.length) }, run));
}

function backoff(attempt) {
  return Math.min(BACKOFF_FIRST_MS * 2 ** attempt, BACKOFF_MAX_MS);
}

function sleep(ms) {
  return new Promise((resolve, reject) => {
    const signal = current.abort.signal;
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        reject(new DOMException("aborted", "AbortError"));
      },
      { once: true },
    );
  });
}

function api(url, { method = "GET", json, headers = {}, body } = {}) {
  const sent = { Accept: "application/json", "X-CSRFToken": csrfToken(), ...headers };
  if (json !== undefined) {
    sent["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  return fetch(url, { method, headers: sent, body, credentials: "same-origin", signal: current.abort.signal });
}

function batchUrl(batchId) {
  return `${current.view.api}${batchId}`;
}

function fileUrl(batchId, fileId) {
  return `${current.view.api}${batchId}/files/${fileId}`;
}

async function reasonOf(response) {
  const body = await response.json().catch(() => ({}));
  return body.reason || body.detail || `the server answered ${response.status}`;
}

function csrfToken() {
  const match = document.cookie.split(";").map((part) => part.trim()).find((part) => part.startsWith("csrftoken="));
  return match ? decodeURIComponent(match.slice("csrftoken=".length)) : "";
}

function readStored() {
  try {
    return JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
  } catch {
    return null;
  }
}

function writeStored(value) {
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(value));
  } catch {
    // Storage full or disabled: uploads still resume within this page, only not across a reload.
  }
}

// Showing progress and results ----------------------------------------------------------------------------

let rowCounter = 0;

function addRow(name, size) {
  const id = `upload-progress-${++rowCounter}`;
  const row = document.createElement("li");
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = name; // textContent, never innerHTML: file names come from the clinic's disk
  const progress = document.createElement("progress");
  progress.id = id;
  progress.max = size;
  progress.value = 0;
  const note = document.createElement("span");
  note.className = "muted";
  row.append(label, progress, note);
  current.view.list.append(row);
  return { progress, note };
}

function showProgress(upload) {
  upload.row.progress.value = upload.received;
}

function rowStatus(upload, text) {
  upload.row.note.textContent = text || `${bytes(upload.received)} of ${bytes(upload.file.size)}`;
}

function updateOverall(uploads) {
  const total = uploads.reduce((sum, upload) => sum + upload.file.size, 0);
  const received = uploads.reduce((sum, upload) => sum + (upload.refused ? upload.file.size : upload.received), 0);
  const { overallProgress, overallText } = current.view;
  overallProgress.max = total;
  overallProgress.value = received;
  overallText.textContent = `${bytes(received)} of ${bytes(total)}`;
}

function showProcessing(state) {
  const { processing, processingProgress, processingText } = current.view;
  const total = Math.max(state.files_total, 1);
  const done = state.status === "processed" ? total : Math.min(state.files_done, total);
  processing.hidden = false;
  processingProgress.max = total;
  processingProgress.value = done;
  if (state.status === "processed") {
    processingText.textContent = `${total} of ${total} files`;
    return;
  }
  const file = Math.min(done + 1, total);
  // One .zip may hold thousands of images: count them too, or a big archive looks stuck at "file 1 of 1".
  const entries = state.entries_done > 1 ? ` (${state.entries_done} entries checked in it)` : "";
  processingText.textContent = `${done} of ${total} files`;
  say(`Checking the files and storing the images: processing file ${file} of ${total}${entries}…`);
}

function showSummary(summary, local) {
  const view = current.view;
  const tbody = view.studies.tBodies[0];
  tbody.replaceChildren();
  for (const study of summary.studies) {
    const row = tbody.insertRow();
    for (const value of [
      personName(study.patient_name),
      study.patient_id,
      dicomDate(study.study_date),
      study.study_description,
      String(study.instances_accepted),
    ]) {
      row.insertCell().textContent = value;
    }
  }
  view.studies.hidden = summary.studies.length === 0;
  view.noStudies.hidden = summary.studies.length > 0;
  fillList(view.refused, view.refusedSection, [...local.refused, ...summary.refused]);
  // A file that failed mid-way is also in the server's summary ("upload incomplete"): list it once, with our reason.
  const failedHere = new Set(local.failed.map((item) => item.file));
  fillList(view.failed, view.failedSection, [...local.failed, ...summary.failed.filter((item) => !failedHere.has(item.file))]);
  fillList(view.skipped, view.skippedSection, [...local.skipped, ...summary.skipped]);
  const instances = summary.studies.reduce((sum, study) => sum + study.instances_accepted, 0);
  say(
    summary.studies.length
      ? `Done: ${instances} image${instances === 1 ? "" : "s"} in ${summary.studies.length} stud${summary.studies.length === 1 ? "y" : "ies"} stored.`
      : "Done: no image was stored.",
  );
  view.summary.hidden = false;
  view.summaryHeading.focus(); // screen-reader and keyboard users land on the result
}

function fillList(list, section, items) {
  list.replaceChildren(
    ...items.map(({ file, reason }) => {
      const item = document.createElement("li");
      const name = document.createElement("strong");
      name.textContent = file;
      item.append(name, document.createTextNode(` — ${reason}`));
      return item;
    }),
  );
  section.hidden = items.length === 0;
}

function reset() {
  const view = current.view;
  view.summary.hidden = true;
  view.overall.hidden = true;
  view.processing.hidden = true;
  view.list.replaceChildren();
  say("");
  view.filesInput.focus();
}

function setPickersDisabled(disabled) {
  current.view.filesInput.disabled = disabled;
  current.view.folderInput.disabled = disabled;
}

function say(text) {
  current.view.status.textContent = text;
}

function personName(value) {
  // DICOM PN: Family^Given^Middle^Prefix^Suffix.
  const [family = "", given = "", middle = ""] = (value || "").split("=")[0].split("^");
  return [family, [given, middle].filter(Boolean).join(" ")].filter(Boolean).join(", ");
}

function dicomDate(value) {
  return /^\d{8}$/.test(value || "") ? `${value.slice(0, 4)}-${value.slice(4, 6)}-${value.slice(6)}` : value || "";
}

function bytes(value) {
  const units = [["GB", 1024 ** 3], ["MB", 1024 ** 2], ["KB", 1024]];
  for (const [unit, scale] of units) if (value >= scale) return `${(value / scale).toFixed(1).replace(/\.0$/, "")} ${unit}`;
  return `${value} bytes`;
}

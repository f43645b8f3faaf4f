// The viewer page: reads which study to show from the Django template's data attributes, initialises
// Cornerstone once, then wires the series panel, the viewport grid, overlays, the AI findings and
// segmentation overlay, measurements, cine, toolbar and keyboard.
// First: its top level starts the study's requests before the modules below are evaluated (features/studyPrefetch).
import { studyPrefetch } from "./features/studyPrefetch";
import "./viewer.css";
import { initCornerstone, overlaysUnavailableReason, renderMode } from "./cornerstone/init";
import { setupCine } from "./features/cine";
import { setupFindingsPanel } from "./features/findingsPanel";
import { setupHelp } from "./features/help";
import { setupMeasurements } from "./features/measurements";
import { type SegOverlayHandle, setupSegOverlay } from "./features/segOverlay";
import { setupSeriesPanel } from "./features/seriesPanel";
import type { LoadProgress } from "./features/stackViewport";
import { type PrimaryTool, setupTools } from "./features/tools";
import { LAYOUTS, type Layout, type ViewportCell, setupViewportGrid } from "./features/viewportGrid";
import { type Finding, HttpError, seriesMetadata, studySeries } from "./lib/api";
import { type DicomJson, Tag, text } from "./lib/dicomJson";
import { findingImageIndex } from "./lib/findings";
import { type SeriesImage, seriesImages, wadoRoot } from "./lib/imageIds";
import { actionForKey } from "./lib/keymap";
import { CT_PRESETS } from "./lib/presets";
import { NON_IMAGE_MODALITIES } from "./lib/seriesOrder";

/** For benchmarks: milliseconds since navigation start to the first image and to the whole first series. */
interface ReadroomTimings {
  firstImageMs?: number;
  seriesLoadedMs?: number;
  images?: number;
  failed?: number;
}
declare global {
  interface Window {
    __readroomTimings?: ReadroomTimings;
  }
}

function element<K extends keyof HTMLElementTagNameMap>(tag: K, className?: string, textContent?: string) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (textContent !== undefined) node.textContent = textContent;
  return node;
}

async function start(root: HTMLElement): Promise<void> {
  const slug = root.dataset.slug ?? "";
  const studyUid = root.dataset.studyUid ?? "";
  const dicomweb = wadoRoot(slug);
  const started = performance.now();
  root.dataset.viewerState = "loading";
  const timings: ReadroomTimings = {};
  window.__readroomTimings = timings;

  // Layout: toolbar on top, series panel on the left, the viewport grid in the middle, findings,
  // overlays and measurements on the right.
  const toolbar = element("div", "toolbar");
  toolbar.setAttribute("role", "toolbar");
  toolbar.setAttribute("aria-label", "Viewer tools");
  const panel = element("nav", "series-panel");
  panel.setAttribute("aria-label", "Series");
  const stage = element("div", "stage");
  const side = element("aside", "side-panel");
  side.setAttribute("aria-label", "Findings and measurements");
  // Findings first: what the AI flagged is what a reader checks first; then its overlays, then own measurements.
  const findingsSlot = element("div");
  const overlaySlot = element("div");
  const measurementsSlot = element("div");
  side.append(findingsSlot, overlaySlot, measurementsSlot);
  const progress = element("progress", "load-progress") as HTMLProgressElement;
  progress.setAttribute("aria-label", "Series loading");
  progress.max = 1;
  progress.value = 0;
  const status = element("div", "viewer-status");
  status.setAttribute("role", "status");
  stage.append(progress, status);
  root.append(toolbar, panel, stage, side);

  function button(label: string, title: string, onClick: () => void, data?: string): HTMLButtonElement {
    const node = element("button", undefined, label);
    node.type = "button";
    node.title = title;
    if (data) node.dataset.action = data;
    node.addEventListener("click", () => {
      onClick();
      grid.active().stack.element.focus();
    });
    toolbar.append(node);
    return node;
  }
  function separator(): void {
    toolbar.append(element("span", "toolbar-separator"));
  }

  const render = new URLSearchParams(location.search).get("render");
  await initCornerstone({ render, overlays: root.dataset.overlays === "true" });
  root.dataset.render = renderMode();

  const tools = setupTools();
  const cine = setupCine();
  const help = setupHelp(stage);
  const seriesByUid = new Map<string, DicomJson>();
  const imagesBySeries = new Map<string, Promise<SeriesImage[]>>();
  let orderedSeries: DicomJson[] = [];
  let seriesPanel: ReturnType<typeof setupSeriesPanel> | undefined;
  let segOverlay: SegOverlayHandle | undefined;

  const grid = setupViewportGrid(stage, {
    tools,
    onActivate(cell) {
      if (cell.seriesUid) seriesPanel?.select(cell.seriesUid);
      cineButton.setAttribute("aria-pressed", String(cine.isPlaying(cell.stack.element)));
    },
    onDropSeries(cell, seriesUid) {
      const series = seriesByUid.get(seriesUid);
      if (series) void showSeries(cell, series).catch((error) => failIn(cell, error));
    },
    onCellAdded(cell) {
      // A new cell shows the next series nobody shows yet, else the active one's, so a 2x2 compares at once.
      const shownUids = new Set(grid.cells.map((other) => other.seriesUid));
      const series =
        orderedSeries.find((candidate) => !shownUids.has(text(candidate, Tag.SeriesInstanceUID))) ??
        seriesByUid.get(grid.active().seriesUid ?? "");
      if (series) void showSeries(cell, series).catch((error) => failIn(cell, error));
    },
    onCellRemoved(cell) {
      cine.stop(cell.stack.element);
      segOverlay?.detach(cell.stack.viewportId);
    },
  });

  function imagesOf(seriesUid: string): Promise<SeriesImage[]> {
    let images = imagesBySeries.get(seriesUid);
    if (!images) {
      const metadata = studyPrefetch?.takeMetadata(seriesUid) ?? seriesMetadata(dicomweb, studyUid, seriesUid);
      images = metadata.then((metadata) => seriesImages(dicomweb, metadata));
      void images.then((list) => seriesPanel?.setImageCount(seriesUid, list.length), () => undefined);
      // A failed fetch is retried the next time the series is asked for.
      images.catch(() => imagesBySeries.delete(seriesUid));
      imagesBySeries.set(seriesUid, images);
    }
    return images;
  }

  // Toolbar: window presets, zoom, invert, reset; the left-button tool; layouts; cine; overlays; help.
  for (const preset of CT_PRESETS) {
    button(`${preset.label}`, `${preset.label} window W ${preset.width} / L ${preset.center} (key ${preset.key})`, () =>
      grid.active().stack.setWindowLevel(preset),
      `preset-${preset.id}`,
    );
  }
  button("Zoom +", "Zoom in (+)", () => grid.active().stack.zoomBy(1.25), "zoom-in");
  button("Zoom −", "Zoom out (-)", () => grid.active().stack.zoomBy(0.8), "zoom-out");
  const invertButton = button("Invert", "Invert (I)", () => {
    grid.active().stack.toggleInvert();
    invertButton.setAttribute("aria-pressed", String(invertButton.getAttribute("aria-pressed") !== "true"));
  }, "invert");
  invertButton.setAttribute("aria-pressed", "false");
  button("Reset", "Reset window, zoom and pan (R)", () => {
    grid.active().stack.reset();
    invertButton.setAttribute("aria-pressed", "false");
  }, "reset");
  separator();
  const toolButtons = new Map<PrimaryTool, HTMLButtonElement>();
  const toolLabels: [PrimaryTool, string, string][] = [
    ["windowLevel", "W/L", "Left drag: window / level (W)"],
    ["length", "Length", "Left drag: measure a length (L)"],
    ["angle", "Angle", "Left clicks: measure an angle (A)"],
    ["ellipse", "Ellipse", "Left drag: elliptical ROI with mean and SD (E)"],
  ];
  function choosePrimary(tool: PrimaryTool): void {
    tools.setPrimary(tool);
    for (const [id, node] of toolButtons) node.setAttribute("aria-pressed", String(id === tool));
    root.dataset.tool = tool;
  }
  for (const [id, label, title] of toolLabels) toolButtons.set(id, button(label, title, () => choosePrimary(id), `tool-${id}`));
  choosePrimary("windowLevel");
  separator();
  const layoutButtons = new Map<Layout, HTMLButtonElement>();
  function chooseLayout(layout: Layout): void {
    grid.setLayout(layout);
    for (const [id, node] of layoutButtons) node.setAttribute("aria-pressed", String(id === layout));
  }
  for (const layout of Object.keys(LAYOUTS) as Layout[]) {
    layoutButtons.set(layout, button(layout.replace("x", "×"), `Layout ${layout}`, () => chooseLayout(layout), `layout-${layout}`));
  }
  layoutButtons.get("1x1")?.setAttribute("aria-pressed", "true");
  separator();
  const cineButton = button("Cine", "Play or stop cine (C)", () => toggleCine(), "cine");
  cineButton.setAttribute("aria-pressed", "false");
  const fpsInput = element("input") as HTMLInputElement;
  fpsInput.type = "number";
  fpsInput.min = "1";
  fpsInput.max = "60";
  fpsInput.value = "10";
  fpsInput.title = "Cine frames per second";
  fpsInput.setAttribute("aria-label", "Cine frames per second");
  fpsInput.dataset.cineFps = "";
  fpsInput.addEventListener("change", () => cine.setFps(Number(fpsInput.value), grid.active().stack.element));
  toolbar.append(fpsInput);
  function toggleCine(): void {
    cine.setFps(Number(fpsInput.value));
    const playing = cine.toggle(grid.active().stack.element);
    cineButton.setAttribute("aria-pressed", String(playing));
  }
  separator();
  button("Help", "Keyboard shortcuts (?)", () => help.toggle(), "help");
  // The first cell, once everything its callbacks reach exists.
  grid.setLayout("1x1");

  const measurements = setupMeasurements(measurementsSlot, {
    slug,
    studyUid,
    render: () => grid.engine.render(),
    onSelect: (imageId) => void showImage(imageId).catch(fail),
  });

  // Keyboard: anywhere on the page except form fields.
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLTextAreaElement || target instanceof HTMLSelectElement) {
      return;
    }
    const action = actionForKey(event);
    if (!action) return;
    event.preventDefault();
    const stack = grid.active().stack;
    const count = stack.viewport.getImageIds().length;
    switch (action.kind) {
      case "scroll":
        stack.scrollBy(action.delta);
        break;
      case "first":
        stack.jumpTo(0);
        break;
      case "last":
        stack.jumpTo(Math.max(0, count - 1));
        break;
      case "preset": {
        const preset = CT_PRESETS.find((candidate) => candidate.id === action.id);
        if (preset) stack.setWindowLevel(preset);
        break;
      }
      case "zoom":
        stack.zoomBy(action.factor);
        break;
      case "invert":
        invertButton.click();
        break;
      case "reset":
        stack.reset();
        invertButton.setAttribute("aria-pressed", "false");
        break;
      case "tool":
        choosePrimary(action.tool);
        break;
      case "delete":
        measurements.deleteSelected();
        break;
      case "cine":
        toggleCine();
        break;
      case "overlay":
        segOverlay?.toggleAll();
        break;
      case "help":
        help.toggle();
        break;
      case "close":
        help.hide();
        break;
    }
  });

  async function showSeries(cell: ViewportCell, series: DicomJson, startIndex = 0): Promise<void> {
    const seriesUid = text(series, Tag.SeriesInstanceUID);
    cell.seriesUid = seriesUid;
    if (cell === grid.active()) seriesPanel?.select(seriesUid);
    cine.stop(cell.stack.element);
    if (cell === grid.active()) cineButton.setAttribute("aria-pressed", "false");
    segOverlay?.detach(cell.stack.viewportId);
    root.dataset.viewerState = "loading";
    status.textContent = "Loading series…";
    progress.value = 0;
    const loadStarted = performance.now();
    // The slice the stack most likely opens on is drawn while the series' metadata is still being built; the
    // full stack below replaces it, and it counts as the first image only if it is the stack's first slice.
    let settled = false;
    let early: Promise<{ imageId: string; at: number } | undefined> | undefined;
    void studyPrefetch?.likelyFirstImage(seriesUid).then((image) => {
      if (!image || settled || cell.seriesUid !== seriesUid) return;
      early = cell.stack.showImage(image).then(
        () => ({ imageId: image.imageId, at: performance.now() }),
        () => undefined,
      );
    });
    const images = await imagesOf(seriesUid).finally(() => {
      settled = true;
    });
    // A drawing in progress finishes before the stack is replaced, so the two never race on the viewport.
    const drawn = early ? await early : undefined;
    if (cell.seriesUid !== seriesUid || !grid.cells.includes(cell)) return;
    if (images.length === 0) {
      status.textContent = "This series has no images to show.";
      root.dataset.viewerState = "empty";
      return;
    }
    // The overlay shows the study-level attributes from the QIDO answer, the rest from the first instance.
    cell.overlays.setContext({ series: { ...images[0].metadata, ...series }, total: images.length });
    progress.max = images.length;
    const onProgress = ({ loaded, total, failed }: LoadProgress) => {
      progress.value = loaded + failed;
      status.textContent =
        loaded + failed < total
          ? `Loaded ${loaded} of ${total} images`
          : failed
            ? `${failed} of ${total} images could not be loaded`
            : "";
      if (loaded === 1 && root.dataset.viewerState === "loading") {
        timings.firstImageMs ??= drawn?.imageId === images[startIndex]?.imageId ? drawn.at : performance.now();
        root.dataset.viewerState = "ready";
        root.dataset.firstImageMs = String(Math.round(performance.now() - loadStarted));
        cell.overlays.update();
      }
      if (loaded + failed === total) {
        if (timings.seriesLoadedMs === undefined) Object.assign(timings, { seriesLoadedMs: performance.now(), images: total, failed });
        root.dataset.seriesLoaded = "true";
        root.dataset.seriesLoadedMs = String(Math.round(performance.now() - loadStarted));
        progress.hidden = true;
      }
    };
    root.dataset.seriesLoaded = "false";
    progress.hidden = false;
    const { loaded } = await cell.stack.showSeries(images, onProgress, startIndex);
    if (segOverlay && cell.seriesUid === seriesUid) {
      // The overlay follows the images: a SEG that cannot be drawn leaves the series readable.
      segOverlay.attach(cell.stack, seriesUid, images).catch((error) => console.error(error));
    }
    await loaded;
  }

  /** Shows a series in the active viewport at a slice (a finding's, a measurement's). */
  async function showSlice(seriesUid: string, pick: (images: SeriesImage[]) => number): Promise<void> {
    const series = seriesByUid.get(seriesUid);
    if (!series) {
      status.textContent = "That series is not part of this study any more.";
      return;
    }
    const cell = grid.cells.find((candidate) => candidate.seriesUid === seriesUid) ?? grid.active();
    grid.activate(cell);
    const images = await imagesOf(seriesUid);
    const index = Math.max(0, pick(images));
    if (cell.seriesUid === seriesUid && cell.stack.viewport.getImageIds().length === images.length) {
      cell.stack.jumpTo(index);
    } else {
      void showSeries(cell, series, index).catch(fail);
    }
    cell.stack.element.focus();
  }

  function openFinding(finding: Finding): Promise<void> {
    return showSlice(finding.series_instance_uid, (images) => findingImageIndex(images, finding));
  }

  function showImage(imageId: string): Promise<void> {
    const seriesUid = /\/series\/([^/]+)\//.exec(imageId)?.[1] ?? "";
    return showSlice(seriesUid, (images) => images.findIndex((image) => image.imageId === imageId));
  }

  try {
    const series = await (studyPrefetch?.series ?? studySeries(dicomweb, studyUid));
    for (const item of series) seriesByUid.set(text(item, Tag.SeriesInstanceUID), item);
    const imageSeries = series.filter((item) => !NON_IMAGE_MODALITIES.includes(text(item, Tag.Modality)));
    const segSeries = series.filter((item) => text(item, Tag.Modality) === "SEG");
    seriesPanel = setupSeriesPanel(panel, {
      root: dicomweb,
      studyUid,
      series: imageSeries,
      onSelect: (item) => void showSeries(grid.active(), item).catch(fail),
    });
    orderedSeries = seriesPanel.sorted;
    setupFindingsPanel(findingsSlot, { slug, studyUid, onSelect: (finding) => void openFinding(finding).catch(fail) });
    segOverlay = setupSegOverlay(overlaySlot, {
      root: dicomweb,
      studyUid,
      segSeries,
      unavailable: overlaysUnavailableReason(render),
      onError: (error) => console.error(error),
    });
    const firstSeries = orderedSeries[0];
    if (!firstSeries) {
      status.textContent = "This study has no image series.";
      root.dataset.viewerState = "empty";
      return;
    }
    await showSeries(grid.active(), firstSeries);
    root.dataset.studyOpenMs = String(Math.round(performance.now() - started));
  } catch (error) {
    fail(error);
  }

  /** A load that fails in a viewport the layout no longer has (1x1 chosen while a 2x2 was loading) is no error. */
  function failIn(cell: ViewportCell, error: unknown): void {
    if (grid.cells.includes(cell)) fail(error);
  }

  function fail(error: unknown): void {
    root.dataset.viewerState = "error";
    status.textContent =
      error instanceof HttpError && error.status === 404
        ? "This study was not found."
        : "The study could not be loaded. Try again, or contact support if it keeps happening.";
    console.error(error);
  }
  grid.active().stack.element.focus();
}

const root = document.querySelector<HTMLElement>("[data-viewer]");
if (root) void start(root);

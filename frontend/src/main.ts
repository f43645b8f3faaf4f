// The viewer page: reads which study to show from the Django template's data attributes, initialises
// Cornerstone once, then wires the series panel, the stack viewport, overlays, toolbar and keyboard.
import "./viewer.css";
import { initCornerstone, renderMode } from "./cornerstone/init";
import { setupHelp } from "./features/help";
import { setupOverlays } from "./features/overlays";
import { setupSeriesPanel } from "./features/seriesPanel";
import { type LoadProgress, setupStackViewport } from "./features/stackViewport";
import { HttpError, seriesMetadata, studySeries } from "./lib/api";
import { type DicomJson, Tag, text } from "./lib/dicomJson";
import { seriesImages, wadoRoot } from "./lib/imageIds";
import { actionForKey } from "./lib/keymap";
import { CT_PRESETS } from "./lib/presets";

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

  // Layout: toolbar on top, series panel on the left, the viewport filling the rest.
  const toolbar = element("div", "toolbar");
  toolbar.setAttribute("role", "toolbar");
  toolbar.setAttribute("aria-label", "Viewer tools");
  const panel = element("nav", "series-panel");
  panel.setAttribute("aria-label", "Series");
  const stage = element("div", "stage");
  const viewportElement = element("div", "viewport") as HTMLDivElement;
  viewportElement.tabIndex = 0;
  viewportElement.setAttribute("aria-label", "Image viewport");
  viewportElement.dataset.viewport = "main";
  const progress = element("progress", "load-progress") as HTMLProgressElement;
  progress.setAttribute("aria-label", "Series loading");
  progress.max = 1;
  progress.value = 0;
  const status = element("div", "viewer-status");
  status.setAttribute("role", "status");
  stage.append(viewportElement, progress, status);
  root.append(toolbar, panel, stage);

  function button(label: string, title: string, onClick: () => void, data?: string): HTMLButtonElement {
    const node = element("button", undefined, label);
    node.type = "button";
    node.title = title;
    if (data) node.dataset.action = data;
    node.addEventListener("click", () => {
      onClick();
      viewportElement.focus();
    });
    toolbar.append(node);
    return node;
  }

  await initCornerstone({ cpu: new URLSearchParams(location.search).get("render") === "cpu" });
  root.dataset.render = renderMode();
  const stack = setupStackViewport(viewportElement);
  const overlays = setupOverlays(stage, stack);
  const help = setupHelp(stage);

  for (const preset of CT_PRESETS) {
    button(`${preset.label}`, `${preset.label} window W ${preset.width} / L ${preset.center} (key ${preset.key})`, () =>
      stack.setWindowLevel(preset),
      `preset-${preset.id}`,
    );
  }
  button("Zoom +", "Zoom in (+)", () => stack.zoomBy(1.25), "zoom-in");
  button("Zoom −", "Zoom out (-)", () => stack.zoomBy(0.8), "zoom-out");
  const invertButton = button("Invert", "Invert (I)", () => {
    stack.toggleInvert();
    invertButton.setAttribute("aria-pressed", String(invertButton.getAttribute("aria-pressed") !== "true"));
  }, "invert");
  invertButton.setAttribute("aria-pressed", "false");
  button("Reset", "Reset window, zoom and pan (R)", () => {
    stack.reset();
    invertButton.setAttribute("aria-pressed", "false");
  }, "reset");
  button("Help", "Keyboard shortcuts (?)", () => help.toggle(), "help");

  // Keyboard: anywhere on the page except form fields.
  document.addEventListener("keydown", (event) => {
    if (event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement) return;
    const action = actionForKey(event);
    if (!action) return;
    event.preventDefault();
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
      case "help":
        help.toggle();
        break;
      case "close":
        help.hide();
        break;
    }
  });

  async function showSeries(series: DicomJson): Promise<void> {
    const seriesUid = text(series, Tag.SeriesInstanceUID);
    root.dataset.viewerState = "loading";
    status.textContent = "Loading series…";
    progress.value = 0;
    const loadStarted = performance.now();
    const images = seriesImages(dicomweb, await seriesMetadata(dicomweb, studyUid, seriesUid));
    if (images.length === 0) {
      status.textContent = "This series has no images to show.";
      root.dataset.viewerState = "empty";
      return;
    }
    // The overlay shows the study-level attributes from the QIDO answer, the rest from the first instance.
    overlays.setContext({ series: { ...images[0].metadata, ...series }, total: images.length });
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
        root.dataset.viewerState = "ready";
        root.dataset.firstImageMs = String(Math.round(performance.now() - loadStarted));
        overlays.update();
      }
      if (loaded + failed === total) {
        root.dataset.seriesLoaded = "true";
        root.dataset.seriesLoadedMs = String(Math.round(performance.now() - loadStarted));
        progress.hidden = true;
      }
    };
    root.dataset.seriesLoaded = "false";
    progress.hidden = false;
    await stack.showSeries(images, onProgress);
  }

  try {
    const series = await studySeries(dicomweb, studyUid);
    const imageSeries = series.filter((item) => !["SEG", "SR", "PR", "KO", "DOC"].includes(text(item, Tag.Modality)));
    const seriesPanel = setupSeriesPanel(panel, {
      root: dicomweb,
      studyUid,
      series: imageSeries,
      onSelect: (item) => void showSeries(item).catch(fail),
    });
    const firstSeries = seriesPanel.sorted[0];
    if (!firstSeries) {
      status.textContent = "This study has no image series.";
      root.dataset.viewerState = "empty";
      return;
    }
    seriesPanel.select(text(firstSeries, Tag.SeriesInstanceUID));
    await showSeries(firstSeries);
    root.dataset.studyOpenMs = String(Math.round(performance.now() - started));
  } catch (error) {
    fail(error);
  }

  function fail(error: unknown): void {
    root.dataset.viewerState = "error";
    status.textContent =
      error instanceof HttpError && error.status === 404
        ? "This study was not found."
        : "The study could not be loaded. Try again, or contact support if it keeps happening.";
    console.error(error);
  }
  viewportElement.focus();
}

const root = document.querySelector<HTMLElement>("[data-viewer]");
if (root) void start(root);

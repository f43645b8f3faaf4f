// One stack viewport: a rendering engine, a StackViewport on an element, and the tool group that
// turns mouse input into window/level, zoom, pan and scroll. `setup` returns a handle; `teardown` frees it.
import {
  Enums as csEnums,
  RenderingEngine,
  type StackViewport,
  type Types,
  cache,
  imageLoader,
  utilities as csUtilities,
} from "@cornerstonejs/core";
import { wadors } from "@cornerstonejs/dicom-image-loader";
import {
  Enums as toolsEnums,
  LengthTool,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
} from "@cornerstonejs/tools";
import type { SeriesImage } from "../lib/imageIds";
import { loadOrder } from "../lib/imageIds";
import { type WindowLevel, fromVoiRange, toVoiRange } from "../lib/presets";

const ENGINE_ID = "readroom-engine";
const TOOL_GROUP_ID = "readroom-stack-tools";
const { MouseBindings, KeyboardBindings } = toolsEnums;

let toolsRegistered = false;

function registerTools(): void {
  if (toolsRegistered) return;
  for (const tool of [WindowLevelTool, ZoomTool, PanTool, StackScrollTool, LengthTool]) addTool(tool);
  toolsRegistered = true;
}

export interface LoadProgress {
  loaded: number;
  total: number;
  failed: number;
}

export interface StackHandle {
  viewport: StackViewport;
  element: HTMLDivElement;
  showSeries(images: SeriesImage[], onProgress: (progress: LoadProgress) => void): Promise<void>;
  scrollBy(delta: number): void;
  jumpTo(index: number): void;
  setWindowLevel(windowLevel: WindowLevel): void;
  windowLevel(): WindowLevel | undefined;
  zoomBy(factor: number): void;
  toggleInvert(): void;
  reset(): void;
  teardown(): void;
}

export function setupStackViewport(element: HTMLDivElement): StackHandle {
  // 1. A rendering engine owns the (offscreen) WebGL context and draws into each viewport's canvas.
  const engine = new RenderingEngine(ENGINE_ID);
  const viewportId = "stack-1";
  // 2. The element becomes a stack viewport; its canvas is created inside it.
  engine.enableElement({
    viewportId,
    type: csEnums.ViewportType.STACK,
    element,
    defaultOptions: { background: [0, 0, 0] as Types.Point3 },
  });
  const viewport = engine.getViewport(viewportId) as StackViewport;

  // 3. Tools: left drag W/L, right drag zoom, middle (or shift+left) drag pan, wheel scroll.
  registerTools();
  const group = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
  if (!group) throw new Error("tool group already exists");
  for (const tool of [WindowLevelTool, ZoomTool, PanTool, StackScrollTool, LengthTool]) group.addTool(tool.toolName);
  group.addViewport(viewportId, ENGINE_ID);
  group.setToolActive(WindowLevelTool.toolName, { bindings: [{ mouseButton: MouseBindings.Primary }] });
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  group.setToolActive(PanTool.toolName, {
    bindings: [
      { mouseButton: MouseBindings.Auxiliary },
      { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Shift },
    ],
  });
  group.setToolActive(StackScrollTool.toolName, { bindings: [{ mouseButton: MouseBindings.Wheel }] });
  group.setToolPassive(LengthTool.toolName);
  element.addEventListener("contextmenu", preventContextMenu);

  const resizeObserver = new ResizeObserver(() => engine.resize(true, false));
  resizeObserver.observe(element);

  let generation = 0;
  let invert = false;

  async function showSeries(images: SeriesImage[], onProgress: (progress: LoadProgress) => void): Promise<void> {
    const mine = ++generation;
    // The loader reads each frame's attributes from the series metadata already fetched.
    for (const image of images) wadors.metaDataManager.add(image.imageId, image.metadata as never);
    const imageIds = images.map((image) => image.imageId);
    const start = 0; // the series is ordered superior first; the radiologist starts at the top
    invert = false;
    // 4. setStack loads and renders the first image; only then are the others fetched.
    await viewport.setStack(imageIds, start);
    viewport.render();
    const progress: LoadProgress = { loaded: 1, total: imageIds.length, failed: 0 };
    onProgress({ ...progress });
    // 5. The rest, outwards from the shown slice, a few at a time, into Cornerstone's cache.
    const order = loadOrder(imageIds.length, start).slice(1);
    const concurrency = 6;
    let next = 0;
    async function worker(): Promise<void> {
      while (next < order.length && mine === generation) {
        const imageId = imageIds[order[next++]];
        try {
          await imageLoader.loadAndCacheImage(imageId);
          progress.loaded += 1;
        } catch {
          progress.failed += 1;
        }
        if (mine === generation) onProgress({ ...progress });
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, order.length) }, worker));
  }

  return {
    viewport,
    element,
    showSeries,
    scrollBy(delta) {
      csUtilities.scroll(viewport, { delta });
    },
    jumpTo(index) {
      void csUtilities.jumpToSlice(element, { imageIndex: index });
    },
    setWindowLevel(windowLevel) {
      viewport.setProperties({ voiRange: toVoiRange(windowLevel) });
      viewport.render();
    },
    windowLevel() {
      const range = viewport.getProperties().voiRange;
      return range ? fromVoiRange(range) : undefined;
    },
    zoomBy(factor) {
      viewport.setZoom(viewport.getZoom() * factor);
      viewport.render();
    },
    toggleInvert() {
      invert = !invert;
      viewport.setProperties({ invert });
      viewport.render();
    },
    reset() {
      invert = false;
      viewport.resetProperties();
      viewport.resetCamera();
      viewport.render();
    },
    teardown() {
      generation += 1;
      resizeObserver.disconnect();
      element.removeEventListener("contextmenu", preventContextMenu);
      ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
      engine.destroy();
      cache.purgeCache();
    },
  };
}

function preventContextMenu(event: Event): void {
  event.preventDefault();
}

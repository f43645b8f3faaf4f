// One stack viewport of the grid: a StackViewport on an element, drawn by the grid's rendering engine, that
// shows a series first image first and then fetches the rest. `setup` returns a handle; `teardown` frees it.
import {
  Enums as csEnums,
  type RenderingEngine,
  type StackViewport,
  type Types,
  imageLoader,
  utilities as csUtilities,
} from "@cornerstonejs/core";
import { wadors } from "@cornerstonejs/dicom-image-loader";
import type { SeriesImage } from "../lib/imageIds";
import { loadOrder } from "../lib/imageIds";
import { type WindowLevel, fromVoiRange, toVoiRange } from "../lib/presets";

export interface LoadProgress {
  loaded: number;
  total: number;
  failed: number;
}

export interface StackHandle {
  viewport: StackViewport;
  viewportId: string;
  element: HTMLDivElement;
  /** Resolves once the first image is drawn; `loaded` resolves when the rest is fetched (or superseded). */
  showSeries(
    images: SeriesImage[],
    onProgress: (progress: LoadProgress) => void,
    startIndex?: number,
  ): Promise<{ loaded: Promise<void> }>;
  /** Draws one image on its own (the likely first slice, before the series is known); showSeries replaces it. */
  showImage(image: SeriesImage): Promise<void>;
  scrollBy(delta: number): void;
  jumpTo(index: number): void;
  setWindowLevel(windowLevel: WindowLevel): void;
  windowLevel(): WindowLevel | undefined;
  zoomBy(factor: number): void;
  toggleInvert(): void;
  reset(): void;
  teardown(): void;
}

export function setupStackViewport(engine: RenderingEngine, element: HTMLDivElement, viewportId: string): StackHandle {
  // 1. The element becomes a stack viewport of the shared engine (one offscreen WebGL context draws every
  //    viewport's canvas); its canvas is created inside it.
  engine.enableElement({
    viewportId,
    type: csEnums.ViewportType.STACK,
    element,
    defaultOptions: { background: [0, 0, 0] as Types.Point3 },
  });
  const viewport = engine.getViewport(viewportId) as StackViewport;

  // 2. The right button zooms (the grid's tool group), so the browser's context menu stays away.
  element.addEventListener("contextmenu", preventContextMenu);

  let generation = 0;

  async function showSeries(
    images: SeriesImage[],
    onProgress: (progress: LoadProgress) => void,
    startIndex = 0,
  ): Promise<{ loaded: Promise<void> }> {
    const mine = ++generation;
    // The loader reads each frame's attributes from the series metadata already fetched.
    for (const image of images) wadors.metaDataManager.add(image.imageId, image.metadata as never);
    const imageIds = images.map((image) => image.imageId);
    // The series is ordered superior first and a radiologist starts at the top, unless a finding names a slice.
    const start = Math.min(Math.max(startIndex, 0), imageIds.length - 1);
    // 3. setStack loads and renders the first image; only then are the others fetched.
    await viewport.setStack(imageIds, start);
    if (mine !== generation) return { loaded: Promise.resolve() };
    //    setStack swallows a load error (a session that ended, a 404, a 503 while the study is brought back from
    //    the archive), leaving a black viewport: asking the cache for that image again costs nothing when it
    //    loaded, and otherwise rejects here, so the viewer shows the failure.
    await imageLoader.loadAndCacheImage(imageIds[start]);
    if (mine !== generation) return { loaded: Promise.resolve() };
    viewport.render();
    const progress: LoadProgress = { loaded: 1, total: imageIds.length, failed: 0 };
    onProgress({ ...progress });
    // 4. The rest, outwards from the shown slice, a few at a time, into Cornerstone's cache.
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
    return { loaded: Promise.all(Array.from({ length: Math.min(concurrency, order.length) }, worker)).then(() => undefined) };
  }

  async function showImage(image: SeriesImage): Promise<void> {
    generation += 1;
    wadors.metaDataManager.add(image.imageId, image.metadata as never);
    // Loaded into Cornerstone's cache, where the series' stack finds it again without a second request.
    await viewport.setStack([image.imageId], 0);
    viewport.render();
  }

  return {
    viewport,
    viewportId,
    element,
    showSeries,
    showImage,
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
      // From what is shown, not a flag of our own: a MONOCHROME1 image (CR, DX, MG) is drawn inverted already.
      viewport.setProperties({ invert: !viewport.getProperties().invert });
      viewport.render();
    },
    reset() {
      viewport.resetProperties();
      viewport.resetCamera();
      viewport.render();
    },
    teardown() {
      generation += 1;
      element.removeEventListener("contextmenu", preventContextMenu);
      engine.disableElement(viewportId);
    },
  };
}

function preventContextMenu(event: Event): void {
  event.preventDefault();
}

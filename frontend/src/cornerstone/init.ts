// The one place Cornerstone3D is initialised. Every feature awaits `initCornerstone()`; the work runs once.
//
// Steps, in order:
//   1. core: WebGL or Cornerstone's CPU renderer, as lib/renderMode decides from what core's init found
//      (WebGL 2, a software rasterizer), the study's overlays and `?render=`;
//   2. the DICOM image loader: registers the `wadors:` scheme and its decode web workers (codecs are
//      WASM bundled by Vite, nothing is fetched from outside the site); uncompressed frames are decoded on
//      the page's thread instead (lib/inThreadDecode);
//   3. tools: the interaction layer (window/level, zoom, pan, scroll, measurements).
import {
  getRenderingCapabilities,
  getShouldUseCPURendering,
  getWebWorkerManager,
  init as coreInit,
  setUseCPURendering,
} from "@cornerstonejs/core";
import { decodeImageFrame, init as dicomImageLoaderInit } from "@cornerstonejs/dicom-image-loader";
import { init as toolsInit } from "@cornerstonejs/tools";
import { decodeUncompressedInThread } from "../lib/inThreadDecode";
import { chooseRenderMode, withoutOverlaysReason } from "../lib/renderMode";

let initialised: Promise<void> | undefined;

export interface InitOptions {
  /** "cpu" or "gpu" forces a renderer where it can (?render= in the URL); anything else lets the viewer choose. */
  render?: string | null;
  /** The study has segmentation overlays to draw (only the WebGL renderer draws them). */
  overlays?: boolean;
}

export function initCornerstone(options: InitOptions = {}): Promise<void> {
  initialised ??= (async () => {
    // 1. core
    coreInit();
    // Core's init probed the browser's WebGL once (a throwaway context); its answer decides the renderer.
    const mode = chooseRenderMode(options.render ?? null, getRenderingCapabilities(), options.overlays ?? false);
    setUseCPURendering(mode === "cpu");
    // 2. image loader: same-origin requests carry the session cookie. Each frame is asked for as a single part
    //    (PS3.18 8.7.3, one frame per request as the loader makes them), in the syntax it is stored in: the
    //    loader's own multipart/related answer makes it scan every frame's bytes for the closing boundary.
    dicomImageLoaderInit({
      maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)),
      beforeSend: () => ({ Accept: "application/octet-stream; transfer-syntax=*" }),
    });
    decodeUncompressedInThread(getWebWorkerManager(), decodeImageFrame);
    // 3. tools
    toolsInit();
  })();
  return initialised;
}

/** Why segmentation overlays are not drawn with the renderer in use; undefined when they are (WebGL). */
export function overlaysUnavailableReason(render: string | null): string | undefined {
  return getShouldUseCPURendering() ? withoutOverlaysReason(render, getRenderingCapabilities()) : undefined;
}

/** "gpu" (WebGL) or "cpu": shown on the page for support and tests. */
export function renderMode(): "gpu" | "cpu" {
  return getShouldUseCPURendering() ? "cpu" : "gpu";
}

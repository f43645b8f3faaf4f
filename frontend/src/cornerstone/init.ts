// The one place Cornerstone3D is initialised. Every feature awaits `initCornerstone()`; the work runs once.
//
// Steps, in order:
//   1. core: WebGL when the browser has it, CPU rendering otherwise (headless CI, remote desktops);
//   2. the DICOM image loader: registers the `wadors:` scheme and its decode web workers (codecs are
//      WASM bundled by Vite, nothing is fetched from outside the site);
//   3. tools: the interaction layer (window/level, zoom, pan, scroll, measurements).
import { getShouldUseCPURendering, init as coreInit, setUseCPURendering } from "@cornerstonejs/core";
import { init as dicomImageLoaderInit } from "@cornerstonejs/dicom-image-loader";
import { init as toolsInit } from "@cornerstonejs/tools";

let initialised: Promise<void> | undefined;

function browserHasWebGL2(): boolean {
  try {
    const canvas = document.createElement("canvas");
    return canvas.getContext("webgl2") !== null;
  } catch {
    return false;
  }
}

export interface InitOptions {
  /** Force CPU rendering (tests; ?render=cpu in the URL). */
  cpu?: boolean;
}

export function initCornerstone(options: InitOptions = {}): Promise<void> {
  initialised ??= (async () => {
    // 1. core
    coreInit();
    if (options.cpu || !browserHasWebGL2()) setUseCPURendering(true);
    // 2. image loader: same-origin requests carry the session cookie. Each frame is asked for as a single part
    //    (PS3.18 8.7.3, one frame per request as the loader makes them), in the syntax it is stored in: the
    //    loader's own multipart/related answer makes it scan every frame's bytes for the closing boundary.
    dicomImageLoaderInit({
      maxWebWorkers: Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)),
      beforeSend: () => ({ Accept: "application/octet-stream; transfer-syntax=*" }),
    });
    // 3. tools
    toolsInit();
  })();
  return initialised;
}

/** "gpu" (WebGL) or "cpu": shown on the page for support and tests. */
export function renderMode(): "gpu" | "cpu" {
  return getShouldUseCPURendering() ? "cpu" : "gpu";
}

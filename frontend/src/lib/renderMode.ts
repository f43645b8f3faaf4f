// Which of Cornerstone's renderers the viewer uses.
//
// WebGL on a hardware GPU. Cornerstone's CPU renderer where the browser has no WebGL 2, and also where its
// WebGL is only a software rasterizer (SwiftShader, llvmpipe: virtual machines, remote desktops, headless
// browsers): there each WebGL frame is rasterised on the CPU and read back into the page's canvas, which costs
// more than the CPU renderer drawing a 2D slice itself (Cornerstone logs "GPU rendering may be slow" there).
// Measured in headless Chromium (SwiftShader) scrolling the 500-slice CT of 512 x 512: a slice on screen every
// 61-64 ms with WebGL, every 33 ms (two animation frames, the measurement's floor) with the CPU renderer.
// One exception: segmentation overlays are drawn only by the WebGL renderer (Cornerstone's CPU stack viewport
// has no labelmap actors), so a study with SEGs keeps WebGL wherever the browser has WebGL 2 (the page says
// whether the study has any, so the renderer is chosen without waiting for a request).
// `?render=gpu` or `?render=cpu` in the URL forces one (support, tests); WebGL cannot be forced without WebGL 2.

export type RenderMode = "gpu" | "cpu";

/** What Cornerstone's `getRenderingCapabilities()` found (the fields this decision reads). */
export interface RenderCapabilities {
  webgl2: boolean;
  softwareRasterizer: boolean;
}

export function chooseRenderMode(
  requested: string | null,
  capabilities: RenderCapabilities,
  overlays: boolean,
): RenderMode {
  if (!capabilities.webgl2 || requested === "cpu") return "cpu";
  if (requested === "gpu" || overlays) return "gpu";
  return capabilities.softwareRasterizer ? "cpu" : "gpu";
}

/** Why a page drawing with the CPU renderer shows no segmentation overlays, for the overlays panel. */
export function withoutOverlaysReason(requested: string | null, capabilities: RenderCapabilities): string {
  if (!capabilities.webgl2) return "this browser offers no WebGL 2, which they need";
  if (requested === "cpu") return "the page was opened with ?render=cpu; without it they are drawn";
  return "they were stored after the page was opened: reload it to see them";
}

// Cine: plays the active viewport's stack in a loop at a chosen frame rate (Cornerstone's CINE utility).
import { utilities as toolsUtilities } from "@cornerstonejs/tools";

export const DEFAULT_FPS = 10;

export function setupCine() {
  const playing = new Set<HTMLDivElement>();
  let fps = DEFAULT_FPS;

  function stop(element: HTMLDivElement): void {
    if (!playing.delete(element)) return;
    toolsUtilities.cine.stopClip(element);
  }
  function play(element: HTMLDivElement): void {
    // Restarting applies a new frame rate to a clip already playing.
    if (playing.has(element)) toolsUtilities.cine.stopClip(element);
    toolsUtilities.cine.playClip(element, { framesPerSecond: fps, loop: true });
    playing.add(element);
  }
  return {
    /** Starts or stops the clip; returns whether it plays now. */
    toggle(element: HTMLDivElement): boolean {
      if (playing.has(element)) {
        stop(element);
        return false;
      }
      play(element);
      return true;
    },
    isPlaying: (element: HTMLDivElement) => playing.has(element),
    setFps(next: number, element?: HTMLDivElement) {
      fps = Math.min(60, Math.max(1, Math.round(next) || DEFAULT_FPS));
      if (element && playing.has(element)) play(element);
    },
    stop,
    teardown() {
      for (const element of [...playing]) stop(element);
    },
  };
}

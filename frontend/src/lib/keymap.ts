// Keyboard shortcuts: one table, used both to dispatch key presses and to list them in the help overlay.
import { CT_PRESETS } from "./presets";

export type ToolId = "windowLevel" | "length" | "angle" | "ellipse";

export type Action =
  | { kind: "scroll"; delta: number }
  | { kind: "first" }
  | { kind: "last" }
  | { kind: "preset"; id: string }
  | { kind: "reset" }
  | { kind: "invert" }
  | { kind: "zoom"; factor: number }
  | { kind: "tool"; tool: ToolId }
  | { kind: "cine" }
  | { kind: "overlay" }
  | { kind: "delete" }
  | { kind: "help" }
  | { kind: "close" };

export interface Shortcut {
  keys: string[];
  label: string;
  action: Action;
}

export const SHORTCUTS: readonly Shortcut[] = [
  { keys: ["ArrowDown", "ArrowRight"], label: "Next image", action: { kind: "scroll", delta: 1 } },
  { keys: ["ArrowUp", "ArrowLeft"], label: "Previous image", action: { kind: "scroll", delta: -1 } },
  { keys: ["PageDown"], label: "10 images forward", action: { kind: "scroll", delta: 10 } },
  { keys: ["PageUp"], label: "10 images back", action: { kind: "scroll", delta: -10 } },
  { keys: ["Home"], label: "First image", action: { kind: "first" } },
  { keys: ["End"], label: "Last image", action: { kind: "last" } },
  ...CT_PRESETS.map((preset) => ({
    keys: [preset.key],
    label: `${preset.label} window (W ${preset.width} / L ${preset.center})`,
    action: { kind: "preset", id: preset.id } as Action,
  })),
  { keys: ["+", "="], label: "Zoom in", action: { kind: "zoom", factor: 1.25 } },
  { keys: ["-"], label: "Zoom out", action: { kind: "zoom", factor: 0.8 } },
  { keys: ["r", "R"], label: "Reset window, zoom and pan", action: { kind: "reset" } },
  { keys: ["i", "I"], label: "Invert", action: { kind: "invert" } },
  { keys: ["w", "W"], label: "Left drag: window / level", action: { kind: "tool", tool: "windowLevel" } },
  { keys: ["l", "L"], label: "Left drag: measure a length", action: { kind: "tool", tool: "length" } },
  { keys: ["a", "A"], label: "Left clicks: measure an angle", action: { kind: "tool", tool: "angle" } },
  { keys: ["e", "E"], label: "Left drag: elliptical ROI (mean / SD)", action: { kind: "tool", tool: "ellipse" } },
  { keys: ["Delete"], label: "Delete the selected measurement", action: { kind: "delete" } },
  { keys: ["c", "C"], label: "Play or stop cine", action: { kind: "cine" } },
  { keys: ["s", "S"], label: "Show or hide segmentation overlays", action: { kind: "overlay" } },
  { keys: ["?", "h", "H"], label: "Show or hide this help", action: { kind: "help" } },
  { keys: ["Escape"], label: "Close help", action: { kind: "close" } },
];

const BY_KEY = new Map<string, Action>(SHORTCUTS.flatMap((shortcut) => shortcut.keys.map((key) => [key, shortcut.action])));

/** The action bound to a key press; modifier combinations (Ctrl/Alt/Meta) are left to the browser. */
export function actionForKey(event: Pick<KeyboardEvent, "key" | "ctrlKey" | "altKey" | "metaKey">): Action | undefined {
  if (event.ctrlKey || event.altKey || event.metaKey) return undefined;
  return BY_KEY.get(event.key);
}

export const MOUSE_HELP: readonly [string, string][] = [
  ["Left drag", "Window / level, or the chosen measurement"],
  ["Right drag", "Zoom"],
  ["Middle drag or Shift + left drag", "Pan"],
  ["Wheel, or Ctrl + left drag", "Scroll through images"],
  ["Click a viewport, or Tab to it", "Make it the active one (keys and toolbar act on it)"],
  ["Drag a series onto a viewport", "Show that series there"],
];

import { describe, expect, it } from "vitest";
import { SHORTCUTS, actionForKey } from "./keymap";

const press = (key: string, modifiers: Partial<KeyboardEvent> = {}) =>
  actionForKey({ key, ctrlKey: false, altKey: false, metaKey: false, ...modifiers });

describe("keymap", () => {
  it("maps arrows to scrolling and digits to presets", () => {
    expect(press("ArrowDown")).toEqual({ kind: "scroll", delta: 1 });
    expect(press("ArrowUp")).toEqual({ kind: "scroll", delta: -1 });
    expect(press("3")).toEqual({ kind: "preset", id: "lung" });
    expect(press("i")).toEqual({ kind: "invert" });
    expect(press("?")).toEqual({ kind: "help" });
  });
  it("maps measurement tools, cine and the overlay toggle", () => {
    expect(press("e")).toEqual({ kind: "tool", tool: "ellipse" });
    expect(press("L")).toEqual({ kind: "tool", tool: "length" });
    expect(press("c")).toEqual({ kind: "cine" });
    expect(press("s")).toEqual({ kind: "overlay" });
    expect(press("Delete")).toEqual({ kind: "delete" });
  });

  it("leaves browser shortcuts alone", () => {
    expect(press("r", { ctrlKey: true })).toBeUndefined();
    expect(press("q")).toBeUndefined();
  });

  it("binds every key once", () => {
    const keys = SHORTCUTS.flatMap((shortcut) => shortcut.keys);
    expect(new Set(keys).size).toBe(keys.length);
  });
});

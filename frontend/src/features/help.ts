// The help overlay: every keyboard shortcut and mouse binding, from the same table that dispatches them.
import { MOUSE_HELP, SHORTCUTS } from "../lib/keymap";

const KEY_NAMES: Record<string, string> = {
  ArrowDown: "↓",
  ArrowUp: "↑",
  ArrowLeft: "←",
  ArrowRight: "→",
  Escape: "Esc",
};

export function setupHelp(container: HTMLElement) {
  const dialog = document.createElement("div");
  dialog.className = "help";
  dialog.hidden = true;
  dialog.setAttribute("role", "dialog");
  dialog.setAttribute("aria-label", "Keyboard shortcuts");
  const title = document.createElement("h2");
  title.textContent = "Keyboard shortcuts";
  const table = document.createElement("table");
  const rows: [string, string][] = [
    ...SHORTCUTS.map(
      (shortcut) => [shortcut.keys.map((key) => KEY_NAMES[key] ?? key).join(" / "), shortcut.label] as [string, string],
    ),
    ...MOUSE_HELP,
  ];
  for (const [keys, label] of rows) {
    const row = table.insertRow();
    const keyCell = row.insertCell();
    keyCell.innerHTML = "";
    const kbd = document.createElement("kbd");
    kbd.textContent = keys;
    keyCell.append(kbd);
    row.insertCell().textContent = label;
  }
  const close = document.createElement("button");
  close.type = "button";
  close.textContent = "Close";
  close.addEventListener("click", () => hide());
  dialog.append(title, table, close);
  container.append(dialog);

  function hide(): void {
    dialog.hidden = true;
  }
  return {
    toggle() {
      dialog.hidden = !dialog.hidden;
    },
    hide,
    teardown() {
      dialog.remove();
    },
  };
}

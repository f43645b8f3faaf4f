// The viewport grid (empty until the first `setLayout`): layouts 1x1, 1x2 and 2x2 of stack viewports drawn by one rendering engine and sharing one
// tool group; one viewport is active (keyboard and toolbar act on it); a series dragged from the series panel
// onto a viewport is shown there.
import { RenderingEngine } from "@cornerstonejs/core";
import { type OverlayHandle, setupOverlays } from "./overlays";
import { SERIES_DRAG_TYPE } from "./seriesPanel";
import { type StackHandle, setupStackViewport } from "./stackViewport";
import type { ToolsHandle } from "./tools";

const ENGINE_ID = "readroom-engine";

export const LAYOUTS = {
  "1x1": { rows: 1, columns: 1 },
  "1x2": { rows: 1, columns: 2 },
  "2x2": { rows: 2, columns: 2 },
} as const;
export type Layout = keyof typeof LAYOUTS;

export interface ViewportCell {
  index: number;
  container: HTMLDivElement;
  stack: StackHandle;
  overlays: OverlayHandle;
  /** The series shown, once one is. */
  seriesUid?: string;
}

export interface GridOptions {
  tools: ToolsHandle;
  onActivate(cell: ViewportCell): void;
  onDropSeries(cell: ViewportCell, seriesUid: string): void;
  /** A new cell appeared (a larger layout): the caller decides what it shows first. */
  onCellAdded(cell: ViewportCell): void;
  onCellRemoved(cell: ViewportCell): void;
}

export function setupViewportGrid(stage: HTMLElement, options: GridOptions) {
  // 1. One engine draws every viewport (one offscreen WebGL context however many cells are shown).
  const engine = new RenderingEngine(ENGINE_ID);
  const grid = document.createElement("div");
  grid.className = "viewport-grid";
  stage.prepend(grid);
  const cells: ViewportCell[] = [];
  let active: ViewportCell | undefined;
  let layout: Layout = "1x1";

  function activate(cell: ViewportCell): void {
    if (active === cell) return;
    active = cell;
    for (const other of cells) other.container.classList.toggle("active", other === cell);
    options.onActivate(cell);
  }

  function addCell(index: number): ViewportCell {
    const container = document.createElement("div");
    container.className = "cell";
    container.dataset.cell = String(index);
    const element = document.createElement("div");
    element.className = "viewport";
    element.tabIndex = 0;
    element.setAttribute("aria-label", `Image viewport ${index + 1}`);
    element.dataset.viewport = index === 0 ? "main" : String(index + 1);
    container.append(element);
    grid.append(container);
    // 2. Each cell is a stack viewport of the shared engine, bound to the shared tool group, with its overlays.
    const viewportId = `stack-${index + 1}`;
    const stack = setupStackViewport(engine, element, viewportId);
    // Cornerstone's enableElement sets tabIndex to -1: a keyboard user tabs to a viewport to make it the active one.
    element.tabIndex = 0;
    options.tools.addViewport(viewportId, ENGINE_ID);
    const cell: ViewportCell = { index, container, stack, overlays: setupOverlays(container, stack) };
    container.addEventListener("pointerdown", () => activate(cell), { capture: true });
    element.addEventListener("focus", () => activate(cell));
    // 3. Drag and drop: only series from the panel are accepted.
    container.addEventListener("dragover", (event) => {
      if (!event.dataTransfer?.types.includes(SERIES_DRAG_TYPE)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      container.classList.add("drop-target");
    });
    container.addEventListener("dragleave", () => container.classList.remove("drop-target"));
    container.addEventListener("drop", (event) => {
      container.classList.remove("drop-target");
      const seriesUid = event.dataTransfer?.getData(SERIES_DRAG_TYPE);
      if (!seriesUid) return;
      event.preventDefault();
      activate(cell);
      options.onDropSeries(cell, seriesUid);
    });
    cells.push(cell);
    return cell;
  }

  function removeCell(cell: ViewportCell): void {
    options.onCellRemoved(cell);
    options.tools.removeViewport(cell.stack.viewportId, ENGINE_ID);
    cell.overlays.teardown();
    cell.stack.teardown();
    cell.container.remove();
    cells.splice(cells.indexOf(cell), 1);
  }

  function setLayout(next: Layout): void {
    const { rows, columns } = LAYOUTS[next];
    layout = next;
    grid.style.gridTemplateRows = `repeat(${rows}, 1fr)`;
    grid.style.gridTemplateColumns = `repeat(${columns}, 1fr)`;
    grid.dataset.layout = next;
    const wanted = rows * columns;
    while (cells.length > wanted) removeCell(cells[cells.length - 1]);
    const added: ViewportCell[] = [];
    while (cells.length < wanted) added.push(addCell(cells.length));
    // 4. The canvases take their new size before anything is drawn into the new cells.
    engine.resize(true, false);
    if (!active || !cells.includes(active)) {
      active = undefined;
      activate(cells[0]);
    }
    for (const cell of added) options.onCellAdded(cell);
  }

  const resizeObserver = new ResizeObserver(() => engine.resize(true, false));
  resizeObserver.observe(grid);

  return {
    engine,
    cells,
    layout: () => layout,
    active: () => active ?? cells[0],
    activate,
    setLayout,
    teardown() {
      resizeObserver.disconnect();
      while (cells.length) removeCell(cells[cells.length - 1]);
      engine.destroy();
      grid.remove();
    },
  };
}

export type GridHandle = ReturnType<typeof setupViewportGrid>;

// The tool group every viewport of the grid shares: mouse bindings (W/L, zoom, pan, scroll) and the
// measurement tools (length, angle, elliptical ROI) that take the left button when chosen.
import {
  AngleTool,
  EllipticalROITool,
  Enums as toolsEnums,
  LengthTool,
  PanTool,
  StackScrollTool,
  ToolGroupManager,
  WindowLevelTool,
  ZoomTool,
  addTool,
} from "@cornerstonejs/tools";

const TOOL_GROUP_ID = "readroom-stack-tools";
const { MouseBindings, KeyboardBindings } = toolsEnums;

import type { ToolId } from "../lib/keymap";

/** What the left mouse button does. */
export type PrimaryTool = ToolId;

export const PRIMARY_TOOL_NAMES: Record<PrimaryTool, string> = {
  windowLevel: WindowLevelTool.toolName,
  length: LengthTool.toolName,
  angle: AngleTool.toolName,
  ellipse: EllipticalROITool.toolName,
};

export const MEASUREMENT_TOOL_NAMES: readonly string[] = [LengthTool.toolName, AngleTool.toolName, EllipticalROITool.toolName];

const ALL_TOOLS = [WindowLevelTool, ZoomTool, PanTool, StackScrollTool, LengthTool, AngleTool, EllipticalROITool];
let toolsRegistered = false;

export interface ToolsHandle {
  addViewport(viewportId: string, engineId: string): void;
  removeViewport(viewportId: string, engineId: string): void;
  setPrimary(tool: PrimaryTool): void;
  primary(): PrimaryTool;
  teardown(): void;
}

export function setupTools(): ToolsHandle {
  if (!toolsRegistered) {
    for (const tool of ALL_TOOLS) addTool(tool);
    toolsRegistered = true;
  }
  const group = ToolGroupManager.createToolGroup(TOOL_GROUP_ID);
  if (!group) throw new Error("tool group already exists");
  for (const tool of ALL_TOOLS) group.addTool(tool.toolName);
  group.setToolActive(ZoomTool.toolName, { bindings: [{ mouseButton: MouseBindings.Secondary }] });
  group.setToolActive(PanTool.toolName, {
    bindings: [
      { mouseButton: MouseBindings.Auxiliary },
      { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Shift },
    ],
  });
  // Scrolling by dragging too (a trackpad, or a radiologist used to dragging through a stack): Ctrl + left drag.
  group.setToolActive(StackScrollTool.toolName, {
    bindings: [
      { mouseButton: MouseBindings.Wheel },
      { mouseButton: MouseBindings.Primary, modifierKey: KeyboardBindings.Ctrl },
    ],
  });

  let current: PrimaryTool = "windowLevel";
  function setPrimary(tool: PrimaryTool): void {
    // Measurements stay drawn and editable (passive) while another tool has the left button.
    for (const [name, toolName] of Object.entries(PRIMARY_TOOL_NAMES)) {
      if (name === tool) continue;
      if (toolName === WindowLevelTool.toolName) group?.setToolDisabled(toolName);
      else group?.setToolPassive(toolName);
    }
    group?.setToolActive(PRIMARY_TOOL_NAMES[tool], { bindings: [{ mouseButton: MouseBindings.Primary }] });
    current = tool;
  }
  setPrimary("windowLevel");

  return {
    addViewport(viewportId, engineId) {
      group.addViewport(viewportId, engineId);
    },
    removeViewport(viewportId, engineId) {
      group.removeViewports(engineId, viewportId);
    },
    setPrimary,
    primary: () => current,
    teardown() {
      ToolGroupManager.destroyToolGroup(TOOL_GROUP_ID);
    },
  };
}

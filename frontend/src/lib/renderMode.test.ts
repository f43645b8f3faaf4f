import { describe, expect, it } from "vitest";
import { chooseRenderMode, withoutOverlaysReason } from "./renderMode";

const hardware = { webgl2: true, softwareRasterizer: false };
const software = { webgl2: true, softwareRasterizer: true };
const none = { webgl2: false, softwareRasterizer: false };

describe("chooseRenderMode", () => {
  it("uses WebGL on a hardware GPU, with or without overlays", () => {
    expect(chooseRenderMode(null, hardware, false)).toBe("gpu");
    expect(chooseRenderMode(null, hardware, true)).toBe("gpu");
  });

  it("draws on the CPU where WebGL is only a software rasterizer", () => {
    expect(chooseRenderMode(null, software, false)).toBe("cpu");
  });

  it("keeps WebGL on a software rasterizer when the study has overlays to draw", () => {
    expect(chooseRenderMode(null, software, true)).toBe("gpu");
  });

  it("draws on the CPU without WebGL 2, whatever is asked for", () => {
    expect(chooseRenderMode(null, none, true)).toBe("cpu");
    expect(chooseRenderMode("gpu", none, false)).toBe("cpu");
  });

  it("follows ?render= where it can", () => {
    expect(chooseRenderMode("cpu", hardware, true)).toBe("cpu");
    expect(chooseRenderMode("gpu", software, false)).toBe("gpu");
  });

  it("ignores an unknown ?render= value", () => {
    expect(chooseRenderMode("fast", hardware, false)).toBe("gpu");
    expect(chooseRenderMode("fast", software, false)).toBe("cpu");
  });
});

describe("withoutOverlaysReason", () => {
  it("names what keeps the overlays off", () => {
    expect(withoutOverlaysReason(null, none)).toMatch(/no WebGL 2/);
    expect(withoutOverlaysReason("gpu", none)).toMatch(/no WebGL 2/);
    expect(withoutOverlaysReason("cpu", hardware)).toMatch(/render=cpu/);
    // A software rasterizer draws on the CPU only for a study that had no SEG when the page was made.
    expect(withoutOverlaysReason(null, software)).toMatch(/reload/);
  });
});

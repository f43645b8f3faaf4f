import { describe, expect, it } from "vitest";
import { CT_PRESETS, displayGrey, formatWindowLevel, fromVoiRange, toVoiRange } from "./presets";

describe("CT presets", () => {
  it("has the five reading-room windows with distinct keys", () => {
    expect(CT_PRESETS.map((preset) => preset.id)).toEqual(["brain", "subdural", "lung", "bone", "abdomen"]);
    expect(new Set(CT_PRESETS.map((preset) => preset.key)).size).toBe(5);
  });

  it("round-trips width/centre through a VOI range", () => {
    for (const preset of CT_PRESETS) {
      expect(fromVoiRange(toVoiRange(preset))).toEqual({ width: preset.width, center: preset.center });
    }
    expect(toVoiRange({ width: 400, center: 40 })).toEqual({ lower: -160, upper: 239 });
  });

  it("maps soft tissue (40 HU) to mid-grey in W400/L40 and near white in the lung window", () => {
    expect(displayGrey(40, { width: 400, center: 40 })).toBe(128);
    expect(displayGrey(40, { width: 1500, center: -600 })).toBe(236);
    expect(displayGrey(-1000, { width: 400, center: 40 })).toBe(0);
    expect(displayGrey(3000, { width: 400, center: 40 })).toBe(255);
  });

  it("formats for the corner overlay", () => {
    expect(formatWindowLevel({ width: 399.6, center: 40.2 })).toBe("W 400 / L 40");
  });
});

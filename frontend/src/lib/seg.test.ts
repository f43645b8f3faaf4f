import { describe, expect, it } from "vitest";
import { cielabToRgb, hexToRgb, rgbToHex, segmentColor, sliceIndexForFrame, unpackBitFrame } from "./seg";

describe("unpackBitFrame", () => {
  it("reads frames packed bit after bit, least significant bit first, across byte boundaries", () => {
    // Two 2x3 frames (12 bits): frame 0 = 1,0,0,0,0,1 ; frame 1 = 0,1,1,0,0,0.
    const packed = new Uint8Array([0b10100001, 0b00000001]);
    expect(Array.from(unpackBitFrame(packed, 0, 6))).toEqual([1, 0, 0, 0, 0, 1]);
    expect(Array.from(unpackBitFrame(packed, 1, 6))).toEqual([0, 1, 1, 0, 0, 0]);
  });
});

describe("colours", () => {
  it("converts DICOM's scaled CIELab to sRGB", () => {
    // highdicom's CIELabColor(53.24, 80.09, 67.20) is pure red.
    const scaled: [number, number, number] = [
      Math.round((53.24 * 65535) / 100),
      Math.round(((80.09 + 128) * 65535) / 255),
      Math.round(((67.2 + 128) * 65535) / 255),
    ];
    const [r, g, b] = cielabToRgb(scaled);
    expect(r).toBeGreaterThanOrEqual(253);
    expect(g).toBeLessThanOrEqual(3);
    expect(b).toBeLessThanOrEqual(3);
    expect(cielabToRgb([65535, 32896, 32896])).toEqual([255, 255, 255]);
  });
  it("falls back to a palette colour per segment and round-trips hex", () => {
    expect(segmentColor({ number: 1, label: "" })).toEqual([255, 64, 64]);
    expect(segmentColor({ number: 2, label: "", color: [1, 2, 3] })).toEqual([1, 2, 3]);
    expect(rgbToHex([0, 255, 16])).toBe("#00ff10");
    expect(hexToRgb("#00ff10")).toEqual([0, 255, 16]);
  });
});

describe("sliceIndexForFrame", () => {
  const slices = [
    { sopInstanceUid: "1.1", position: [0, 0, 10] as [number, number, number] },
    { sopInstanceUid: "1.2", position: [0, 0, 7.5] as [number, number, number] },
  ];
  const mask = new Uint8Array(1);
  it("prefers the source instance the frame names", () => {
    expect(sliceIndexForFrame({ segmentNumber: 1, referencedSopInstanceUid: "1.2", position: [0, 0, 10], mask }, slices)).toBe(1);
  });
  it("falls back to the frame's position, and gives up when neither matches", () => {
    expect(sliceIndexForFrame({ segmentNumber: 1, position: [0, 0, 10.001], mask }, slices)).toBe(0);
    expect(sliceIndexForFrame({ segmentNumber: 1, referencedSopInstanceUid: "9.9", position: [0, 0, 3], mask }, slices)).toBeUndefined();
  });
});

import * as dicomParser from "dicom-parser";
import { describe, expect, it } from "vitest";
import {
  cielabToRgb,
  encapsulatedFrame,
  hexToRgb,
  maskOf,
  parseSeg,
  rgbToHex,
  segmentColor,
  sliceIndexForFrame,
  unpackBitFrame,
} from "./seg";

/**
 * A Part 10 file (Explicit VR Little Endian meta, RLE Lossless data set) whose pixel data is encapsulated, after
 * `attributes` (already encoded, in tag order).
 */
function encapsulated(offsets: number[], fragments: number[][], attributes: number[] = []): Uint8Array {
  const bytes: number[] = [...new Array(128).fill(0), ...Array.from("DICM", (c) => c.charCodeAt(0))];
  const u16 = (value: number) => [value & 0xff, value >> 8];
  const u32 = (value: number) => [value & 0xff, (value >> 8) & 0xff, (value >> 16) & 0xff, value >>> 24];
  const syntax = Array.from("1.2.840.10008.1.2.5\0", (c) => c.charCodeAt(0));
  const syntaxElement = [...u16(0x0002), ...u16(0x0010), ..."UI".split("").map((c) => c.charCodeAt(0)), ...u16(syntax.length), ...syntax];
  const groupLength = [...u16(0x0002), ...u16(0x0000), ..."UL".split("").map((c) => c.charCodeAt(0)), ...u16(4), ...u32(syntaxElement.length)];
  bytes.push(...groupLength, ...syntaxElement, ...attributes);
  const item = (content: number[]) => [...u16(0xfffe), ...u16(0xe000), ...u32(content.length), ...content];
  bytes.push(...u16(0x7fe0), ...u16(0x0010), 0x4f, 0x42, 0, 0, ...u32(0xffffffff));
  bytes.push(...item(offsets.flatMap(u32)));
  for (const fragment of fragments) bytes.push(...item(fragment));
  bytes.push(...u16(0xfffe), ...u16(0xe0dd), ...u32(0));
  return new Uint8Array(bytes);
}

function frameOf(part10: Uint8Array, frame: number, frameCount: number): number[] {
  const dataSet = dicomParser.parseDicom(part10);
  return Array.from(encapsulatedFrame(dataSet, dataSet.elements.x7fe00010, frame, frameCount));
}

describe("encapsulatedFrame", () => {
  it("takes one fragment per frame when there is no offset table", () => {
    const part10 = encapsulated([], [[1, 2], [3, 4]]);
    expect(frameOf(part10, 0, 2)).toEqual([1, 2]);
    expect(frameOf(part10, 1, 2)).toEqual([3, 4]);
  });
  it("follows the Basic Offset Table across fragments", () => {
    // Each fragment item is 10 bytes (an 8-byte item header, 2 bytes of data): frame 0 is the first two fragments,
    // frame 1 starts 20 bytes after the first fragment.
    const part10 = encapsulated([0, 20], [[1, 2], [3, 4], [5, 6]]);
    expect(frameOf(part10, 0, 2)).toEqual([1, 2, 3, 4]);
    expect(frameOf(part10, 1, 2)).toEqual([5, 6]);
  });
  it("joins the fragments of a single frame, and refuses frames it cannot tell apart", () => {
    expect(frameOf(encapsulated([], [[1], [2, 3]]), 0, 1)).toEqual([1, 2, 3]);
    expect(() => frameOf(encapsulated([], [[1], [2], [3]]), 0, 2)).toThrow(/cannot be told apart/);
  });
});

describe("parseSeg", () => {
  it("refuses a SEG whose masks would not fit in memory, before decoding anything", async () => {
    // Rows and Columns 4096 (US), NumberOfFrames 65536 (IS): 1 TiB of masks from a few bytes of RLE.
    const us = (element: number, value: number) => [0x28, 0x00, element, 0x00, 0x55, 0x53, 2, 0, value & 0xff, value >> 8];
    const frames = Array.from("65536 ", (c) => c.charCodeAt(0));
    const attributes = [
      ...[0x28, 0x00, 0x08, 0x00, 0x49, 0x53, frames.length, 0, ...frames],
      ...us(0x10, 4096),
      ...us(0x11, 4096),
    ];
    let decoded = 0;
    const decode = async () => {
      decoded += 1;
      return new Uint8Array(0);
    };
    await expect(parseSeg(encapsulated([], [[0]], attributes), decode)).rejects.toThrow(/too large to show: 65536 frames/);
    expect(decoded).toBe(0);
  });
});

describe("maskOf", () => {
  it("marks the pixels that reach the threshold, and refuses a frame that is short", () => {
    expect(Array.from(maskOf(new Uint8Array([0, 1, 127, 128, 255]), 5, 127.5))).toEqual([0, 0, 0, 1, 1]);
    expect(Array.from(maskOf(new Uint16Array([0, 1, 2]), 3, 1))).toEqual([0, 1, 1]);
    expect(() => maskOf(new Uint8Array(3), 4, 1)).toThrow(/holds 3 pixels, not 4/);
  });
});

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
  it("in a multi-frame source, takes the frame the SEG names, and the position when it names none", () => {
    const frames = [1, 2, 3].map((frame) => ({
      sopInstanceUid: "2.1",
      frame,
      position: [0, 0, 10 - 2.5 * frame] as [number, number, number],
    }));
    expect(sliceIndexForFrame({ segmentNumber: 1, referencedSopInstanceUid: "2.1", referencedFrameNumber: 3, mask }, frames)).toBe(2);
    expect(sliceIndexForFrame({ segmentNumber: 1, referencedSopInstanceUid: "2.1", position: [0, 0, 5], mask }, frames)).toBe(1);
    expect(sliceIndexForFrame({ segmentNumber: 1, referencedSopInstanceUid: "2.1", referencedFrameNumber: 9, mask }, frames)).toBeUndefined();
  });
  it("falls back to the frame's position, and gives up when neither matches", () => {
    expect(sliceIndexForFrame({ segmentNumber: 1, position: [0, 0, 10.001], mask }, slices)).toBe(0);
    expect(sliceIndexForFrame({ segmentNumber: 1, referencedSopInstanceUid: "9.9", position: [0, 0, 3], mask }, slices)).toBeUndefined();
  });
});

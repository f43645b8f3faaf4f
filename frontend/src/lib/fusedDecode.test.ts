import { decodeImageFrame } from "@cornerstonejs/dicom-image-loader";
import { describe, expect, it } from "vitest";
import { type DecodeOptions, type FrameFields, fusedDecode, pixelArrayType } from "./fusedDecode";

const EXPLICIT_LE = "1.2.840.10008.1.2.1";

/** A deterministic pseudo-random 16-bit frame (the bytes as they come off the network). */
function frameBytes(count: number, seed: number, low: number, high: number, signed: boolean): Uint8Array {
  const values = signed ? new Int16Array(count) : new Uint16Array(count);
  let state = seed;
  for (let index = 0; index < count; index++) {
    state = (state * 1103515245 + 12345) % 2147483648;
    values[index] = low + (state % (high - low + 1));
  }
  return new Uint8Array(values.buffer);
}

function frame(fields: Partial<FrameFields>): FrameFields {
  return {
    rows: 16,
    columns: 16,
    bitsAllocated: 16,
    bitsStored: 16,
    pixelRepresentation: 1,
    samplesPerPixel: 1,
    photometricInterpretation: "MONOCHROME2",
    ...fields,
  };
}

function options(scalingParameters: Record<string, unknown>): DecodeOptions {
  return { preScale: { enabled: true, scalingParameters } };
}

/** The loader's answer and ours for the same input (each on its own copy of the bytes). */
async function both(fields: Partial<FrameFields>, bytes: Uint8Array, decodeOptions: DecodeOptions) {
  const theirs = (await decodeImageFrame(frame(fields), EXPLICIT_LE, bytes.slice(), {}, decodeOptions, undefined)) as FrameFields;
  const ours = fusedDecode(frame(fields), EXPLICIT_LE, bytes.slice(), decodeOptions);
  return { theirs, ours };
}

/** Everything but the timing, with the pixels as their array type's name and their values. */
function comparable(decoded: FrameFields) {
  const rest: Record<string, unknown> = { ...decoded };
  delete rest.decodeTimeInMS;
  delete rest.pixelData;
  const pixels = decoded.pixelData;
  return { ...rest, type: pixels?.constructor.name, pixels: Array.from(pixels ?? []) };
}

describe("fusedDecode", () => {
  const cases: [string, Partial<FrameFields>, Uint8Array, Record<string, unknown>][] = [
    ["CT: signed, intercept -1024", {}, frameBytes(256, 1, -2000, 3000, true), { rescaleSlope: 1, rescaleIntercept: -1024, modality: "CT" }],
    ["CT: unsigned, intercept -1024", { pixelRepresentation: 0 }, frameBytes(256, 2, 0, 4095, false), { rescaleSlope: 1, rescaleIntercept: -1024, modality: "CT" }],
    ["CT: 12 stored bits, signed (sign extended)", { bitsStored: 12 }, frameBytes(256, 3, 0, 4095, true), { rescaleSlope: 1, rescaleIntercept: 0, modality: "CT" }],
    ["MR: unsigned, no rescale", { pixelRepresentation: 0 }, frameBytes(256, 4, 0, 60000, false), { rescaleSlope: 1, rescaleIntercept: 0, modality: "MR" }],
    ["slope 2", { pixelRepresentation: 0 }, frameBytes(256, 5, 0, 1000, false), { rescaleSlope: 2, rescaleIntercept: -500, modality: "CT" }],
    ["negative slope", {}, frameBytes(256, 6, -100, 100, true), { rescaleSlope: -1, rescaleIntercept: 0, modality: "CT" }],
    ["a rescale past 16 bits (Float32Array or Uint32Array)", { pixelRepresentation: 0 }, frameBytes(256, 7, 0, 65535, false), { rescaleSlope: 3, rescaleIntercept: 10, modality: "CT" }],
    ["unsigned values that wrap in the rescaled type", { pixelRepresentation: 0 }, frameBytes(256, 8, 30000, 40000, false), { rescaleSlope: 1, rescaleIntercept: -32768, modality: "CT" }],
    ["CT: intercept -1024, no value below it (Uint16Array)", { pixelRepresentation: 0 }, frameBytes(256, 12, 2000, 4095, false), { rescaleSlope: 1, rescaleIntercept: -1024, modality: "CT" }],
    ["CT: a rescale below Int16's range (Float32Array)", {}, frameBytes(256, 13, -32768, 32767, true), { rescaleSlope: 1, rescaleIntercept: -1, modality: "CT" }],
    ["MONOCHROME1", { photometricInterpretation: "MONOCHROME1", pixelRepresentation: 0 }, frameBytes(256, 9, 0, 4095, false), { rescaleSlope: 1, rescaleIntercept: 0, modality: "CR" }],
  ];

  for (const [name, fields, bytes, scaling] of cases) {
    it(`gives what the loader gives: ${name}`, async () => {
      const { theirs, ours } = await both(fields, bytes, options(scaling));
      expect(ours).toBeDefined();
      expect(comparable(ours as FrameFields)).toEqual(comparable(theirs));
    });
  }

  it("decodes a frame at an odd offset in its buffer as the loader does", async () => {
    const bytes = frameBytes(64, 10, -1000, 1000, true);
    const odd = new Uint8Array(bytes.length + 1);
    odd.set(bytes, 1);
    const scaling = options({ rescaleSlope: 1, rescaleIntercept: -1024, modality: "CT" });
    const theirs = (await decodeImageFrame(frame({}), EXPLICIT_LE, odd.slice().subarray(1), {}, scaling, undefined)) as FrameFields;
    const ours = fusedDecode(frame({}), EXPLICIT_LE, odd.slice().subarray(1), scaling);
    expect(comparable(ours as FrameFields)).toEqual(comparable(theirs));
  });

  it("leaves every other frame to the loader", () => {
    const bytes = frameBytes(64, 11, 0, 100, false);
    const ct = { rescaleSlope: 1, rescaleIntercept: -1024, modality: "CT" };
    const declined: [Partial<FrameFields>, unknown, DecodeOptions][] = [
      [{}, "1.2.840.10008.1.2.4.50", options(ct)],
      [{ bitsAllocated: 8 }, EXPLICIT_LE, options(ct)],
      [{ samplesPerPixel: 3, photometricInterpretation: "RGB" }, EXPLICIT_LE, options(ct)],
      [{}, EXPLICIT_LE, { preScale: { enabled: false } }],
      [{}, EXPLICIT_LE, { ...options(ct), targetBuffer: { type: "Float32Array" } }],
      [{}, EXPLICIT_LE, options({ rescaleSlope: 0.5, rescaleIntercept: 0, modality: "CT" })],
      [{}, EXPLICIT_LE, options({ rescaleSlope: 1, rescaleIntercept: -1024.5, modality: "CT" })],
      [{}, EXPLICIT_LE, options({ rescaleSlope: 1, rescaleIntercept: 0, modality: "PT", suvbw: 2 })],
      [{}, EXPLICIT_LE, options({ rescaleSlope: 1, rescaleIntercept: 0, modality: "RTDOSE", doseGridScaling: 1 })],
      [{}, EXPLICIT_LE, options({ modality: "CT" })],
    ];
    for (const [fields, syntax, decodeOptions] of declined) {
      expect(fusedDecode(frame(fields), syntax, bytes.slice(), decodeOptions)).toBeUndefined();
    }
    expect(fusedDecode(frame({}), EXPLICIT_LE, new Uint8Array(3), options(ct))).toBeUndefined();
    // Arguments the loader itself would refuse are left to it, so that its error is the one reported.
    expect(fusedDecode(undefined as unknown as FrameFields, EXPLICIT_LE, bytes.slice(), options(ct))).toBeUndefined();
    expect(fusedDecode(frame({}), EXPLICIT_LE, undefined as unknown as Uint8Array, options(ct))).toBeUndefined();
  });

  it("chooses array types as the loader does", () => {
    expect(pixelArrayType(0, 255)).toBe(Uint8Array);
    expect(pixelArrayType(0, 256)).toBe(Uint16Array);
    expect(pixelArrayType(0, 70000)).toBe(Uint32Array);
    expect(pixelArrayType(-1, 127)).toBe(Int8Array);
    expect(pixelArrayType(-1024, 3071)).toBe(Int16Array);
    expect(pixelArrayType(-40000, 0)).toBe(Float32Array);
    expect(pixelArrayType(0, 1.5)).toBe(Float32Array);
  });
});

import { describe, expect, it } from "vitest";
import { type DicomJson, framePosition, isoDate, number, personName, text } from "./dicomJson";

describe("dicomJson", () => {
  const data = {
    "00100010": { vr: "PN", Value: [{ Alphabetic: "Doe^Jane" }] },
    "00200013": { vr: "IS", Value: ["7"] },
    "00080020": { vr: "DA", Value: ["20260301"] },
    "0008103E": { vr: "LO" },
  };

  it("reads names, numbers, dates and missing values", () => {
    expect(personName(data, "00100010")).toBe("Doe, Jane");
    expect(number(data, "00200013")).toBe(7);
    expect(isoDate(text(data, "00080020"))).toBe("2026-03-01");
    expect(text(data, "0008103E")).toBe("");
    expect(number(data, "0008103E")).toBeUndefined();
  });
});

describe("framePosition", () => {
  const plane = (z: number) => ({ "00209113": { vr: "SQ", Value: [{ "00200032": { vr: "DS", Value: [0, 0, z] } }] } });
  it("reads a single-frame image's own position", () => {
    expect(framePosition({ "00200032": { vr: "DS", Value: [1, 2, 3] } }, 1)).toEqual([1, 2, 3]);
  });
  it("reads an enhanced image's per-frame position, else the shared one, else nothing", () => {
    const enhanced: DicomJson = { "52009230": { vr: "SQ", Value: [plane(5), plane(2.5)] } };
    expect(framePosition(enhanced, 2)).toEqual([0, 0, 2.5]);
    // A top-level position in an enhanced image (Cornerstone's loader writes one there) does not win.
    expect(framePosition({ ...enhanced, "00200032": { vr: "DS", Value: [0, 0, 9] } }, 1)).toEqual([0, 0, 5]);
    const shared: DicomJson = { "52009229": { vr: "SQ", Value: [plane(7)] }, "52009230": { vr: "SQ", Value: [{}] } };
    expect(framePosition(shared, 1)).toEqual([0, 0, 7]);
    expect(framePosition({}, 1)).toBeUndefined();
  });
});

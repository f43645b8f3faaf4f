import { describe, expect, it } from "vitest";
import { isoDate, number, personName, text } from "./dicomJson";

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

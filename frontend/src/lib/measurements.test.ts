import { describe, expect, it } from "vitest";
import { formatFinding } from "./findings";
import { measurementsStorageKey, summariseMeasurement } from "./measurements";
import type { Finding } from "./api";

describe("summariseMeasurement", () => {
  it("reads length, angle and ellipse statistics from the cached stats", () => {
    const stats = (values: Record<string, unknown>) => ({ cachedStats: { "imageId:x": values } });
    expect(summariseMeasurement({ metadata: { toolName: "Length" }, data: stats({ length: 12.345, unit: "mm" }) }).text).toBe(
      "Length 12.3 mm",
    );
    expect(summariseMeasurement({ metadata: { toolName: "Angle" }, data: stats({ angle: 89.96 }) }).text).toBe("Angle 90.0°");
    expect(
      summariseMeasurement({
        metadata: { toolName: "EllipticalROI" },
        data: stats({ mean: 40, stdDev: 2.25, area: 50.5, modalityUnit: "HU", areaUnit: "mm²" }),
      }),
    ).toEqual({ kind: "ellipse", text: "Ellipse mean 40.0 HU, SD 2.3 HU, area 50.5 mm²" });
  });
  it("names a measurement whose stats are not computed yet", () => {
    expect(summariseMeasurement({ metadata: { toolName: "EllipticalROI" }, data: {} }).text).toBe("Ellipse");
  });
  it("keeps measurements per clinic and study", () => {
    expect(measurementsStorageKey("a", "1.2")).not.toBe(measurementsStorageKey("a", "1.3"));
  });
});

describe("formatFinding", () => {
  it("says what, how sure and how big", () => {
    const finding = { label: "focal_lesion", confidence: 0.874, diameter_mm: 11.24, volume_ml: 0, critical: true } as Finding;
    expect(formatFinding(finding)).toEqual({ title: "Critical: Focal lesion", detail: "87% confidence · 11.2 mm" });
  });
});

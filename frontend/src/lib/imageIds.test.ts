import { describe, expect, it } from "vitest";
import type { DicomJson } from "./dicomJson";
import { edgeInstances, loadOrder, planePosition, seriesImages, slicePosition, sortInstances, wadoRoot } from "./imageIds";

function instance(sop: string, instanceNumber: number, z?: number, frames?: number): DicomJson {
  const data: DicomJson = {
    "0020000D": { vr: "UI", Value: ["1.2.3"] },
    "0020000E": { vr: "UI", Value: ["1.2.3.4"] },
    "00080018": { vr: "UI", Value: [sop] },
    "00200013": { vr: "IS", Value: [instanceNumber] },
  };
  if (z !== undefined) {
    data["00200032"] = { vr: "DS", Value: [0, 0, z] };
    data["00200037"] = { vr: "DS", Value: [1, 0, 0, 0, 1, 0] };
  }
  if (frames !== undefined) data["00280008"] = { vr: "IS", Value: [frames] };
  return data;
}

describe("seriesImages", () => {
  it("builds wadors frame imageIds under the clinic's DICOMweb root", () => {
    const images = seriesImages(wadoRoot("clinic-a"), [instance("9.1", 1)]);
    expect(images.map((image) => image.imageId)).toEqual([
      "wadors:/dicomweb/clinic-a/studies/1.2.3/series/1.2.3.4/instances/9.1/frames/1",
    ]);
  });

  it("gives each frame of a multi-frame instance its own imageId", () => {
    const images = seriesImages("/dicomweb/x", [instance("9.1", 1, undefined, 3)]);
    expect(images.map((image) => image.imageId.split("/frames/")[1])).toEqual(["1", "2", "3"]);
  });

  it("skips instances without UIDs", () => {
    const broken = instance("9.1", 1);
    delete broken["00080018"];
    expect(seriesImages("/dicomweb/x", [broken])).toEqual([]);
  });
});

describe("sortInstances", () => {
  it("orders by position along the slice normal, superior first", () => {
    const sorted = sortInstances([instance("a", 1, -10), instance("b", 2, 5), instance("c", 3, 0)]);
    expect(sorted.map((data) => data["00080018"].Value?.[0])).toEqual(["b", "c", "a"]);
  });

  it("falls back to InstanceNumber when a position is missing", () => {
    const sorted = sortInstances([instance("a", 3, 1), instance("b", 1), instance("c", 2, 2)]);
    expect(sorted.map((data) => data["00080018"].Value?.[0])).toEqual(["b", "c", "a"]);
  });

  it("computes the position along the normal", () => {
    expect(slicePosition(instance("a", 1, -12.5))).toBe(-12.5);
    expect(slicePosition(instance("a", 1))).toBeUndefined();
  });
});

describe("loadOrder", () => {
  it("starts at the shown slice and spreads outwards", () => {
    expect(loadOrder(5, 2)).toEqual([2, 3, 1, 4, 0]);
    expect(loadOrder(3, 0)).toEqual([0, 1, 2]);
    expect(loadOrder(0, 0)).toEqual([]);
    expect(loadOrder(2, 9)).toEqual([1, 0]);
  });
});

describe("edgeInstances", () => {
  it("picks the lowest and the highest InstanceNumber whatever the order the index lists them in", () => {
    const rows = [instance("9.5", 5), instance("9.1", 1), instance("9.9", 9), instance("9.3", 3)];
    expect(edgeInstances(rows).map((row) => row["00080018"].Value?.[0])).toEqual(["9.1", "9.9"]);
  });

  it("gives one instance for a single-slice series and falls back to the first row without numbers", () => {
    expect(edgeInstances([instance("9.1", 1)]).length).toBe(1);
    const unnumbered = [{ "00080018": { vr: "UI", Value: ["9.7"] } }, { "00080018": { vr: "UI", Value: ["9.8"] } }];
    expect(edgeInstances(unnumbered)).toEqual([unnumbered[0]]);
  });

  it("puts first, once positioned, the end that sortInstances puts first (superior for axial CT)", () => {
    const series = [instance("9.1", 1, -100), instance("9.2", 2, -50), instance("9.3", 3, 0)];
    const [first] = sortInstances(edgeInstances(series));
    expect(first).toBe(sortInstances(series)[0]);
  });
});

describe("planePosition", () => {
  it("is the distance along the slice normal, named by the axis it is closest to", () => {
    // axial: the normal is +Z, so the position is z
    expect(planePosition([10, 20, -35.5], [1, 0, 0, 0, 1, 0])).toEqual({ axis: "Z", value: -35.5 });
    // sagittal: rows along Y, columns along -Z; the normal is X, and slices differ in x while their z stays put
    const first = planePosition([-20, -100, 100], [0, 1, 0, 0, 0, -1]);
    const second = planePosition([-17.5, -100, 100], [0, 1, 0, 0, 0, -1]);
    expect(first?.axis).toBe("X");
    expect(Math.abs((second?.value ?? 0) - (first?.value ?? 0))).toBeCloseTo(2.5);
    // coronal: the normal is Y
    expect(planePosition([-100, 42, 100], [1, 0, 0, 0, 0, -1])?.axis).toBe("Y");
    expect(planePosition([0, 0], [1, 0, 0, 0, 1, 0])).toBeUndefined();
  });
});

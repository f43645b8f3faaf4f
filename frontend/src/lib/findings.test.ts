import { describe, expect, it } from "vitest";
import type { Finding } from "./api";
import type { DicomJson } from "./dicomJson";
import { findingImageIndex } from "./findings";
import type { SeriesImage } from "./imageIds";

const finding = (sop: string, centre: number[]): Finding => ({
  id: 1,
  label: "focal_lesion",
  confidence: 0.9,
  diameter_mm: 10,
  volume_ml: 0.5,
  centre_mm: centre,
  critical: false,
  model: "m 1",
  series_instance_uid: "1.2",
  sop_instance_uid: sop,
  segment_number: 1,
  seg_sop_instance_uid: "9.9",
});

function single(sop: string, z: number): SeriesImage {
  const metadata: DicomJson = { "00080018": { vr: "UI", Value: [sop] }, "00200032": { vr: "DS", Value: [0, 0, z] } };
  return { imageId: `wadors:/${sop}/frames/1`, metadata, frame: 1 };
}

function multiframe(sop: string, zs: number[]): SeriesImage[] {
  const metadata: DicomJson = {
    "00080018": { vr: "UI", Value: [sop] },
    "52009230": {
      vr: "SQ",
      Value: zs.map((z) => ({ "00209113": { vr: "SQ", Value: [{ "00200032": { vr: "DS", Value: [0, 0, z] } }] } })),
    },
  };
  return zs.map((_, index) => ({ imageId: `wadors:/${sop}/frames/${index + 1}`, metadata, frame: index + 1 }));
}

describe("findingImageIndex", () => {
  it("finds the slice of a finding's instance", () => {
    const images = [single("1.1", 10), single("1.2", 7.5), single("1.3", 5)];
    expect(findingImageIndex(images, finding("1.2", [0, 0, 7.5]))).toBe(1);
    expect(findingImageIndex(images, finding("4.4", [0, 0, 7.5]))).toBe(-1);
  });
  it("in a multi-frame instance, takes the frame nearest to the finding's centre", () => {
    const images = multiframe("2.1", [5, 2.5, 0, -2.5]);
    expect(findingImageIndex(images, finding("2.1", [3, 1, -2.1]))).toBe(3);
    expect(findingImageIndex(images, finding("2.1", []))).toBe(0);
  });
});

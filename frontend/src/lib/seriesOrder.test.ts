import { describe, expect, it } from "vitest";
import type { DicomJson } from "./dicomJson";
import { bySeriesNumber, firstImageSeries } from "./seriesOrder";

function series(uid: string, seriesNumber: number, modality: string): DicomJson {
  return {
    "0020000E": { vr: "UI", Value: [uid] },
    "00200011": { vr: "IS", Value: [seriesNumber] },
    "00080060": { vr: "CS", Value: [modality] },
  };
}

describe("series order", () => {
  it("orders by SeriesNumber and opens on the first series that holds images", () => {
    const list = [series("3", 3, "CT"), series("900", 900, "SEG"), series("1", 1, "SR"), series("2", 2, "CT")];
    expect(bySeriesNumber(list).map((item) => item["0020000E"].Value?.[0])).toEqual(["1", "2", "3", "900"]);
    expect(firstImageSeries(list)?.["0020000E"].Value?.[0]).toBe("2");
  });

  it("has no first series when the study holds no images", () => {
    expect(firstImageSeries([series("1", 1, "SR")])).toBeUndefined();
    expect(firstImageSeries([])).toBeUndefined();
  });
});

// Which series of a study the viewer opens first: the image series in SeriesNumber order. Shared by the
// series panel, the viewer and the early prefetch, so the prefetch fetches what the viewer will show.
import { type DicomJson, Tag, number, text } from "./dicomJson";

// Series that hold no images to scroll: the SEG overlay and the findings list present SEGs; reports are elsewhere.
export const NON_IMAGE_MODALITIES = ["SEG", "SR", "PR", "KO", "DOC", "RTSTRUCT"];

export function bySeriesNumber(series: DicomJson[]): DicomJson[] {
  return [...series].sort((a, b) => (number(a, Tag.SeriesNumber) ?? 0) - (number(b, Tag.SeriesNumber) ?? 0));
}

/** The series the viewer shows first: the lowest-numbered series that holds images. */
export function firstImageSeries(series: DicomJson[]): DicomJson | undefined {
  return bySeriesNumber(series.filter((item) => !NON_IMAGE_MODALITIES.includes(text(item, Tag.Modality))))[0];
}

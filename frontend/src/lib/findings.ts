// How a finding reads in the list (what, how sure, how big), and which image of its series shows it.
import type { Finding } from "./api";
import { Tag, framePosition, text } from "./dicomJson";
import type { SeriesImage } from "./imageIds";

export function formatFinding(finding: Finding): { title: string; detail: string } {
  const label = finding.label.replace(/_/g, " ");
  const title = `${finding.critical ? "Critical: " : ""}${label.charAt(0).toUpperCase()}${label.slice(1)}`;
  const parts = [`${Math.round(finding.confidence * 100)}% confidence`];
  if (finding.diameter_mm > 0) parts.push(`${finding.diameter_mm.toFixed(1)} mm`);
  if (finding.volume_ml > 0) parts.push(`${finding.volume_ml.toFixed(1)} ml`);
  return { title, detail: parts.join(" · ") };
}

/**
 * The index of the image a finding is on: the image of its instance, and of a multi-frame instance the frame
 * nearest to the finding's centre; -1 when the series has no image of that instance.
 */
export function findingImageIndex(images: SeriesImage[], finding: Finding): number {
  const candidates = images.flatMap((image, index) =>
    text(image.metadata, Tag.SOPInstanceUID) === finding.sop_instance_uid ? [index] : [],
  );
  if (candidates.length <= 1 || finding.centre_mm?.length !== 3) return candidates[0] ?? -1;
  const distance = (index: number) => {
    const position = framePosition(images[index].metadata, images[index].frame);
    return position ? Math.hypot(...position.map((value, axis) => value - finding.centre_mm[axis])) : Infinity;
  };
  return candidates.reduce((best, index) => (distance(index) < distance(best) ? index : best));
}

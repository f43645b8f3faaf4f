// The series panel: one button per series of the study (QIDO-RS), with its thumbnail; clicking shows it in the
// active viewport, dragging it onto a viewport shows it there.
import { seriesThumbnailUrl } from "../lib/api";
import { type DicomJson, Tag, number, text } from "../lib/dicomJson";
import { bySeriesNumber } from "../lib/seriesOrder";

/** The drag payload a series button carries: its SeriesInstanceUID. */
export const SERIES_DRAG_TYPE = "application/x-readroom-series";

export function setupSeriesPanel(
  container: HTMLElement,
  options: { root: string; studyUid: string; series: DicomJson[]; onSelect: (series: DicomJson) => void },
) {
  const list = document.createElement("ul");
  list.className = "series-list";
  const buttons: HTMLButtonElement[] = [];
  const sorted = bySeriesNumber(options.series);
  for (const series of sorted) {
    const uid = text(series, Tag.SeriesInstanceUID);
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.seriesUid = uid;
    const image = document.createElement("img");
    image.alt = "";
    // The button is dragged, not the picture inside it.
    image.draggable = false;
    image.loading = "lazy";
    image.width = 96;
    image.height = 96;
    image.src = seriesThumbnailUrl(options.root, options.studyUid, uid);
    image.addEventListener("error", () => image.remove(), { once: true });
    const label = document.createElement("span");
    const count = number(series, Tag.NumberOfSeriesRelatedInstances);
    label.textContent = [
      `${text(series, Tag.Modality)} ${text(series, Tag.SeriesNumber)}`.trim(),
      text(series, Tag.SeriesDescription),
      count !== undefined ? `${count} images` : "",
    ]
      .filter(Boolean)
      .join(" · ");
    button.append(image, label);
    button.draggable = true;
    button.addEventListener("dragstart", (event) => {
      event.dataTransfer?.setData(SERIES_DRAG_TYPE, uid);
      event.dataTransfer?.setData("text/plain", label.textContent ?? uid);
      if (event.dataTransfer) event.dataTransfer.effectAllowed = "copy";
    });
    button.addEventListener("click", () => {
      select(uid);
      options.onSelect(series);
    });
    item.append(button);
    list.append(item);
    buttons.push(button);
  }
  container.append(list);

  function select(uid: string): void {
    for (const button of buttons) button.setAttribute("aria-pressed", String(button.dataset.seriesUid === uid));
  }
  return {
    sorted,
    select,
    teardown() {
      list.remove();
    },
  };
}

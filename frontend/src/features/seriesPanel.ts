// The series panel: one button per series of the study (QIDO-RS), with its thumbnail; clicking shows it in the
// active viewport, dragging it onto a viewport shows it there.
import { seriesThumbnailUrl } from "../lib/api";
import { type DicomJson, Tag, number, text } from "../lib/dicomJson";
import { bySeriesNumber } from "../lib/seriesOrder";

/** The drag payload a series button carries: its SeriesInstanceUID. */
export const SERIES_DRAG_TYPE = "application/x-readroom-series";

function labelText(series: DicomJson, images: number | undefined): string {
  return [
    `${text(series, Tag.Modality)} ${text(series, Tag.SeriesNumber)}`.trim(),
    text(series, Tag.SeriesDescription),
    images !== undefined ? `${images} ${images === 1 ? "image" : "images"}` : "",
  ]
    .filter(Boolean)
    .join(" · ");
}

export function setupSeriesPanel(
  container: HTMLElement,
  options: { root: string; studyUid: string; series: DicomJson[]; onSelect: (series: DicomJson) => void },
) {
  const list = document.createElement("ul");
  list.className = "series-list";
  const buttons: HTMLButtonElement[] = [];
  const labels = new Map<string, { label: HTMLSpanElement; series: DicomJson }>();
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
    // Until the series' frames are known, one image per instance (true but for multi-frame instances).
    label.textContent = labelText(series, number(series, Tag.NumberOfSeriesRelatedInstances));
    labels.set(uid, { label, series });
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
    /** The series' image count once its frames are known (a multi-frame instance holds several images). */
    setImageCount(uid: string, images: number): void {
      const entry = labels.get(uid);
      if (entry) entry.label.textContent = labelText(entry.series, images);
    },
    teardown() {
      list.remove();
    },
  };
}

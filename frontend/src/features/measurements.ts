// Measurements (length, angle, elliptical ROI with mean/SD in HU): listed beside the images and kept per study
// for the browser session (sessionStorage), so a reload or a return to the study finds them again. They are
// the reader's working notes, not part of the record: nothing is sent to the server.
import { eventTarget } from "@cornerstonejs/core";
import { Enums as toolsEnums, annotation } from "@cornerstonejs/tools";
import { type MeasurementSummary, measurementsStorageKey, summariseMeasurement } from "../lib/measurements";
import { MEASUREMENT_TOOL_NAMES } from "./tools";

type Annotation = ReturnType<typeof annotation.state.getAllAnnotations>[number];

const EVENTS = [
  toolsEnums.Events.ANNOTATION_COMPLETED,
  toolsEnums.Events.ANNOTATION_MODIFIED,
  toolsEnums.Events.ANNOTATION_REMOVED,
];

export function setupMeasurements(
  container: HTMLElement,
  options: { slug: string; studyUid: string; render(): void; onSelect(referencedImageId: string): void },
) {
  const key = measurementsStorageKey(options.slug, options.studyUid);
  const section = document.createElement("section");
  section.className = "measurements";
  section.setAttribute("aria-label", "Measurements");
  const heading = document.createElement("h2");
  heading.textContent = "Measurements";
  const empty = document.createElement("p");
  empty.textContent = "None yet: L length, A angle, E ellipse.";
  const list = document.createElement("ol");
  list.className = "measurement-list";
  section.append(heading, empty, list);
  container.append(section);

  function ours(): Annotation[] {
    // Only this study's measurements (the annotation state is page-wide and keyed by frame of reference).
    return annotation.state
      .getAllAnnotations()
      .filter(
        (item) =>
          MEASUREMENT_TOOL_NAMES.includes(item.metadata?.toolName ?? "") &&
          (item.metadata?.referencedImageId ?? "").includes(`/studies/${options.studyUid}/`),
      );
  }

  // 1. Restore what this tab measured on this study before; stats are recomputed when drawn.
  try {
    const saved = JSON.parse(sessionStorage.getItem(key) ?? "[]") as Annotation[];
    for (const item of saved) {
      if (!item.metadata?.toolName || !item.metadata.referencedImageId) continue;
      item.invalidated = true;
      // A radiograph (CR, DX) has no frame of reference: Cornerstone files its measurements under none, and
      // they are restored the same way (the manager then takes the annotation's own, undefined, key).
      annotation.state.addAnnotation(item, item.metadata.FrameOfReferenceUID as string);
    }
  } catch (error) {
    // A damaged entry costs the notes, never the viewer.
    console.warn("saved measurements could not be restored", error);
    sessionStorage.removeItem(key);
  }

  let scheduled = false;
  function changed(): void {
    if (scheduled) return;
    scheduled = true;
    // Many modified events arrive while a handle is dragged; one save and redraw of the list per frame.
    requestAnimationFrame(() => {
      scheduled = false;
      const items = ours();
      try {
        sessionStorage.setItem(key, JSON.stringify(items));
      } catch (error) {
        console.warn("measurements could not be kept for the session", error);
      }
      renderList(items.map((item) => [item, summariseMeasurement(item)] as const));
    });
  }

  function renderList(rows: readonly (readonly [Annotation, MeasurementSummary])[]): void {
    list.replaceChildren();
    empty.hidden = rows.length > 0;
    for (const [item, summary] of rows) {
      const entry = document.createElement("li");
      entry.dataset.measurement = summary.kind;
      const show = document.createElement("button");
      show.type = "button";
      show.className = "measurement-value";
      show.textContent = summary.text;
      show.title = "Show the image of this measurement";
      show.addEventListener("click", () => {
        const imageId = item.metadata?.referencedImageId;
        if (imageId) options.onSelect(imageId);
      });
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = "×";
      remove.title = "Delete this measurement";
      remove.setAttribute("aria-label", `Delete ${summary.text}`);
      remove.addEventListener("click", () => {
        if (item.annotationUID) annotation.state.removeAnnotation(item.annotationUID);
        options.render();
        changed();
      });
      entry.append(show, remove);
      list.append(entry);
    }
  }

  for (const name of EVENTS) eventTarget.addEventListener(name, changed);
  changed();

  return {
    /** Deletes the selected measurements (Delete key). */
    deleteSelected() {
      for (const uid of annotation.selection.getAnnotationsSelected()) annotation.state.removeAnnotation(uid);
      options.render();
      changed();
    },
    refresh: changed,
    teardown() {
      for (const name of EVENTS) eventTarget.removeEventListener(name, changed);
      section.remove();
    },
  };
}

// Corner overlays: who and what (top), where in the stack and how it is displayed (bottom).
import { Enums as csEnums, metaData } from "@cornerstonejs/core";
import { type DicomJson, Tag, isoDate, personName, text } from "../lib/dicomJson";
import { planePosition } from "../lib/imageIds";
import { formatWindowLevel } from "../lib/presets";
import type { StackHandle } from "./stackViewport";

export interface OverlayContext {
  series?: DicomJson;
  total: number;
}

function corner(position: string): HTMLDivElement {
  const div = document.createElement("div");
  div.className = `overlay overlay-${position}`;
  return div;
}

function line(parent: HTMLElement, name: string): HTMLDivElement {
  const div = document.createElement("div");
  div.dataset.overlay = name;
  parent.append(div);
  return div;
}

export function setupOverlays(container: HTMLElement, stack: StackHandle) {
  const topLeft = corner("top-left");
  const topRight = corner("top-right");
  const bottomLeft = corner("bottom-left");
  const bottomRight = corner("bottom-right");
  const patient = line(topLeft, "patient");
  const patientId = line(topLeft, "patient-id");
  const studyDate = line(topRight, "study-date");
  const studyDescription = line(topRight, "study-description");
  const series = line(bottomLeft, "series");
  const slice = line(bottomLeft, "slice");
  const position = line(bottomLeft, "position");
  const windowLevel = line(bottomRight, "window-level");
  const zoom = line(bottomRight, "zoom");
  container.append(topLeft, topRight, bottomLeft, bottomRight);

  let context: OverlayContext = { total: 0 };

  function update(): void {
    const { viewport } = stack;
    const index = viewport.getCurrentImageIdIndex();
    const metadata = context.series;
    if (metadata) {
      patient.textContent = personName(metadata, Tag.PatientName);
      patientId.textContent = text(metadata, Tag.PatientID);
      studyDate.textContent = isoDate(text(metadata, Tag.StudyDate));
      studyDescription.textContent = text(metadata, Tag.StudyDescription);
      const number = text(metadata, Tag.SeriesNumber);
      series.textContent = `Se ${number} ${text(metadata, Tag.SeriesDescription)}`.trim();
    }
    slice.textContent = context.total ? `Im ${index + 1}/${context.total}` : "";
    const plane = imagePosition(stack, index);
    position.textContent = plane ? `${plane.axis} ${plane.value.toFixed(1)} mm` : "";
    const wl = stack.windowLevel();
    windowLevel.textContent = wl ? formatWindowLevel(wl) : "";
    zoom.textContent = `Zoom ${Math.round(viewport.getZoom() * 100)}%`;
  }

  const events = [csEnums.Events.STACK_NEW_IMAGE, csEnums.Events.VOI_MODIFIED, csEnums.Events.CAMERA_MODIFIED, csEnums.Events.IMAGE_RENDERED];
  for (const name of events) stack.element.addEventListener(name, update);

  return {
    setContext(next: OverlayContext) {
      context = next;
      update();
    },
    update,
    teardown() {
      for (const name of events) stack.element.removeEventListener(name, update);
      for (const div of [topLeft, topRight, bottomLeft, bottomRight]) div.remove();
    },
  };
}

function imagePosition(stack: StackHandle, index: number): ReturnType<typeof planePosition> {
  const imageId = stack.viewport.getImageIds()[index];
  if (!imageId) return undefined;
  const plane = metaData.get("imagePlaneModule", imageId) as
    | { imagePositionPatient?: number[]; rowCosines?: number[]; columnCosines?: number[] }
    | undefined;
  if (!plane?.imagePositionPatient || !plane.rowCosines || !plane.columnCosines) return undefined;
  return planePosition(plane.imagePositionPatient, [...plane.rowCosines, ...plane.columnCosines]);
}

export type OverlayHandle = ReturnType<typeof setupOverlays>;

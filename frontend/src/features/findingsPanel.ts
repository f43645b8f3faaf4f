// The findings list: the AI findings of the study's current version (from the server, already ordered
// critical first, then largest and surest), each with its confidence; choosing one shows its slice.
import { type Finding, studyFindings } from "../lib/api";
import { formatFinding } from "../lib/findings";

export function setupFindingsPanel(
  container: HTMLElement,
  options: { slug: string; studyUid: string; onSelect(finding: Finding): void },
) {
  const section = document.createElement("section");
  section.className = "findings";
  section.setAttribute("aria-label", "AI findings");
  const heading = document.createElement("h2");
  heading.textContent = "AI findings";
  const status = document.createElement("p");
  status.className = "findings-status";
  status.textContent = "Loading…";
  const list = document.createElement("ol");
  list.className = "findings-list";
  section.append(heading, status, list);
  container.append(section);

  const loaded = studyFindings(options.slug, options.studyUid).then(
    (findings) => {
      status.textContent = findings.length ? "" : "No AI findings for this study.";
      status.hidden = findings.length > 0;
      for (const finding of findings) {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.findingId = String(finding.id);
        if (finding.critical) button.classList.add("critical");
        const { title, detail } = formatFinding(finding);
        const strong = document.createElement("strong");
        strong.textContent = title;
        const small = document.createElement("span");
        small.textContent = detail;
        button.append(strong, small);
        button.title = `Show the slice of this finding (${finding.model})`;
        button.addEventListener("click", () => {
          for (const other of list.querySelectorAll("button")) other.setAttribute("aria-current", "false");
          button.setAttribute("aria-current", "true");
          options.onSelect(finding);
        });
        item.append(button);
        list.append(item);
      }
      return findings;
    },
    (error: unknown) => {
      // The images stay readable without the AI list; the reader is told it is missing.
      status.textContent = "AI findings could not be loaded.";
      console.error(error);
      return [] as Finding[];
    },
  );

  return {
    loaded,
    teardown() {
      section.remove();
    },
  };
}

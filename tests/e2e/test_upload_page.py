"""The upload page in a real browser: pick files or a folder, watch progress, read the summary per study.

A real Celery worker finishes each batch, as in production: the page polls the batch while it is processed.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest
import requests
from django.conf import settings

from saas.studies.synthetic import ct_series, dataset_bytes
from tenants.enums import Role
from tenants.orthanc import orthanc_endpoint
from tests.conftest import committed
from tests.factories import PASSWORD, person
from tests.studies.upload_worker import django_worker

pytestmark = [pytest.mark.e2e, pytest.mark.orthanc]


@pytest.fixture(scope="module", autouse=True)
def upload_worker(live_platform):
    worker = django_worker("e2e-upload-worker")
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _record_status_lines(page) -> None:
    # The processing lines may pass within a second: keep every text the status line shows.
    page.evaluate(
        """() => {
          const status = document.querySelector("[data-upload-status]");
          window.statusLines = [];
          new MutationObserver(() => window.statusLines.push(status.textContent)).observe(
            status, { childList: true, characterData: true, subtree: true });
        }"""
    )


def _slices(count: int) -> list[bytes]:
    series = ct_series(
        patient_id="E2E-UP-1",
        patient_name="Synthetic^Browser",
        accession_number="ACC-E2E",
        study_description="CT HEAD",
        study_date="20260301",
        slices=count,
        rows=32,
        columns=32,
    )
    return [dataset_bytes(ds) for ds in series]


def _orthanc_instance_count(tenant) -> int:
    endpoint = orthanc_endpoint(tenant)
    return len(requests.get(f"{endpoint.http_url}/instances", auth=endpoint.auth, timeout=10).json())


def _sign_in_as_clinic_staff(page, live_platform):
    tenant, _ = live_platform.tenant_with_token(prefix="e2e-upload")
    user = committed(lambda: person(role=Role.CLINIC_STAFF, tenant=tenant))
    page.goto("/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{live_platform.url}/")
    return tenant


def _screenshot(page, name: str) -> None:
    target = Path(settings.VAR_DIR) / "e2e" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(target), full_page=True)


def test_files_and_a_zip_picked_on_the_page_end_in_a_summary_per_study(page, page_errors, live_platform, tmp_path):
    # given two slices, a DICOMDIR and a zip holding a third slice and a README
    slices = _slices(3)
    (tmp_path / "IM1").write_bytes(slices[0])
    (tmp_path / "IM2").write_bytes(slices[1])
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("IM3", slices[2])
        zipped.writestr("README.txt", "Exported from the clinic's PACS.\n")
    (tmp_path / "study.zip").write_bytes(archive.getvalue())
    tenant = _sign_in_as_clinic_staff(page, live_platform)
    # when clinic staff open the upload page from the start page and choose the files
    page.get_by_role("link", name="Upload studies").click()
    page.wait_for_url(f"{live_platform.url}/upload/")
    _record_status_lines(page)
    page.get_by_label("Choose files").set_input_files(
        [tmp_path / "IM1", tmp_path / "IM2", tmp_path / "DICOMDIR", tmp_path / "study.zip"]
    )
    # then each file gets a progress bar labelled with its name, and the summary shows the one study
    summary = page.locator("[data-upload-summary]")
    summary.wait_for(state="visible", timeout=60_000)
    assert page.get_by_label("study.zip").evaluate("progress => progress.value === progress.max")
    assert page.get_by_label("All files").evaluate("progress => progress.value === progress.max")
    # and while the server worked, the page said which file it was on, then filled the processing bar
    processing = [line for line in page.evaluate("window.statusLines") if "processing file" in line]
    assert processing and processing[0].startswith("Checking the files and storing the images: processing file 1 of 4")
    assert page.get_by_label("Processed").evaluate("progress => progress.value === progress.max")
    row = summary.get_by_role("row").filter(has_text="E2E-UP-1")
    assert row.get_by_role("cell").all_inner_texts() == ["Synthetic, Browser", "E2E-UP-1", "2026-03-01", "CT HEAD", "3"]
    skipped = page.locator("[data-upload-skipped] li").all_inner_texts()
    assert any(text.startswith("DICOMDIR") for text in skipped)
    assert any(text.startswith("study.zip/README.txt") for text in skipped)
    assert page.locator("[data-upload-refused-section]").is_hidden()
    assert page.get_by_role("status").inner_text().startswith("Done: 3 images in 1 study stored.")
    _screenshot(page, "upload.png")
    assert _orthanc_instance_count(tenant) == 3
    assert page_errors == []


def test_a_folder_upload_survives_a_dropped_connection(page, page_errors, live_platform, tmp_path):
    # given a CD export folder: two slices, a thumbnail and notes
    folder = tmp_path / "CD"
    folder.mkdir()
    slices = _slices(2)
    (folder / "IM1").write_bytes(slices[0])
    (folder / "IM2").write_bytes(slices[1])
    (folder / "thumbnail.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\0" * 200)
    (folder / "notes.txt").write_text("Patient arrived late.\n")
    tenant = _sign_in_as_clinic_staff(page, live_platform)
    page.goto("/upload/")
    # and a connection that drops during the first chunk sent
    dropped = []

    def drop_first_chunk(route):
        if route.request.method == "PUT" and not dropped:
            dropped.append(route.request.url)
            route.abort("connectionreset")
        else:
            route.continue_()

    page.route("**/api/v1/uploads/*/files/*", drop_first_chunk)
    # when the folder is chosen
    page.get_by_label("Choose a folder").set_input_files(folder)
    # then the upload resumes after the drop and the folder's extras are listed as skipped, not refused
    summary = page.locator("[data-upload-summary]")
    summary.wait_for(state="visible", timeout=60_000)
    assert len(dropped) == 1
    assert summary.get_by_role("row").filter(has_text="E2E-UP-1").get_by_role("cell").last.inner_text() == "2"
    skipped = page.locator("[data-upload-skipped] li").all_inner_texts()
    assert sorted(text.split(" — ")[0] for text in skipped) == ["CD/notes.txt", "CD/thumbnail.jpg"]
    assert page.locator("[data-upload-refused-section]").is_hidden()
    assert page.locator("[data-upload-failed-section]").is_hidden()
    assert _orthanc_instance_count(tenant) == 2
    assert page_errors == []


def test_a_reload_while_the_server_processes_the_batch_still_ends_in_its_summary(
    page, page_errors, live_platform, upload_worker, tmp_path
):
    # given clinic staff whose upload is sent, while the worker that would process it is frozen
    slices = _slices(2)
    (tmp_path / "IM1").write_bytes(slices[0])
    (tmp_path / "IM2").write_bytes(slices[1])
    tenant = _sign_in_as_clinic_staff(page, live_platform)
    page.goto("/upload/")
    upload_worker.pause()
    try:
        page.get_by_label("Choose files").set_input_files([tmp_path / "IM1", tmp_path / "IM2"])
        # then the page says it is processing the first of the two files
        status = page.get_by_role("status")
        status.filter(has_text="processing file 1 of 2").wait_for(timeout=30_000)
        # when the page is reloaded meanwhile (and the person confirms leaving, if the browser asks)
        page.on("dialog", lambda dialog: dialog.accept())
        page.reload()
        # then it picks the batch up again, still processing
        status.filter(has_text="processing file 1 of 2").wait_for(timeout=30_000)
        assert page.locator("[data-upload-summary]").is_hidden()
    finally:
        upload_worker.resume()
    # and once the worker runs, the summary of the batch sent before the reload is shown
    summary = page.locator("[data-upload-summary]")
    summary.wait_for(state="visible", timeout=60_000)
    assert summary.get_by_role("row").filter(has_text="E2E-UP-1").get_by_role("cell").last.inner_text() == "2"
    assert page.get_by_role("status").inner_text().startswith("Done: 2 images in 1 study stored.")
    assert _orthanc_instance_count(tenant) == 2
    # and a later visit starts afresh
    page.reload()
    assert page.get_by_role("status").inner_text() == ""
    assert page_errors == []


def test_two_loose_files_with_one_name_and_size_are_both_sent(page, page_errors, live_platform):
    # given two slices of one series, both called IM1 on disk (dropped from two folders) and of the same size
    by_size: dict[int, list[bytes]] = {}
    for data in _slices(12):
        by_size.setdefault(len(data), []).append(data)
    first, second = next(same for same in by_size.values() if len(same) >= 2)[:2]
    tenant = _sign_in_as_clinic_staff(page, live_platform)
    page.goto("/upload/")
    # when they are picked together
    page.get_by_label("Choose files").set_input_files(
        [
            {"name": "IM1", "mimeType": "application/dicom", "buffer": first},
            {"name": "IM1", "mimeType": "application/dicom", "buffer": second},
        ]
    )
    # then each is uploaded as a file of its own (the second under a name of its own) and both are stored
    page.locator("[data-upload-summary]").wait_for(state="visible", timeout=60_000)
    assert page.get_by_label("IM1 (2)").evaluate("progress => progress.value === progress.max")
    assert page.get_by_role("status").inner_text().startswith("Done: 2 images in 1 study stored.")
    assert _orthanc_instance_count(tenant) == 2
    assert page_errors == []


def test_a_session_that_ended_stops_the_upload_with_words_a_person_can_act_on(page, page_errors, live_platform):
    # given a clinic user on the upload page whose session then ends (signed out in another tab, or expired)
    _sign_in_as_clinic_staff(page, live_platform)
    page.goto("/upload/")
    page.context.clear_cookies(name="sessionid")
    # when files are picked
    page.get_by_label("Choose files").set_input_files(
        [
            {"name": f"IM{index}", "mimeType": "application/dicom", "buffer": data}
            for index, data in enumerate(_slices(2))
        ]
    )
    # then the page says once that the session ended and how to go on, instead of failing every file
    status = page.get_by_role("status")
    status.filter(has_text="The upload stopped").wait_for(timeout=30_000)
    assert "Sign in again, then pick the same files" in status.inner_text()
    assert page_errors == []

"""STOW-RS on the wire: the gateway's streamed body parses as the platform parses it, and its answers are read right."""

import email.parser
import io
import json

import pytest

from saas.dicomweb.multipart import iter_parts
from saas.gateway.stow import MultipartBody, failure_is_permanent, parse_stow_response


def _files(tmp_path, contents: list[bytes]):
    files = []
    for index, content in enumerate(contents):
        path = tmp_path / f"{index}.dcm"
        path.write_bytes(content)
        files.append(path.open("rb"))
    return files


def test_the_streamed_body_has_the_announced_length_and_parses_back_to_the_files(tmp_path):
    # given three files, one larger than a streaming chunk and one that contains CRLF and dashes
    contents = [b"\0" * 128 + b"DICM" + b"a" * 10, b"x" * (3 * 1024 * 1024 + 17), b"\r\n--not-the-boundary\r\n"]
    files = _files(tmp_path, contents)
    body = MultipartBody(files)
    # when it is streamed
    chunks = list(body)
    raw = b"".join(chunks)
    # then the Content-Length announced up front is exact, and no chunk is bigger than one read
    assert len(raw) == len(body) and max(map(len, chunks)) <= 1024 * 1024
    # and the platform's own multipart reader gets each file back, typed application/dicom
    parts = list(iter_parts(io.BytesIO(raw), body.boundary, max_part_bytes=2**30, max_total_bytes=2**31))
    assert [part.read() for part in parts] == contents
    assert {part.content_type for part in parts} == {"application/dicom"}
    # and so does a generic MIME parser, from the Content-Type header the request carries
    message = email.parser.BytesParser().parsebytes(b"Content-Type: " + body.content_type.encode() + b"\r\n\r\n" + raw)
    assert message.get_content_type() == "multipart/related" and message.get_param("type") == "application/dicom"
    assert [part.get_payload(decode=True) for part in message.get_payload()] == contents
    for file in files:
        file.close()


def test_a_file_that_shrinks_while_streaming_is_an_error_not_a_short_body(tmp_path):
    [file] = _files(tmp_path, [b"y" * 1000])
    body = MultipartBody([file])
    (tmp_path / "0.dcm").write_bytes(b"y" * 10)
    with pytest.raises(OSError, match="shrank"):
        list(body)
    file.close()


def _ui(value):
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def test_the_platforms_answer_is_split_into_stored_and_failed_instances():
    # given a 202 body shaped as the platform writes it, one failure without a UID (an unreadable part)
    body = {
        "00081190": {"vr": "UR", "Value": ["http://p/dicomweb/c/studies/1.2"]},
        "00081199": {
            "vr": "SQ",
            "Value": [
                {"00081150": _ui("1.2.840.10008.5.1.4.1.1.2"), "00081155": _ui("1.2.3.1"), "00081190": {"vr": "UR"}}
            ],
        },
        "00081198": {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": _ui("1.2.840.10008.5.1.4.1.1.2"),
                    "00081155": _ui("1.2.3.2"),
                    "00081197": {"vr": "US", "Value": [0x0110]},
                    "00000902": {"vr": "LO", "Value": ["store unavailable; retry"]},
                },
                {
                    "00081150": _ui(""),
                    "00081155": _ui(""),
                    "00081197": {"vr": "US", "Value": [0xC000]},
                    "00000902": {"vr": "LO", "Value": ["part 3: not a DICOM file"]},
                },
            ],
        },
    }
    # when it is parsed
    result = parse_stow_response(json.dumps(body).encode())
    # then the stored and failed instances, their codes and comments come out
    assert result.stored == ["1.2.3.1"]
    transient, unreadable = result.failed
    assert (transient.sop_instance_uid, transient.reason_code, transient.permanent) == ("1.2.3.2", 0x0110, False)
    assert transient.describe() == "FailureReason 0x0110 (processing failure): store unavailable; retry"
    assert (unreadable.sop_instance_uid, unreadable.permanent) == ("", True)


@pytest.mark.parametrize(
    ("code", "permanent"),
    [
        (0xA700, False),
        (0x0110, False),
        (0xC000, True),
        (0xA900, True),
        (0x0122, True),
        (0xC122, True),
        (0xA7FF, False),
        (0xC411, True),
        (0xA901, True),
        (None, False),
        (0x0999, False),
    ],
)
def test_failure_reasons_are_transient_or_permanent_as_the_contract_says(code, permanent):
    # unknown codes are retried: setting an instance aside cannot be undone by the gateway itself
    assert failure_is_permanent(code) is permanent


@pytest.mark.parametrize("body", [b"<html>502</html>", b"[]", b'"stored"'])
def test_an_answer_that_is_not_dicom_json_is_reported_as_unreadable(body):
    from saas.gateway.stow import UnreadableResponse

    with pytest.raises(UnreadableResponse):
        parse_stow_response(body)

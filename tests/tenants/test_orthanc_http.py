"""The kept-alive client for tenants' Orthancs: answers read as the standard library reads them."""

import http.client
import io

import pytest

from tenants import orthanc_http


class _Received:
    """What http.client reads an answer from: the bytes a socket would deliver."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def makefile(self, mode: str) -> io.BufferedReader:
        return io.BufferedReader(io.BytesIO(self.data))


def _answer(data: bytes) -> http.client.HTTPResponse:
    answer = orthanc_http._Answer(_Received(data), method="GET")
    answer.begin()
    return answer


def test_orthancs_answer_headers_read_as_the_standard_library_reads_them():
    # given a multipart frame answer as Orthanc sends it, and a chunked one with repeated headers
    boundary = "64436ae0-7200-454f-94b7-b48e0566bf9c"
    frame = (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=1\r\n"
        b'Content-Type: multipart/related; type="application/octet-stream"; boundary=' + boundary.encode() + b"\r\n"
        b"Content-Length: 5\r\n\r\nhello"
    )
    chunked = (
        b"HTTP/1.1 404 Not Found\r\nset-cookie: a=1\r\nSet-Cookie: b=2\r\nX-Empty:\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    )
    for data in (frame, chunked):
        # when the relay reads it, then status, headers and body are what http.client's own reading gives
        ours = _answer(data)
        stdlib = http.client.HTTPResponse(_Received(data), method="GET")
        stdlib.begin()
        assert (ours.status, ours.reason, ours.version) == (stdlib.status, stdlib.reason, stdlib.version)
        assert ours.headers.items() == stdlib.headers.items()
        assert (ours.chunked, ours.length, ours.will_close) == (stdlib.chunked, stdlib.length, stdlib.will_close)
        assert ours.read() == stdlib.read()
    answer = _answer(frame)
    assert answer.headers.get("content-type").endswith(f"boundary={boundary}") and answer.length == 5
    assert _answer(chunked).headers.get_all("SET-COOKIE") == ["a=1", "b=2"]


def test_a_folded_header_is_joined_and_a_malformed_one_refused():
    folded = _answer(b"HTTP/1.1 200 OK\r\nX-Note: first\r\n second\r\nContent-Length: 0\r\n\r\n")
    assert folded.headers["X-Note"] == "first second" and folded.length == 0
    for line in (b"no colon here", b": no name", b"Space Before : colon"):
        with pytest.raises(http.client.HTTPException, match="malformed header line"):
            _answer(b"HTTP/1.1 200 OK\r\n" + line + b"\r\n\r\n")
    with pytest.raises(http.client.UnknownProtocol):
        _answer(b"HTTP/2.0 200 OK\r\n\r\n")


def test_an_interim_1xx_answer_is_skipped_as_the_standard_library_skips_it():
    # given a 100 Continue (with a header of its own) before the real answer
    data = (
        b"HTTP/1.1 100 Continue\r\nX-Interim: yes\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
    )
    # when the relay reads it, then it reads the final answer only, as http.client does
    ours = _answer(data)
    stdlib = http.client.HTTPResponse(_Received(data), method="GET")
    stdlib.begin()
    assert (ours.status, ours.headers.items(), ours.read()) == (stdlib.status, stdlib.headers.items(), stdlib.read())
    assert ours.status == 200 and "X-Interim" not in ours.headers


def test_a_body_cut_short_of_its_content_length_is_an_error_not_a_shorter_file():
    # given Orthanc's answer announcing 100 bytes whose connection ends after 10 (Orthanc killed mid-answer)
    cut = _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10)
    whole = _answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n" + b"x" * 10)
    # when it is read in chunks (archive, relay), then the short body raises instead of ending quietly
    response = orthanc_http.OrthancResponse(pool=None, connection=None, answer=cut)
    with pytest.raises(http.client.IncompleteRead):
        b"".join(response.iter_raw(4))
    assert b"".join(orthanc_http.OrthancResponse(pool=None, connection=None, answer=whole).iter_raw(4)) == b"x" * 10

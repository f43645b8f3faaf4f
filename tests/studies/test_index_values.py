"""How the sync turns Orthanc's tags into index values: nothing a sender writes may fail the batch's insert."""

import pytest

from saas.studies.services import _int, _text


@pytest.mark.parametrize(
    ("value", "expected"),
    [("12", 12), (" -3 ", -3), ("2147483647", 2**31 - 1), ("-2147483648", -(2**31)), ("3000000000", None),
     ("-99999999999", None), ("1.5", None), ("", None), (["1", "2"], None)],
)  # fmt: skip
def test_integers_beyond_what_an_integer_string_holds_are_left_out(value, expected):
    assert _int({"InstanceNumber": value}, "InstanceNumber") == expected


def test_texts_lose_nuls_and_are_cut_to_the_column():
    assert _text({"StudyDescription": "CT\x00ABDOMEN \x00"}, "StudyDescription", 64) == "CTABDOMEN"
    assert _text({"ReferringPhysicianName": ["A^B", "C^D"]}, "ReferringPhysicianName", 5) == "A^B\\C"

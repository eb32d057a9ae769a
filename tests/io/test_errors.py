"""ImageReadError and the errors turned into it (kmdist.io._errors)."""

from __future__ import annotations

import pickle

import pytest

from kmdist.io._errors import ImageReadError, decode_errors, describe


def test_image_read_error_pickles():
    err = ImageReadError("a.zip::x.png", "empty file")
    again = pickle.loads(pickle.dumps(err))
    assert isinstance(again, ValueError)
    assert (again.source, again.problem, str(again)) == (
        "a.zip::x.png",
        "empty file",
        "a.zip::x.png: empty file",
    )


def test_describe_says_what_went_wrong_in_few_words():
    assert describe(FileNotFoundError(2, "No such file or directory", "x.png")) == (
        "No such file or directory"
    )
    assert describe(OSError("no strerror here")) == "no strerror here"
    assert describe(ValueError("broken data stream")) == "broken data stream"
    assert describe(KeyError()) == "KeyError"  # no message: the type's name


def test_decode_errors_name_the_source_and_keep_the_cause():
    with pytest.raises(ImageReadError) as err, decode_errors("a.zip::b.png"):
        raise OSError("image file is truncated")
    assert str(err.value) == "a.zip::b.png: cannot decode the image (image file is truncated)"
    assert err.value.source == "a.zip::b.png"
    assert isinstance(err.value.__cause__, OSError)
    # Our own error and MemoryError pass through as they are.
    inner = ImageReadError("x.png", "empty file")
    with pytest.raises(ImageReadError) as err, decode_errors("other.png"):
        raise inner
    assert err.value is inner
    with pytest.raises(MemoryError), decode_errors("x.png"):
        raise MemoryError
    with decode_errors("x.png"):
        pass  # nothing raised, nothing changed

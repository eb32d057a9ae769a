"""open_image and open_images (kmdist.io._open), the public entry points."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
import tifffile
from PIL import Image

from kmdist.io._errors import ImageReadError
from kmdist.io._open import open_image, open_images

from ._helpers import rgb, save


@pytest.mark.slow
def test_on_local_cluster(tmp_path, rng, local_client):
    a = rgb(rng, 1100, 300)
    tifffile.imwrite(tmp_path / "t.tif", a, tile=(256, 256))
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("a.png", buf.getvalue())
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:5000])
    for ref in open_images([tmp_path / "t.tif", tmp_path / "z.zip"]):
        np.testing.assert_array_equal(local_client.compute(ref.open()).result(), a)
    with pytest.raises(ImageReadError, match=r"cut\.png: cannot decode"):
        local_client.compute(open_image(tmp_path / "cut.png")).result()


def test_archive_member_syntax_and_files_whose_name_holds_it(tmp_path, rng):
    a, b = rgb(rng, 9, 11), rgb(rng, 12, 5)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    with zipfile.ZipFile(tmp_path / "z.zip", "w") as zf:
        zf.writestr("sub/a.png", buf.getvalue())
    np.testing.assert_array_equal(open_image(f"{tmp_path / 'z.zip'}::sub/a.png").compute(), a)
    # A file that really is named like that is the file, not a member.
    odd = tmp_path / "z.zip::sub"
    odd.mkdir()
    save(odd / "a.png", b)
    np.testing.assert_array_equal(open_image(odd / "a.png").compute(), b)
    # "::" after a name that is no archive is part of a file name.
    with pytest.raises(ImageReadError, match="file not found") as err:
        open_image(tmp_path / "plain.png::x.png")
    assert err.value.source == str(tmp_path / "plain.png::x.png")


def test_open_images_takes_one_input_or_many(tmp_path, rng):
    a, b = rgb(rng), rgb(rng)
    save(tmp_path / "a.png", a)
    save(tmp_path / "b.png", b)
    for one in (tmp_path / "a.png", str(tmp_path / "a.png")):
        [ref] = open_images(one)
        assert (ref.name, ref.source) == ("a", str(tmp_path / "a.png"))
    refs = open_images((str(tmp_path / "b.png"), tmp_path / "a.png"))
    assert [r.name for r in refs] == ["b", "a"]  # in the order given
    np.testing.assert_array_equal(refs[0].open().compute(), b)
    assert open_images([]) == []

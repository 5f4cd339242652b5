"""The review page's parts without a browser: lesion views, the session, the HTTP routes."""

import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image

from deeplesion_tf.categorize import review as review_lib
from deeplesion_tf.categorize import review_server
from deeplesion_tf.categorize import review_views
from deeplesion_tf.data import label_files
from deeplesion_tf.data import png16

WINDOWS = {"soft_tissue": (-160.0, 240.0), "lung": (-1350.0, 150.0)}


def _slice():
    """`[40, 50]` HU with a distinct value per pixel: `row * 100 + column - 1000`."""
    rows, columns = np.mgrid[0:40, 0:50]
    return (rows * 100 + columns - 1000).astype(np.float32)


def test_a_view_centres_the_lesion_keeps_its_pixels_and_pads_with_air():
    hu = _slice()
    # Long axis (10, 20)-(30, 20), short axis (20, 16)-(20, 24): extent 20 x 8 px, centre (20, 20).
    measurement = [10, 20, 30, 20, 20, 16, 20, 24]
    view = review_views.crop_view(hu, measurement, min_side=8, context=2.5)
    assert view.hu.shape == (50, 50) and view.hu.dtype == np.int16  # ceil(2.5 * 20)
    # origin = round(centre - 24.5) = (-4, -4) as (x, y): view pixel (r, c) is slice (r - 4, c - 4).
    np.testing.assert_array_equal(view.bookmark, [14, 24, 34, 24, 24, 20, 24, 28])
    assert view.hu[24, 24] == hu[20, 20] == 1020
    assert view.hu[4, 4] == hu[0, 0] and view.hu[43, 4] == hu[39, 0]
    assert (view.hu[:4] == review_views.AIR_HU).all()  # above the slice
    assert (view.hu[44:] == review_views.AIR_HU).all()  # below it: slice rows 40 on
    # Every bookmark end point reads the slice's value at that point.
    for x, y in np.asarray(measurement).reshape(4, 2):
        assert view.hu[int(y) + 4, int(x) + 4] == hu[int(y), int(x)]
    small = review_views.crop_view(hu, measurement, min_side=64, context=1.0)
    assert small.hu.shape == (64, 64)


def test_views_come_from_the_examples_png_and_name_what_is_missing(tmp_path):
    hu = _slice()
    example = {"image": png16.encode_hu(hu),
               "lesions": {"lesion_id": np.array([b"a", b"b"]),
                           "measurement": np.array([[10, 20, 30, 20, 20, 16, 20, 24],
                                                    [2, 2, 6, 2, 4, 1, 4, 3]], np.float32)}}
    views = review_views.collect_views([example], {"b"}, min_side=16)
    assert sorted(views) == ["b"] and views["b"].hu.shape == (16, 16)
    x, y = 2, 2
    bx, by = views["b"].bookmark[:2]
    assert views["b"].hu[int(by), int(bx)] == hu[y, x]
    with pytest.raises(ValueError, match=r"1 lesions of the review sample .*first: zz"):
        review_views.collect_views([example], {"a", "zz"})
    both = review_views.collect_views([example], {"a", "b"})
    path = str(tmp_path / review_views.VIEWS_FILE)
    review_views.save_views(path, both)
    again = review_views.load_views(path)
    assert sorted(again) == ["a", "b"]
    for lesion in both:
        np.testing.assert_array_equal(again[lesion].hu, both[lesion].hu)
        np.testing.assert_array_equal(again[lesion].bookmark, both[lesion].bookmark)


def test_the_view_is_rendered_under_its_window():
    view = review_views.LesionView(np.array([[-160, 40], [240, 1000]], np.int16),
                                   np.zeros(8, np.float32))
    png = review_views.render_png(view, (-160, 240), display_px=2)
    pixels = np.asarray(Image.open(io.BytesIO(png)))
    np.testing.assert_array_equal(pixels, [[0, 128], [255, 255]])  # 40 HU: 200 / 400 * 255


def _session(tmp_path):
    sample = {1: ["P01-a", "P01-b", "P02-c"], 2: ["P03-d", "P03-e"]}
    views = {lesion: review_views.crop_view(_slice(), [10, 20, 30, 20, 20, 16, 20, 24], 8)
             for lesions in sample.values() for lesion in lesions}
    return review_server.ReviewSession(str(tmp_path), review_lib.Review(sample, per_cluster=3),
                                       views, {1: 3, 2: 2}, WINDOWS)


def test_the_session_writes_every_change_and_serves_the_next_unanswered(tmp_path):
    session = _session(tmp_path)
    with pytest.raises(ValueError, match="name cluster 1 before"):
        session.answer(1, 0, True)
    session.set_name(1, "lung nodule")
    session.set_name(2, None, mixed=True)
    assert label_files.read_names(str(tmp_path / "names.csv")) == {1: "lung nodule",
                                                                   2: review_lib.MIXED}
    assert session.screen(1)["position"] == 0
    session.answer(1, 0, True)
    session.answer(1, 1, False)
    screen = session.screen(1)
    assert (screen["position"], screen["answered"], screen["belongs"]) == (2, 2, None)
    assert session.screen(1, 1)["belongs"] is False
    # (10, 20) in a 50 px view from origin (-4, -4): (14 + 0.5) / 50.
    assert screen["bookmark"][:2] == [pytest.approx(0.29), pytest.approx(0.49)]
    session.answer(1, 1, True)  # changed mind: the last answer counts
    session.answer(1, 2, False)
    assert session.screen(1)["position"] is None
    saved = review_lib.load(str(tmp_path))
    assert saved.latest() == {"P01-a": True, "P01-b": True, "P02-c": False}
    assert len(saved.answers) == 4
    purity = json.loads((tmp_path / "purity.json").read_text())["clusters"]
    assert (purity[0]["belongs"], purity[0]["reviewed"]) == (2, 3)
    with pytest.raises(ValueError, match="positions 0-2, not 3"):
        session.answer(1, 3, True)
    with pytest.raises(ValueError, match="no window 'bone'"):
        session.view_png(1, 0, "bone")
    with pytest.raises(ValueError, match="no cluster 7"):
        session.screen(7)


@pytest.fixture
def server(tmp_path):
    session = _session(tmp_path)
    server = review_server.make_server(session)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", session
    server.shutdown()
    server.server_close()


def _request(url, body=None, kind="application/json"):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": kind})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_the_routes_answer_and_refuse_what_is_not_json(server, tmp_path):
    url, _ = server
    status, page = _request(url + "/")
    assert status == 200 and b"/review.js" in page
    status, body = _request(url + "/api/name", {"cluster": 1, "name": "liver lesion"})
    assert status == 200 and json.loads(body)["clusters"][0]["name"] == "liver lesion"
    status, body = _request(url + "/api/answer", {"cluster": 1, "position": 0, "belongs": True},
                            kind="text/plain")
    assert status == 415 and review_lib.load(str(tmp_path)).answers == []
    status, body = _request(url + "/api/answer", {"cluster": 1, "position": 0, "belongs": "yes"})
    assert status == 400 and b"true or false" in body
    status, _ = _request(url + "/api/answer", {"cluster": 1, "position": 0, "belongs": True})
    assert status == 200 and review_lib.load(str(tmp_path)).latest() == {"P01-a": True}
    status, png = _request(url + "/view/1/0.png?window=lung")
    assert status == 200 and Image.open(io.BytesIO(png)).size == (review_server.DISPLAY_PX,) * 2
    status, body = _request(url + "/view/1/9.png?window=lung")
    assert status == 400 and b"positions 0-2" in body
    assert _request(url + "/nothing")[0] == 404
    assert _request(url + "/montage/1.png")[0] == 404  # the run has no montage


def test_nothing_the_page_receives_names_a_lesion(server):
    url, session = server
    session.set_name(1, "LV")
    texts = [_request(url + path)[1] for path in
             ("/", "/review.js", "/api/state", "/api/screen?cluster=1",
              "/api/screen?cluster=2&position=1")]
    for lesion in ("P01-a", "P01-b", "P02-c", "P03-d", "P03-e"):
        assert not any(lesion.encode() in text for text in texts)

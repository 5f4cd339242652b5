"""The cluster review page: a local web server over one categorizer run (paper Sec. 3).

The page (`review_page/`, plain HTML and JavaScript, no build step) shows every
cluster with its montage and size and a form to name it or mark it mixed / noisy,
and then the purity sample, one lesion per screen (`review_views`), each judged as
belonging to its cluster or not, by key or click. Every change is written to the run
directory before the server answers (`review.json`, `names.csv`, `purity.json`, see
`review`), so a closed tab or a killed server loses nothing and the review goes on
where it stopped.

The standard library's `http.server` is enough for one reviewer on one machine and
adds no dependency. It binds 127.0.0.1 unless told otherwise. Changes are POSTs of
JSON only: a page of another site cannot send JSON to it without a CORS preflight,
which this server never grants. Lesions are addressed by cluster and position in the
sample, so neither the page nor its URLs carry a lesion id.

Routes:
  GET  /                               the page
  GET  /api/state                      clusters, names, progress, purity, windows
  GET  /api/screen?cluster=C[&position=P]   a lesion of the sample (the next unanswered)
  GET  /view/C/P.png?window=W          the lesion's view under window W
  GET  /montage/C.png                  the cluster's montage
  POST /api/name     {"cluster", "name"} or {"cluster", "mixed": true}
  POST /api/answer   {"cluster", "position", "belongs"}
  POST /api/reviewer {"name"}
"""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import threading
import urllib.parse
from typing import Mapping, Optional, Sequence, Tuple

from absl import logging

from deeplesion_tf.categorize import review as review_lib
from deeplesion_tf.categorize import review_views
from deeplesion_tf.data import label_files

PAGE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "review_page")
DISPLAY_PX = 512
_STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
           "/review.js": ("review.js", "text/javascript; charset=utf-8"),
           "/review.css": ("review.css", "text/css; charset=utf-8")}


class ReviewSession:
    """One run's review, written to the run directory after every change. Thread-safe.

    Args:
      run_dir: the categorizer's output directory.
      review: the review to continue (`review.load`) or a new one.
      views: `{lesion_id: LesionView}` for every lesion of `review.sample`.
      cluster_sizes: `{cluster: lesions}` of the whole run.
      windows: `{name: (low, high)}` HU windows the reviewer can choose, the first the default.
    """

    def __init__(self, run_dir: str, review: review_lib.Review,
                 views: Mapping[str, review_views.LesionView], cluster_sizes: Mapping[int, int],
                 windows: Mapping[str, Tuple[float, float]]):
        missing = [lesion for lesions in review.sample.values() for lesion in lesions
                   if lesion not in views]
        if missing:
            raise ValueError(f"{len(missing)} lesions of the sample have no view")
        if not windows:
            raise ValueError("no windows to show the lesions in")
        self.run_dir = run_dir
        self.review = review
        self.views = views
        self.cluster_sizes = dict(cluster_sizes)
        self.windows = dict(windows)
        self._lock = threading.Lock()

    def state(self) -> dict:
        with self._lock:
            progress = self.review.progress()
            purity = {row.cluster: row for row in review_lib.purity(self.review)}
            return {
                "reviewer": self.review.reviewer,
                "simulated": self.review.simulated,
                "per_cluster": self.review.per_cluster,
                "windows": [{"name": name, "low": low, "high": high}
                            for name, (low, high) in self.windows.items()],
                "clusters": [{
                    "cluster": cluster,
                    "size": self.cluster_sizes.get(cluster, 0),
                    "name": self.review.names.get(cluster),
                    "mixed": self.review.names.get(cluster) == review_lib.MIXED,
                    "answered": progress[cluster][0],
                    "sample_size": progress[cluster][1],
                    "purity": _purity_dict(purity[cluster]),
                    "montage": os.path.exists(_montage_path(self.run_dir, cluster)),
                } for cluster in sorted(self.review.sample)],
            }

    def set_name(self, cluster: int, name: Optional[str], mixed: bool = False) -> None:
        with self._lock:
            self.review.name(cluster, review_lib.MIXED if mixed else (name or ""))
            self.persist()

    def set_reviewer(self, name: str) -> None:
        with self._lock:
            self.review.reviewer = name.strip() or None
            self.persist()

    def screen(self, cluster: int, position: Optional[int] = None) -> dict:
        """A lesion of `cluster`'s sample: at `position`, or the first unanswered one.

        Returns `{"cluster", "position", "sample_size", "answered", "belongs"}` (the last
        answer given, or None), with `position` None once every lesion is answered, and
        the bookmark as fractions of the view's side (`bookmark`, for the page to draw).
        """
        with self._lock:
            lesions = self._sample(cluster)
            done = self.review.latest()
            if position is None:
                position = next((p for p, lesion in enumerate(lesions) if lesion not in done),
                                None)
            else:
                self._lesion(cluster, position)
            screen = {"cluster": cluster, "name": self.review.names.get(cluster),
                      "position": position, "sample_size": len(lesions),
                      "answered": self.review.progress()[cluster][0], "belongs": None,
                      "bookmark": None}
            if position is not None:
                view = self.views[lesions[position]]
                side = view.hu.shape[0]
                # Pixel centres at integers: pixel p covers [p, p + 1) of the side.
                screen["bookmark"] = [(float(v) + 0.5) / side for v in view.bookmark]
                screen["belongs"] = done.get(lesions[position])
            return screen

    def answer(self, cluster: int, position: int, belongs: bool) -> None:
        with self._lock:
            lesion = self._lesion(cluster, position)
            if cluster not in self.review.names:
                raise ValueError(f"name cluster {cluster} before reviewing its purity")
            self.review.answer(lesion, bool(belongs))
            self.persist()

    def view_png(self, cluster: int, position: int, window: str) -> bytes:
        if window not in self.windows:
            raise ValueError(f"no window {window!r}; choose from {sorted(self.windows)}")
        return review_views.render_png(self.views[self._lesion(cluster, position)],
                                       self.windows[window], DISPLAY_PX)

    def montage(self, cluster: int) -> bytes:
        self._sample(cluster)
        with open(_montage_path(self.run_dir, cluster), "rb") as f:
            return f.read()

    def _lesion(self, cluster: int, position: int) -> str:
        """The lesion id at `position` of `cluster`'s sample."""
        lesions = self._sample(cluster)
        if not 0 <= position < len(lesions):
            raise ValueError(f"cluster {cluster} has positions 0-{len(lesions) - 1}, "
                             f"not {position}")
        return lesions[position]

    def _sample(self, cluster: int) -> Sequence[str]:
        if cluster not in self.review.sample:
            raise ValueError(f"no cluster {cluster}; the run has {sorted(self.review.sample)}")
        return self.review.sample[cluster]

    def persist(self) -> None:
        """Writes `review.json`, `names.csv` and `purity.json` as the review stands."""
        review_lib.save(self.review, self.run_dir)
        label_files.write_names(os.path.join(self.run_dir, review_lib.NAMES_FILE),
                                self.review.names)
        review_lib.write_purity(self.review, self.run_dir)


def _montage_path(run_dir: str, cluster: int) -> str:
    return os.path.join(run_dir, f"montage_cluster_{cluster}.png")


def _purity_dict(row: review_lib.ClusterPurity) -> dict:
    return {key: value for key, value in dataclasses.asdict(row).items()
            if key in ("belongs", "reviewed", "estimate", "low", "high", "paper")}


class _Handler(http.server.BaseHTTPRequestHandler):
    session: ReviewSession  # Set on the subclass `make_server` builds.

    def do_GET(self):  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
        parts = url.path.strip("/").split("/")
        try:
            if url.path in _STATIC:
                name, kind = _STATIC[url.path]
                with open(os.path.join(PAGE_DIR, name), "rb") as f:
                    return self._send(200, f.read(), kind)
            if url.path == "/api/state":
                return self._json(200, self.session.state())
            if url.path == "/api/screen":
                position = query.get("position")
                return self._json(200, self.session.screen(
                    int(query["cluster"]), None if position in (None, "") else int(position)))
            if len(parts) == 3 and parts[0] == "view" and parts[2].endswith(".png"):
                return self._send(200, self.session.view_png(
                    int(parts[1]), int(parts[2][:-4]), query.get("window", "")), "image/png",
                    cache=True)
            if len(parts) == 2 and parts[0] == "montage" and parts[1].endswith(".png"):
                return self._send(200, self.session.montage(int(parts[1][:-4])), "image/png")
        except (ValueError, KeyError) as error:
            return self._json(400, {"error": _message(error)})
        except FileNotFoundError:
            pass
        if url.path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        self._json(404, {"error": f"not found: {url.path}"})

    def do_POST(self):  # noqa: N802
        if self.headers.get("Content-Type", "").split(";")[0].strip() != "application/json":
            return self._json(415, {"error": "changes are sent as application/json"})
        try:
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            if self.path == "/api/name":
                self.session.set_name(int(body["cluster"]), body.get("name"),
                                      bool(body.get("mixed", False)))
            elif self.path == "/api/answer":
                self.session.answer(int(body["cluster"]), int(body["position"]),
                                    _boolean(body["belongs"]))
            elif self.path == "/api/reviewer":
                self.session.set_reviewer(str(body.get("name") or ""))
            else:
                return self._json(404, {"error": f"not found: {self.path}"})
        except (ValueError, KeyError, TypeError) as error:
            return self._json(400, {"error": _message(error)})
        self._json(200, self.session.state())

    def _json(self, status: int, value) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        logging.debug("review page: " + format, *args)


def _boolean(value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"belongs must be true or false, got {value!r}")
    return value


def _message(error: Exception) -> str:
    return f"missing {error}" if isinstance(error, KeyError) else str(error)


def make_server(session: ReviewSession, host: str = "127.0.0.1",
                port: int = 0) -> http.server.ThreadingHTTPServer:
    """A server for `session` on `host:port` (port 0: a free one; see `server_address`)."""
    handler = type("ReviewHandler", (_Handler,), {"session": session})
    return http.server.ThreadingHTTPServer((host, port), handler)


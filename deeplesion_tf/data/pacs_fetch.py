"""Pulling the bookmarks and their key slices from a DICOM server (`bin/fetch_from_pacs`).

By DICOMweb (`dicomweb.Connection`): a QIDO-RS search for SR instances; each report
retrieved (WADO-RS) and read as TID 1500 bookmarks (`sr_bookmarks`); for each series
holding a key image, its metadata (WADO-RS, every header without pixel data) orders
the series head to feet, and the key slices with `context_slices` neighbours on each
side are retrieved in full. Every other slice of the series is written as its header
alone, so that the `pacs` source sees the whole series - its slice index, slice
interval and the gap check of its neighbours are those of a complete export - while
only the slices it reads pixels of cross the network. The result is the folder the
`pacs` config builds from:

    sr/<study>/<report>.dcm                   the reports, as retrieved
    dicom/<study>/<series>/<index:05d>.dcm    key slices and neighbours, as retrieved
    dicom/<study>/<series>/<index:05d>.header.dcm   the other slices' headers
    .fetch/                                   what a re-run needs to resume

`<study>`, `<series>`, `<report>` are `deid.pseudonym`s (the site's salt), `<index>`
the slice's place in its series from head to feet: no path holds an identifier, and
the files under `.fetch/` hold none either. The DICOM files themselves carry the
patient's identifiers as every PACS export does; the dataset builder pseudonymises
them.

Resumable: every file is written whole or not at all (the temporary file lies in
`.fetch/tmp/`, outside the tree the builder reads), a series is marked complete
once all its files are written, and a re-run retrieves only what is missing. A
report that does not parse is kept (the builder counts it as `malformed_report`),
and a key image the server does not have is named in the summary.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from typing import Dict, Iterable, List, Optional, Set, Tuple

import pydicom
from absl import logging

from deeplesion_tf.data import atomic_file
from deeplesion_tf.data import ct_reader
from deeplesion_tf.data import deid
from deeplesion_tf.data import dicomweb
from deeplesion_tf.data import pacs_source
from deeplesion_tf.data import sr_bookmarks

STATE_FOLDER = ".fetch"
HEADER_SUFFIX = ".header.dcm"
_PIXEL_DATA = "7FE00010"


@dataclasses.dataclass
class FetchSummary:
    """What a fetch found and did.

    Attributes:
      reports: SR instances the search found.
      reports_retrieved: of those, retrieved in this run (the rest were on disk).
      unreadable_reports: reports that are not TID 1500 measurement reports (kept).
      series: series holding a key image.
      series_already_complete: of those, complete from an earlier run.
      instances_retrieved: key slices and neighbours retrieved in this run.
      instances_present: key slices and neighbours already on disk.
      headers_written: other slices written as their header.
      problems: what could not be fetched, by pseudonym (never an identifier).
    """

    reports: int = 0
    reports_retrieved: int = 0
    unreadable_reports: int = 0
    series: int = 0
    series_already_complete: int = 0
    instances_retrieved: int = 0
    instances_present: int = 0
    headers_written: int = 0
    problems: List[str] = dataclasses.field(default_factory=list)


class _Tree:
    """Paths of the fetched folder, and atomic writes into it."""

    def __init__(self, output_dir: str, salt: str):
        self.root = output_dir
        self.salt = salt
        self.state = os.path.join(output_dir, STATE_FOLDER)
        self.temp = os.path.join(self.state, "tmp")
        # A killed run's temporary files are worthless: a file is only kept once renamed.
        shutil.rmtree(self.temp, ignore_errors=True)
        os.makedirs(self.temp)

    def name(self, kind: str, uid: str) -> str:
        return deid.pseudonym(self.salt, kind, uid)

    def report(self, study: str, sop: str) -> str:
        return os.path.join(self.root, pacs_source.REPORTS_FOLDER, self.name("study", study),
                            self.name("instance", sop) + ".dcm")

    def series_folder(self, study: str, series: str) -> str:
        return os.path.join(self.root, "dicom", self.name("study", study),
                            self.name("series", series))

    def marker(self, series: str) -> str:
        return os.path.join(self.state, "series", self.name("series", series) + ".json")

    def write(self, path: str, content: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_file.write_atomically(path, content, temp_dir=self.temp)


def _uids(attributes: dict) -> Tuple[str, str, str]:
    """Study, series and instance UID of a QIDO/metadata JSON object."""
    def value(tag):
        return str((attributes.get(tag, {}).get("Value") or [""])[0])

    return value("0020000D"), value("0020000E"), value("00080018")


def _header(attributes: dict) -> pydicom.Dataset:
    """A series-metadata JSON object as a DICOM file's dataset without its bulk data."""
    kept = {tag: element for tag, element in attributes.items()
            if "BulkDataURI" not in element and tag != _PIXEL_DATA}
    dataset = pydicom.Dataset.from_json(kept)
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = dataset.SOPClassUID
    meta.MediaStorageSOPInstanceUID = dataset.SOPInstanceUID
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    dataset.file_meta = meta
    return dataset


def _evidence(report: pydicom.Dataset) -> Dict[str, str]:
    """SOPInstanceUID -> SeriesInstanceUID of the images a report lists as its evidence."""
    found = {}
    for sequence in ("CurrentRequestedProcedureEvidenceSequence",
                     "PertinentOtherEvidenceSequence"):
        for study in report.get(sequence, []):
            for series in study.get("ReferencedSeriesSequence", []):
                for item in series.get("ReferencedSOPSequence", []):
                    found.setdefault(str(item.ReferencedSOPInstanceUID),
                                     str(series.SeriesInstanceUID))
    return found


def _progress(items, description: str, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, unit=description.split()[-1])


def fetch(connection: dicomweb.Connection, output_dir: str, *, context_slices: int = 1,
          filters: Optional[Dict[str, str]] = None, salt: Optional[str] = None,
          progress: bool = True) -> FetchSummary:
    """Fetches every SR measurement report the server has, with what the builder needs.

    Args:
      connection: the server.
      output_dir: the folder to write (module docstring); created if missing.
      context_slices: neighbours retrieved in full on each side of a key slice (the
        builder reads one on each side).
      filters: further QIDO-RS search keys, e.g. `{"StudyDate": "20200101-20201231"}`.
      salt: of the folder names' pseudonyms; None: `deid.site_salt()`.
      progress: show progress bars.

    Raises:
      dicomweb.ServerError: the server refused or stopped answering; what was written
        is kept, and running again resumes.
    """
    if context_slices < 0:
        raise ValueError(f"context_slices must be >= 0, got {context_slices}")
    tree = _Tree(output_dir, salt or deid.site_salt())
    summary = FetchSummary()
    client = connection.client
    search = {"Modality": sr_bookmarks.SR_MODALITY, **(filters or {})}
    found = connection.call("the search for SR reports", lambda: client.search_for_instances(
        search_filters=search, get_remaining=True))
    reports = sorted({_uids(attributes) for attributes in found})
    summary.reports = len(reports)
    logging.info("%s: %d SR reports", connection.name, len(reports))

    key_images: Dict[Tuple[str, str], Set[str]] = {}
    for study, series, sop in _progress(reports, "reading reports", progress):
        where = f"report {tree.name('instance', sop)}"
        path = tree.report(study, sop)
        if os.path.exists(path):
            dataset = pydicom.dcmread(path)
        else:
            dataset = connection.call(f"the retrieval of {where}", lambda: client.retrieve_instance(
                study, series, sop))
            tree.write(path, ct_reader.dicom_bytes(dataset))
            summary.reports_retrieved += 1
        for image, image_series in _referenced_images(connection, tree, dataset, study, where,
                                                      summary):
            key_images.setdefault((study, image_series), set()).add(image)

    summary.series = len(key_images)
    for (study, series), images in _progress(sorted(key_images.items()), "fetching series",
                                             progress):
        _fetch_series(connection, tree, study, series, images, context_slices, summary)
    shutil.rmtree(tree.temp, ignore_errors=True)
    return summary


def _referenced_images(connection, tree: _Tree, report: pydicom.Dataset, study: str,
                       where: str, summary: FetchSummary) -> Iterable[Tuple[str, str]]:
    """`(SOPInstanceUID, SeriesInstanceUID)` of each key image the report measures on."""
    try:
        bookmarks, _ = sr_bookmarks.read_report(report, where)
    except ValueError as error:
        summary.unreadable_reports += 1
        summary.problems.append(f"{where}: kept, but it is not a TID 1500 measurement report "
                                f"({str(error).split(': ', 1)[-1]})")
        return []
    evidence = _evidence(report)
    pairs = []
    for uid in dict.fromkeys(b.sop_instance_uid for b in bookmarks):
        series = evidence.get(uid)
        if series is None:  # Not listed as evidence: ask the server where it lies.
            hits = connection.call(f"the search for a key image of {where}",
                                   lambda: connection.client.search_for_instances(
                                       study_instance_uid=study,
                                       search_filters={"SOPInstanceUID": uid}))
            series = _uids(hits[0])[1] if hits else None
        if series is None:
            summary.problems.append(f"{where}: key image {tree.name('instance', uid)} is not "
                                    "on the server")
            continue
        pairs.append((uid, series))
    return pairs


def _fetch_series(connection, tree: _Tree, study: str, series: str, images: Set[str],
                  context_slices: int, summary: FetchSummary) -> None:
    folder = tree.series_folder(study, series)
    marker = tree.marker(series)
    wanted = {"context_slices": context_slices,
              "key_images": sorted(tree.name("instance", uid) for uid in images)}
    if os.path.exists(marker):
        with open(marker, encoding="utf-8") as f:
            done = json.load(f)
        if {k: done.get(k) for k in wanted} == wanted and all(
                os.path.exists(os.path.join(folder, name)) for name in done["files"]):
            summary.series_already_complete += 1
            summary.instances_present += done["full"]
            return
    where = f"series {tree.name('series', series)}"
    metadata = connection.call(f"the metadata of {where}",
                               lambda: connection.client.retrieve_series_metadata(study, series))
    headers = [_header(attributes) for attributes in metadata]
    headers.sort(key=lambda ds: ct_reader.head_to_feet_key(
        *ct_reader.header_geometry(ds)[:2], str(ds.SOPInstanceUID)))
    order = [str(ds.SOPInstanceUID) for ds in headers]
    full: Set[int] = set()
    for uid in images:
        if uid not in order:
            summary.problems.append(f"{where}: key image {tree.name('instance', uid)} is not in "
                                    "the series' metadata")
            continue
        index = order.index(uid)
        full.update(range(max(index - context_slices, 0),
                          min(index + context_slices, len(order) - 1) + 1))
    files = []
    for index, dataset in enumerate(headers):
        name = f"{index:05d}.dcm"
        path, header_path = os.path.join(folder, name), os.path.join(
            folder, f"{index:05d}{HEADER_SUFFIX}")
        if index in full:
            if os.path.exists(path):
                summary.instances_present += 1
            else:
                instance = connection.call(
                    f"the retrieval of slice {index} of {where}",
                    lambda: connection.client.retrieve_instance(study, series, order[index]))
                tree.write(path, ct_reader.dicom_bytes(instance))
                summary.instances_retrieved += 1
            if os.path.exists(header_path):  # A wider context than an earlier run's.
                os.remove(header_path)
        elif not (os.path.exists(path) or os.path.exists(header_path)):
            tree.write(header_path, ct_reader.dicom_bytes(dataset))
            summary.headers_written += 1
        files.append(name if os.path.exists(path) else os.path.basename(header_path))
    tree.write(marker, json.dumps({**wanted, "files": files, "full": len(full)},
                                  indent=1).encode())

"""A real DICOM server for the PACS tests: Debian's Orthanc with its DICOMweb plugin.

Started by the test on 127.0.0.1 (remote access refused) on free ports, with a
throwaway storage folder and one user, and stopped (or killed) by it. `.ci/run`
installs the packages `orthanc` and `orthanc-dicomweb` when they are missing;
elsewhere a test without them is skipped, except under CI, where it fails.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import pytest
import requests

ORTHANC = os.environ.get("ORTHANC", shutil.which("Orthanc") or "/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = os.environ.get("ORTHANC_DICOMWEB_PLUGIN",
                                 "/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "radiology-ai", "not-a-real-secret"


def require():
    """Skips (fails under CI) when Orthanc or its DICOMweb plugin is missing."""
    missing = [path for path in (ORTHANC, DICOMWEB_PLUGIN) if not os.path.exists(path)]
    if missing:
        message = (f"no {', '.join(missing)}: install Debian's orthanc and orthanc-dicomweb "
                   "(apt-get install orthanc orthanc-dicomweb)")
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """One Orthanc process over a storage folder that outlives restarts."""

    def __init__(self, folder):
        require()
        self.folder = str(folder)
        self.http_port, self.dicom_port = _free_port(), _free_port()
        storage = os.path.join(self.folder, "storage")
        os.makedirs(storage, exist_ok=True)
        self.config = os.path.join(self.folder, "orthanc.json")
        with open(self.config, "w") as f:
            json.dump({
                "Name": "deeplesion-test", "StorageDirectory": storage,
                "IndexDirectory": storage, "HttpPort": self.http_port,
                "DicomPort": self.dicom_port, "RemoteAccessAllowed": False,
                "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
                "Plugins": [DICOMWEB_PLUGIN],
                "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "SeriesMetadata": "Full",
                             "StudiesMetadata": "Full"},
            }, f)
        self.process = None
        self.session = requests.Session()
        self.session.auth = (USER, PASSWORD)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.root}/dicom-web"

    def start(self):
        self.process = subprocess.Popen([ORTHANC, self.config], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.session.get(f"{self.root}/system", timeout=2).ok:
                    return self
            except requests.ConnectionError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}")
            time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer within 60 s")

    def kill(self):
        """SIGKILL: a server that drops every connection at once."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def upload(self, paths):
        """Stores DICOM files through Orthanc's own REST API (not the code under test)."""
        for path in paths:
            with open(path, "rb") as f:
                self.session.post(f"{self.root}/instances", data=f.read(),
                                  timeout=30).raise_for_status()

    def instances(self, modality=None):
        """Orthanc's ids of its instances, of one modality if given."""
        found = self.session.post(f"{self.root}/tools/find", json={
            "Level": "Instance", "Query": {"Modality": modality} if modality else {}},
            timeout=30)
        found.raise_for_status()
        return found.json()

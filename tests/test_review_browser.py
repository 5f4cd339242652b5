"""The review page in a real browser: name clusters, review, kill the server, resume, finish.

Drives `bin/review_clusters` (a real server process on 127.0.0.1) with headless
Chromium over a categorizer run on the dummy PACS, then checks what it wrote.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image
from scipy import stats

from deeplesion_tf.categorize import review as review_lib
from deeplesion_tf.data import label_files
from tests import browser
from tests.conftest import REPO_ROOT
from tfds_deeplesion import splits

pytestmark = pytest.mark.slow
SPLITS = "train+validation+test"
WAIT_S = 30


@pytest.fixture
def run_dir(dummy_pacs_data_dir, tmp_path):
    """A categorizer run on the dummy PACS: three clusters, a montage for two of them."""
    browser.require()
    dataset = splits.load_split("deeplesion/pacs", SPLITS, str(dummy_pacs_data_dir))
    ids = sorted(i.decode() for example in tfds.as_numpy(dataset)
                 for i in example["lesions"]["lesion_id"])
    assert len(ids) >= 9, ids
    labels = np.array([0, 1] * (len(ids) // 2) + [0] * (len(ids) % 2))
    labels[-2:] = 2  # cluster 3: two lesions
    run = tmp_path / "categorize"
    run.mkdir()
    label_files.write_pseudo_labels(str(run / label_files.PSEUDO_LABELS_FILE), ids, labels)
    (run / "flags.txt").write_text(f"--dataset=deeplesion/pacs\n--data_dir={dummy_pacs_data_dir}\n"
                                   f"--splits={SPLITS}\n--nohelp\n")
    for cluster in (1, 2):
        montage = run / f"montage_cluster_{cluster}.png"
        Image.new("RGB", (64, 40), (40 * cluster, 0, 0)).save(montage)
    return run, ids


class Server:
    """`bin/review_clusters` on a free port; `url` once it listens."""

    def __init__(self, run, log):
        self.process = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "bin" / "review_clusters"),
             f"--categorize_dir={run}", "--port=0", "--per_cluster=3", "--reviewer=Dr. Test"],
            stdout=subprocess.PIPE, stderr=log, text=True)
        lines = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.process.stdout],
                         daemon=True).start()
        try:
            line = lines.get(timeout=300)
        except queue.Empty:
            self.kill()
            raise AssertionError("the review server printed no address")
        assert line.startswith("Review page: http://127.0.0.1:"), line
        self.url = line.split()[2]

    def kill(self):
        self.process.send_signal(signal.SIGKILL)  # no clean shutdown: what is on disk is all
        self.process.wait(timeout=30)


def _text(driver, element_id):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def _wait_for(driver, condition, what):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # The page redraws the clusters after each change: an element found just before may go.
    WebDriverWait(driver, WAIT_S, ignored_exceptions=[StaleElementReferenceException]).until(
        condition, message=what)


def _card(driver, cluster):
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, f"cluster-{cluster}")


def _press(driver, key):
    from selenium.webdriver.common.by import By

    driver.find_element(By.TAG_NAME, "body").send_keys(key)


def _progress_is(driver, text):
    _wait_for(driver, lambda d: _text(d, "review-progress").startswith(text),
              f"progress {text!r}, saw {_text(driver, 'review-progress')!r}")


def test_a_review_named_answered_killed_resumed_and_finished(run_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    run, ids = run_dir
    log = open(tmp_path / "server.log", "w")
    server = Server(run, log)
    driver = browser.chrome()
    pages = []
    try:
        driver.get(server.url)
        _wait_for(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".cluster")) == 3,
                  "three clusters")
        assert _card(driver, 1).find_elements(By.TAG_NAME, "img")
        assert not _card(driver, 3).find_elements(By.TAG_NAME, "img")  # no montage for it
        assert not _card(driver, 1).find_element(By.CLASS_NAME, "start-review").is_enabled()
        # Name cluster 1 by click, cluster 2 by Enter, cluster 3 as mixed.
        _card(driver, 1).find_element(By.NAME, "name").send_keys("lung nodule")
        _card(driver, 1).find_element(By.CLASS_NAME, "save-name").click()
        _wait_for(driver, lambda d: "named lung nodule" in _card(d, 1).text, "cluster 1 named")
        _card(driver, 2).find_element(By.NAME, "name").send_keys("liver lesion" + Keys.ENTER)
        _wait_for(driver, lambda d: "named liver lesion" in _card(d, 2).text, "cluster 2 named")
        _card(driver, 3).find_element(By.CLASS_NAME, "mark-mixed").click()
        _wait_for(driver, lambda d: "mixed / noisy" in _card(d, 3).text, "cluster 3 mixed")
        assert not _card(driver, 3).find_elements(By.CLASS_NAME, "start-review")
        pages.append(driver.page_source)

        # Part of cluster 1's sample: one by key, one by click; the bone window by key.
        _card(driver, 1).find_element(By.CLASS_NAME, "start-review").click()
        _progress_is(driver, "0 of 3 reviewed; lesion 1 of 3")
        assert len(driver.find_elements(By.CSS_SELECTOR, "#bookmark line")) == 2
        _press(driver, "y")
        _progress_is(driver, "1 of 3 reviewed; lesion 2 of 3")
        _press(driver, "3")
        _wait_for(driver, lambda d: d.find_element(By.ID, "view").get_attribute("src").endswith(
            "window=bone"), "the bone window")
        _wait_for(driver, lambda d: d.execute_script(
            "return document.getElementById('view').complete && "
            "document.getElementById('view').naturalWidth") == 512, "the view loaded")
        driver.find_element(By.ID, "not-belongs").click()
        _progress_is(driver, "2 of 3 reviewed; lesion 3 of 3")
        pages.append(driver.page_source)
    finally:
        driver.quit()
        server.kill()  # mid-review, the tab closed and the server killed

    saved = review_lib.load(str(run))
    assert [a["belongs"] for a in saved.answers] == [True, False]
    assert label_files.read_names(str(run / "names.csv")) == {
        1: "lung nodule", 2: "liver lesion", 3: review_lib.MIXED}

    server = Server(run, log)
    driver = browser.chrome()
    try:
        driver.get(server.url)
        _wait_for(driver, lambda d: "2 of 3 sampled lesions reviewed" in _card(d, 1).text,
                  "cluster 1's progress after the restart")
        assert "purity 0.500" in _card(driver, 1).text
        _card(driver, 1).find_element(By.CLASS_NAME, "start-review").click()
        _progress_is(driver, "2 of 3 reviewed; lesion 3 of 3")  # where it stopped
        _press(driver, "y")
        _wait_for(driver, lambda d: d.find_element(By.ID, "finished").is_displayed(),
                  "cluster 1 finished")
        assert "purity 0.667" in _text(driver, "finished-text")
        _press(driver, Keys.ESCAPE)
        _wait_for(driver, lambda d: d.find_element(By.ID, "overview").is_displayed(), "overview")
        # Cluster 2: yes, no, back and change it to yes, then no.
        _card(driver, 2).find_element(By.CLASS_NAME, "start-review").click()
        _progress_is(driver, "0 of 3 reviewed")
        _press(driver, "y")
        _progress_is(driver, "1 of 3 reviewed")
        _press(driver, "n")
        _progress_is(driver, "2 of 3 reviewed; lesion 3 of 3")
        _press(driver, "u")
        _wait_for(driver, lambda d: "does not belong" in _text(d, "previous-answer"),
                  "the previous answer shown")
        _progress_is(driver, "2 of 3 reviewed; lesion 2 of 3")
        driver.find_element(By.ID, "belongs").click()
        _progress_is(driver, "2 of 3 reviewed; lesion 3 of 3")
        _press(driver, "n")
        _wait_for(driver, lambda d: d.find_element(By.ID, "finished").is_displayed(),
                  "cluster 2 finished")
        pages.append(driver.page_source)
    finally:
        driver.quit()
        server.kill()
        log.close()

    review = review_lib.load(str(run))
    assert review.reviewer == "Dr. Test" and not review.simulated
    assert [a["belongs"] for a in review.answers] == [True, False, True, True, False, True, False]
    assert all(a["time"].endswith("+00:00") for a in review.answers)
    sample = review.sample
    assert review.latest() == {sample[1][0]: True, sample[1][1]: False, sample[1][2]: True,
                               sample[2][0]: True, sample[2][1]: True, sample[2][2]: False}
    purity = {row["cluster"]: row for row in
              json.loads((run / review_lib.PURITY_FILE).read_text())["clusters"]}
    interval = stats.binomtest(2, 3).proportion_ci(0.95, "exact")
    for cluster in (1, 2):
        assert (purity[cluster]["belongs"], purity[cluster]["reviewed"]) == (2, 3)
        assert purity[cluster]["low"] == pytest.approx(interval.low)
        assert purity[cluster]["high"] == pytest.approx(interval.high)
    assert purity[3]["reviewed"] == 0 and purity[3]["name"] == review_lib.MIXED
    # What bin/train_detector --class_names reads.
    assert label_files.read_names(str(run / "names.csv")) == {
        1: "lung nodule", 2: "liver lesion", 3: review_lib.MIXED}
    for page in pages:  # no lesion id (the PACS' own) on any screen
        assert not any(lesion in page for lesion in ids)
    assert os.path.exists(run / "review_views.npz")

#!/usr/bin/env python3
"""The README's two screenshots of the review page, from a quickstart run.

    python docs/review_screenshots.py --categorize_dir=out/categorize --truth=PACS/truth.csv

Copies the run to a temporary folder (the run itself is left alone), names its clusters
and answers the purity sample from the planted truth (`bin/review_clusters
--names_from --simulate_reviewer`, so the page says the answers are simulated), serves
the page and saves `docs/images/review_overview.png` (the clusters) and
`docs/images/review_screen.png` (one lesion of cluster 2), 256-colour PNGs, with
headless Chromium.
"""

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests import browser  # noqa: E402


def _save(driver, path):
    import io

    from PIL import Image

    Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB").quantize(256).save(
        path, optimize=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--categorize_dir", required=True)
    parser.add_argument("--truth", required=True, help="the synthetic PACS' truth.csv")
    parser.add_argument("--output_dir", default=os.path.join(REPO, "docs", "images"))
    args = parser.parse_args()
    from selenium.webdriver.common.by import By

    review_clusters = [sys.executable, os.path.join(REPO, "bin", "review_clusters")]
    with tempfile.TemporaryDirectory() as scratch:
        run = os.path.join(scratch, "categorize")
        shutil.copytree(args.categorize_dir, run, ignore=shutil.ignore_patterns(
            "review.json", "names.csv", "purity.json"))
        subprocess.run(review_clusters + [f"--categorize_dir={run}", f"--names_from={args.truth}",
                                          f"--simulate_reviewer={args.truth}"], check=True)
        server = subprocess.Popen(review_clusters + [f"--categorize_dir={run}", "--port=0"],
                                  stdout=subprocess.PIPE, text=True)
        driver = browser.chrome(width=1400, height=900)
        try:
            url = server.stdout.readline().split()[2]
            os.makedirs(args.output_dir, exist_ok=True)
            driver.get(url)
            time.sleep(2)  # the montages load
            _save(driver, os.path.join(args.output_dir, "review_overview.png"))
            driver.find_element(By.CSS_SELECTOR, "#cluster-2 .start-review").click()
            time.sleep(2)
            _save(driver, os.path.join(args.output_dir, "review_screen.png"))
        finally:
            driver.quit()
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()

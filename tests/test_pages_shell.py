"""AppTest for the home page and the Dataset page (real dataset, real reader)."""

from __future__ import annotations

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT, make_tiny_dataset, page_file


@pytest.fixture
def data_env(tmp_path, monkeypatch):
    root = make_tiny_dataset(tmp_path / "data", subjects=(1, 2))
    monkeypatch.setenv("BES_DATA_DIR", str(root))
    monkeypatch.setenv("BES_CACHE_DIR", str(tmp_path / "cache"))
    return root


def test_home_page(data_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    assert "Brain Encoding Studio" in at.title[0].value
    assert at.sidebar.selectbox[0].options == ["subj01", "subj02"]


def test_dataset_page_summary_and_images(data_env):
    at = AppTest.from_file(page_file("Dataset"), default_timeout=60).run()
    assert not at.exception
    table = at.dataframe[0].value
    assert list(table["subject"]) == ["subj01", "subj02"]
    assert list(table["training images"]) == [6, 6]
    assert list(table["lh vertices"]) == [30, 30]
    text = " ".join(m.value for m in at.markdown)
    assert "V1v, hV4" in text
    # switching subject and split re-renders without error
    at.sidebar.selectbox[0].select(2).run()
    assert not at.exception
    assert "subj02" in " ".join(h.value for h in at.subheader)
    at.radio(key="split").set_value("test").run()
    assert not at.exception


def test_dataset_page_reports_bad_data(data_env):
    np.save(data_env / "subj02" / "training_split" / "training_fmri" / "rh_training_fmri.npy",
            np.ones((6, 40), dtype=np.int16))
    at = AppTest.from_file(page_file("Dataset"), default_timeout=60).run()
    assert not at.exception
    assert len(at.error) == 1
    assert "rh_training_fmri.npy: expected float32 values, found dtype int16" in at.error[0].value


def test_home_quick_start_links_the_pages(data_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    assert not at.exception
    links = [link.proto.page for link in at.get("page_link")]
    assert links[:3] == ["Runs", "Compare", "Submission"]  # the quick start (URL paths)
    assert len(links) == 3 + 7  # and the tour: every page
    assert "A full submission needs a run per subject (2 here)" in at.info[0].value

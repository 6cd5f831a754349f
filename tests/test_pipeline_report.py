"""The run report: self-contained HTML that renders in a real browser, with its plots, offline."""

import pytest

from netrazor.cli import main
from netrazor.errors import CheckpointError, ConfigError
from netrazor.io import write_json
from netrazor.pipeline import write_report
from netrazor.pipeline.screenshot import find_chromium, render_dom

LAYERS = [{"name": "conv1", "kind": "Conv2d", "width": 20, "params": 500, "density": 1.0, "bits": None},
          {"name": "fc1", "kind": "Linear", "width": 500, "params": 400000, "density": 1.0, "bits": None}]


def _measure(params, err, layers):
    return {"params": params, "nonzero": params, "macs": 10 * params, "bytes": 4 * params,
            "latency_ms_b1": 0.2, "latency_ms_b64": 5.0, "val_error": err, "layer_profile": layers}


@pytest.fixture
def run_dir(tmp_path):
    small = [dict(LAYERS[0], width=5), dict(LAYERS[1], width=100, density=0.3, bits=4)]
    state = {
        "recipe": {"name": "fake", "stages": [{"kind": "train", "params": {}}, {"kind": "gates", "params": {}}]},
        "completed": [
            {"index": 0, "kind": "train", "params": {}, "seconds": 3.0, "before": _measure(400500, 0.9, LAYERS),
             "after": _measure(400500, 0.02, LAYERS),
             "record": {"history": [{"epoch": 0, "val_acc": 0.95}, {"epoch": 1, "val_acc": 0.98}]}},
            {"index": 1, "kind": "gates", "params": {}, "seconds": 5.0, "before": _measure(400500, 0.02, LAYERS),
             "after": _measure(20000, 0.021, small), "record": {"entropy": {"relu1": 0.8, "relu2": 0.1}}},
        ],
    }
    run = tmp_path / "runs" / "compress-fake-seed0"
    write_json(run / "state.json", state)
    write_json(run / "summary.json", {"recipe": "fake", "dense": state["completed"][0]["before"],
                                      "final": state["completed"][1]["after"], "test_error": 0.022, "bytes": 9000})
    return run


def test_report_has_stage_table_plots_and_no_external_references(run_dir):
    html_path, md_path = write_report(run_dir)
    page = html_path.read_text()
    assert page.count("<img") >= 4  # pareto, per-layer, training curve, entropy
    assert "<script" not in page and "http://" not in page and "https://" not in page
    assert "20.0×" in page  # params 400,500 -> 20,000 in the headline
    md = md_path.read_text()
    assert "| gates |" in md and "400,500" in md


def test_report_of_a_folder_that_is_not_a_run_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="not a compress run"):
        write_report(tmp_path)


CHROMIUM = find_chromium()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(run_dir, tmp_path):
    html_path, _ = write_report(run_dir)
    dom = render_dom(html_path)
    assert "netrazor report" in dom and dom.count("<img") >= 4
    # `netrazor report RUN --screenshot` is the same call
    assert main(["report", str(run_dir), "--screenshot", str(tmp_path / "report.png")]) == 0
    shot = tmp_path / "report.png"
    # A rendered page with plots is a PNG far larger than a blank one (~10 kB).
    assert shot.exists() and shot.stat().st_size > 30_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Every image decoded: the browser reports their natural size in the DOM via a data URI of real PNG bytes.
    assert "data:image/png;base64,iVBORw0KGgo" in dom


def test_screenshot_without_chromium_names_the_fix(run_dir, tmp_path, monkeypatch):
    import netrazor.pipeline.screenshot as shot_module

    monkeypatch.setattr(shot_module, "find_chromium", lambda: None)
    with pytest.raises(ConfigError, match="apt-get install chromium"):
        shot_module.screenshot(run_dir / "report.html", tmp_path / "x.png")

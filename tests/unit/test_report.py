"""The report writer: one self-contained HTML (figures inlined), Markdown, JSON; atomic files."""

from __future__ import annotations

import base64
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from golden_fast.report import Report  # noqa: E402


def _png(path):
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [1, 3, 2])
    fig.savefig(path)
    plt.close(fig)
    return path


def test_report_writes_three_files_with_inlined_figure(tmp_path):
    png = _png(tmp_path / "curve.png")
    rep = Report("run <smollm2>", "subtitle & more")
    rep.text("Chosen layer", "LGA chose layer 6.\n\nSecond paragraph.")
    rep.table("Metrics", ["metric", "pre", "post"], [["rewrite_acc", 0.07, 0.95], ["locality", 1.0, float("nan")]],
              note="knowedit suite")
    rep.figure("LGA scores", png, caption="Tukey fences dashed")
    rep.pre("Settings", "layers: [6]")
    paths = rep.write(tmp_path / "out", results={"layer": 6, "scores": [0.5, 1.5]})

    html = paths.html.read_text()
    # escaped title, the table cells formatted, the PNG inlined byte for byte
    assert "run &lt;smollm2&gt;" in html and "<td>0.950</td>" in html and "<td>n/a</td>" in html
    inline = html.split("data:image/png;base64,")[1].split("'")[0]
    assert base64.b64decode(inline) == png.read_bytes()
    md = paths.markdown.read_text()
    assert "| rewrite_acc | 0.070 | 0.950 |" in md and "![LGA scores](figures/00-lga-scores.png)" in md
    assert paths.figures[0].read_bytes() == png.read_bytes()
    data = json.loads(paths.json.read_text())
    assert data["results"] == {"layer": 6, "scores": [0.5, 1.5]}
    assert data["environment"]["versions"]["torch"]
    # nothing temporary left behind
    assert not [p for p in (tmp_path / "out").rglob("*") if ".tmp" in p.name]


def test_report_rejects_ragged_rows_and_missing_figures(tmp_path):
    rep = Report("t")
    with pytest.raises(ValueError, match="every row needs 2 cells"):
        rep.table("bad", ["a", "b"], [[1, 2], [3]])
    with pytest.raises(FileNotFoundError, match="no file"):
        rep.figure("missing", tmp_path / "nope.png")


def test_report_html_renders_in_headless_chromium(tmp_path, chromium):
    """The HTML opens in a real browser and paints something: a screenshot that is not blank,
    with the inlined figure's colour present (the image decoded, not a broken icon)."""
    import subprocess

    from matplotlib import image

    png = tmp_path / "fig.png"
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.fill_between([0, 1], [0, 0], [1, 1], color="#ff0000")  # a large pure red block
    fig.savefig(png)
    plt.close(fig)
    rep = Report("render check").text(None, "A figure follows.").figure("red block", png)
    paths = rep.write(tmp_path / "out")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={shot}", "--window-size=1200,1000", paths.html.resolve().as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.is_file(), proc.stderr[-2000:]
    pix = image.imread(shot)[..., :3]  # floats in [0, 1]
    assert pix.std() > 0.05  # not one flat colour
    red = (pix[..., 0] > 0.9) & (pix[..., 1] < 0.1) & (pix[..., 2] < 0.1)
    assert red.sum() > 5000, "the inlined figure did not render"

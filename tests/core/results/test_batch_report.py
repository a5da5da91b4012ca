"""Batch reports drawn from plain data: the matrix page and heatmap, the sweep figure."""

from __future__ import annotations

from pathlib import Path

from siegecraft.core.results.batch_report import (
    SeriesRun,
    compared_metric,
    fmt,
    sweep_figure,
    write_matrix_report,
)


def _cell(attack: str, defense: str, utility: float | None, success: float | None) -> dict[str, object]:
    return {"attack": attack, "defense": defense, "utility": utility, "attack_success": success,
            "success_metric": None if success is None else "attack_success", "utility_drop": None,
            "clients": [0], "wall_s": 1.25, "run_dir": f"cells/{attack}-{defense}"}


def test_matrix_report_tables_every_pair_and_embeds_the_heatmap(tmp_path: Path) -> None:
    cells = [_cell("none", "mean", 0.9, None), _cell("sign_flip", "mean", 0.5, 0.5), _cell("none", "krum:f=1", 0.875, None)]
    report = write_matrix_report(tmp_path, name="demo", seed=7, attacks=["none", "sign_flip"],
                                 defenses=["mean", "krum:f=1"], cells=cells, wall_s=3.0, config='name = "demo"\n')
    html = report.read_text()
    assert report == tmp_path / "report.html" and (tmp_path / "figures" / "heatmap.png").stat().st_size > 1000
    assert html.count("data:image/png;base64,") == 1 and "seed 7" in html and "3 runs" in html
    assert "0.9000 / -" in html and "0.5000 / 0.5000" in html  # utility / attack success per pair
    assert "<td class=\"n\">-</td>" in html  # the pair that was not run (sign_flip x krum) shows a dash
    assert 'href="cells/sign_flip-mean/"' in html and "name = &#34;demo&#34;" in html  # config escaped


def test_compared_metric_prefers_accuracy_then_the_first_number() -> None:
    assert compared_metric([{"loss": 1.0}, {"accuracy": 0.5}]) == "accuracy"
    assert compared_metric([{"note": "x", "flag": True, "hits": 3}]) == "hits"
    assert compared_metric([{"note": "x"}]) is None
    assert fmt(None) == "-" and fmt(0.5) == "0.5000" and fmt([1]) == "[1]"


def test_sweep_figure(tmp_path: Path) -> None:
    runs = [SeriesRun(f"lr={lr}", {"accuracy": acc}, [{"round": r, "accuracy": acc * r / 2} for r in (1, 2)])
            for lr, acc in ((0.1, 0.8), (0.2, 0.6))]
    path = sweep_figure(runs, tmp_path / "sweep.png")
    assert path == tmp_path / "sweep.png" and path.stat().st_size > 1000
    assert sweep_figure([SeriesRun("a", {"note": "x"})], tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()

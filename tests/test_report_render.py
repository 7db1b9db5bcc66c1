"""Two trained generators in one report, rendered in headless Chromium.

Real chain: embedded Monte Carlo HDF5 -> Beam conversion -> two tiny trainings (different seeds
and lengths, standing in for a 1-GPU and an 8-replica run) -> `caloforge evaluate --generator A
--generator B` -> report.html opened by Chromium, which must load every figure.

Under a minute of CPU (measured: this file with tests/test_eval_report.py and tests/test_report_parts.py
used 71 s of CPU together); one fixture serves every test of the file.
"""

import base64
import contextlib
import io
import json
import os
import re
import shutil
import struct
import subprocess

import pytest

from eval.report import FIGURE_NAMES

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Added to a copy of the page only: after the load event each img records the size Chromium decoded.
PROBE = ("<script>window.addEventListener('load',()=>{for(const i of document.images)"
         "{i.setAttribute('data-natural',i.naturalWidth+'x'+i.naturalHeight)}})</script>")


def _png_size(data: bytes) -> tuple[int, int]:
    assert data.startswith(PNG_SIGNATURE)
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def two_generators(tmp_path_factory):
    from data_prep.convert import ConvertConfig, convert
    from data_prep.montecarlo import MonteCarloConfig, generate_files
    from eval.evaluate import main
    from trainer.config import TrainConfig
    from trainer.train import train

    root = tmp_path_factory.mktemp("two_generators")
    files = generate_files(MonteCarloConfig(n_events=120, events_per_file=120, energy_min=20.0, energy_max=200.0,
                                            seed=4), str(root / "h5"))
    convert(ConvertConfig(inputs=files, output=str(root / "data"), test_fraction=0.6, min_shards=1))
    manifest = str(root / "data" / "manifest.json")
    for name, seed, steps in (("gpu1", 5, 4), ("gpu8", 6, 6)):
        train(TrainConfig(data=manifest, output_dir=str(root / name / "model"), preset="tiny", strategy="default",
                          batch_size_per_replica=4, max_steps=steps, steps_per_call=2, checkpoint_every=2,
                          log_every=2, seed=seed))
    out = root / "eval"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["--data", manifest, "--generator", str(root / "gpu1" / "model" / "generator"),
                   "--generator", str(root / "gpu8" / "model" / "generator"), "--output-dir", str(out),
                   "--max-events", "60", "--seed", "5", "--batch-size", "16", "--discriminator-events", "16"])
    return {"rc": rc, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "metrics": json.loads((out / "metrics.json").read_text())}


def test_each_generator_is_judged_against_the_same_floor(two_generators):
    metrics = two_generators["metrics"]
    # Barely trained generators fail; the CLI exits 1 and names each generator's failed checks.
    assert two_generators["rc"] == 1
    printed = json.loads(two_generators["stdout"].strip().splitlines()[-1])
    assert set(printed["generators"]) == {"gpu1", "gpu8"} and printed["passed"] is False
    assert "gpu1: FAILED sampling_fraction_mre" in two_generators["stderr"]
    assert "gpu8: FAILED sampling_fraction_mre" in two_generators["stderr"]
    assert [g["label"] for g in metrics["generators"]] == ["gpu1", "gpu8"]
    assert metrics["generators"][1]["generator_dir"].endswith("gpu8/model/generator")
    assert metrics["verdict"]["generators"] == {"gpu1": False, "gpu8": False}
    # One floor: every replica-based threshold is the same number for both generators.
    checks = [{c["name"]: c for c in g["verdict"]["checks"]} for g in metrics["generators"]]
    for name, first in checks[0].items():
        if "Monte Carlo vs Monte Carlo" in first["rule"]:
            assert checks[1][name]["threshold"] == first["threshold"], name
            assert checks[1][name]["noise_floor"] == first["noise_floor"], name
    assert checks[0]["sampling_fraction_mre"]["value"] != checks[1]["sampling_fraction_mre"]["value"]
    assert metrics["counts"] == {"mc_events": 60, "reference_events": 30}
    assert set(metrics["summary"]["generators"]) == {"gpu1", "gpu8"}
    # Classifier ROC points of each generator and of the floor are in metrics.json.
    assert len(metrics["generators"][0]["generated"]["curves"]["classifier"]["fpr"]) >= 2
    assert "classifier" in metrics["noise_floor"]["curves"]


def test_every_figure_overlays_both_generators(two_generators):
    out = two_generators["out"]
    assert sorted(p.stem for p in (out / "plots").iterdir()) == sorted(FIGURE_NAMES)
    page = (out / "report.html").read_text()
    assert "Figures not drawn" not in page
    for name in FIGURE_NAMES:
        block = page.split(f"<div class='fig' id='{name}'>", 1)[1].split("<div class='fig'", 1)[0]
        if "<table>" in block:
            assert "gpu1 vs MC" in block and "gpu8 vs MC" in block, name
    assert "gpu1: Verdict: FAILED" in page and "gpu8: Verdict: FAILED" in page
    # The discriminator and the training curves come from each generator's own run.
    assert "gpu1: discriminator of its own run, checkpoint ckpt-4, 16 showers per sample" in page
    assert "gpu8: discriminator of its own run, checkpoint ckpt-6" in page
    assert re.search(r"gpu8: 3 records up to step 6 from \S+gpu8/model/timings.jsonl", page)
    # 30 events per half is far too few: the page says so where a reader starts.
    warnings = page.split("id='page-warnings'>", 1)[1].split("</div>", 1)[0]
    assert "the Monte Carlo halves hold 30 and 30 events" in warnings
    assert "test split holds 6 events per class" in warnings


def test_report_renders_in_headless_chromium_with_every_figure(two_generators, tmp_path):
    binary = next((shutil.which(n) for n in CHROMIUM_NAMES if shutil.which(n)), None)
    if binary is None:
        pytest.fail("headless Chromium is needed to check the report renders: install it "
                    "(Debian: apt-get install -y chromium; .ci/run does) and rerun")
    out = two_generators["out"]
    probe = tmp_path / "probe.html"
    probe.write_text((out / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    run = subprocess.run([binary, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom", probe.as_uri()],
                         capture_output=True, text=True, timeout=180)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = run.stdout
    assert "<h1>caloforge: generated vs Monte Carlo showers</h1>" in dom
    images = {m.group(1): (m.group(2), m.group(3)) for m in re.finditer(
        r'<img id="img-([a-z_]+)" alt="[^"]*" src="data:image/png;base64,([A-Za-z0-9+/=]+)" data-natural="(\d+x\d+)"',
        dom)}
    assert sorted(images) == sorted(FIGURE_NAMES)
    for name, (b64, natural) in images.items():
        png = base64.b64decode(b64)
        assert png == (out / "plots" / f"{name}.png").read_bytes(), name
        width, height = _png_size(png)
        # Chromium decoded the image to the PNG's own size: it loaded.
        assert natural == f"{width}x{height}" and width > 100 and height > 100, name
        assert f'<div class="fig" id="{name}">' in dom, name
    assert 'id="page-warnings"' in dom and 'id="verdict-table"' in dom
    assert os.path.getsize(out / "report.html") < 5_000_000

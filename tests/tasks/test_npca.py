"""task=npca end to end on tiny models through the CLI: components from a class's training images raise their
projection in another class's image; components reused from a file; every bad input."""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = pytest.mark.slow


def test_npca_component_rises_in_another_class_image(data, digin, tmp_path):
    run = tmp_path / "run"
    proc = digin("task=npca", "segmentation=tiny_sam", "task.component_class=goldfish", "task.component=1",
                 f"paths.imagenet_train={data / 'train'}", f"task.images={data / 'images' / 'chicken.png'}",
                 "optimizer.steps=3", "optimizer.lr=0.05", f"hydra.run.dir={run}",
                 # The tiny generator cannot reconstruct a real image, so the object distance would dominate the
                 # loss; neuron_cf's test measures that term, this one the component alone.
                 "task.w_vae=0", "task.w_px=0", output=tmp_path)
    assert proc.returncode == 0, proc.stderr
    from safetensors.torch import load_file

    comps = load_file(str(run / "components.safetensors"))
    assert comps["components"].shape[1] == 64 and comps["variances"][0] >= comps["variances"][-1]
    item = run / "chicken"
    for name in ("original.png", "counterfactual.png", "mask_overlay.png", "iterates.png", "npca.png"):
        assert (item / name).is_file(), name
    m = json.loads((item / "metrics.json").read_text())
    s = m["summary"]
    assert {"alpha_before", "alpha_after", "p_class_before", "p_class_after", "predicted_before",
            "predicted_after", "l2_foreground"} <= set(s)
    # alpha_1 (0-based: the second component) rises by at least a quarter of its standard deviation over the class
    # images (measured: 0.8 sd with lr 0.05, 3 steps; with lr ~ 0 every iterate equals iterate 0 and this fails).
    sd = float(comps["variances"][1].sqrt() * comps["components"][1].sum().abs())
    rise = m["iterates"][m["best_iterate"]]["phi"] - m["iterates"][0]["phi"]
    assert rise >= 0.25 * sd > 0, (rise, sd)
    assert s["alpha_after"] == pytest.approx(m["iterates"][m["best_iterate"]]["phi"], abs=1e-4)
    assert m["component"] == 1 and m["start"] == s["predicted_before"]  # no label: start = prediction


@pytest.fixture
def component_files(tmp_path):
    torch.save({"components": torch.randn(3, 7)}, tmp_path / "short.pt")
    (tmp_path / "garbage.safetensors").write_bytes(b"not a safetensors file")
    return tmp_path


@pytest.mark.parametrize("case", ["missing", "unreadable", "wrong_length", "component_range", "class_empty",
                                  "train_unset", "nonlinear_head", "no_segmenter", "lcm", "unknown_class"])
def test_bad_inputs(data, digin_here, expect_error, component_files, tmp_path, case):
    image, train = f"task.images={data / 'images' / 'chicken.png'}", f"paths.imagenet_train={data / 'train'}"
    seg = "segmentation=tiny_sam"
    args, needles = {
        "missing": ([seg, image, f"task.component_file={component_files / 'nope.pt'}"],
                    ["component file not found", "nope.pt"]),
        "unreadable": ([seg, image, f"task.component_file={component_files / 'garbage.safetensors'}"],
                       ["cannot read component file", "garbage.safetensors"]),
        "wrong_length": ([seg, image, f"task.component_file={component_files / 'short.pt'}"],
                         ["length 7", "64 features"]),
        "component_range": ([seg, image, train, "task.component_class=goldfish", "task.component=9"],
                            ["component 9 is out of range", "0..3"]),
        "class_empty": ([seg, image, train, "task.component_class=tench"], ["'tench' has no images"]),
        "train_unset": ([seg, image, "task.component_class=goldfish"], ["paths.imagenet_train is unset"]),
        "nonlinear_head": ([seg, image, train, "task.component_class=goldfish",
                            "classifier._target_=tests.tasks.nonlinear_head.MlpHeadClassifier"], ["not a linear layer"]),
        "no_segmenter": (["segmentation=none", image], ["segmentation=none"]),
        "lcm": ([seg, image, train, "++generator.sampler=lcm"], ["generator.sampler=lcm", "DDIM"]),
        "unknown_class": ([seg, image, train, "task.component_class=goldfsh"], ["goldfsh", "goldfish"]),
    }[case]
    proc = digin_here("task=npca", *args, output=tmp_path / "out")
    expect_error(proc, *needles)
    assert not list((tmp_path / "out").glob("npca/runs/*/*/metrics.json"))



def test_component_file_round_trip_gives_the_computed_direction(tmp_path):
    from safetensors.torch import save_file

    from digin_cli.classifiers.tiny import TinyClassifier
    from digin_cli.features import npca
    from digin_cli.tasks.npca import load_component_file

    f = TinyClassifier(0)
    w, _ = f.head()
    comps = npca(torch.randn(20, f.num_features).abs(), w[7])
    save_file({"components": comps.components.contiguous(), "mean": comps.mean}, str(tmp_path / "c.safetensors"))
    torch.save({"components": comps.components[1]}, tmp_path / "one.pt")  # a single component, no mean
    loaded = load_component_file(str(tmp_path / "c.safetensors"), f, 7)
    u, offset = loaded.direction(1)
    ref_u, ref_offset = comps.direction(1)
    torch.testing.assert_close(u, ref_u)
    assert offset == pytest.approx(ref_offset, abs=1e-6)
    single = load_component_file(str(tmp_path / "one.pt"), f, 7)
    torch.testing.assert_close(single.direction(0)[0], ref_u)
    assert single.direction(0)[1] == 0.0  # no mean in the file: alpha is not centred

"""Shared set-up of the neuron task CLI tests: small real-image folders, an ImageNet-layout train folder, and the
`digin` subprocess with tiny models."""

from __future__ import annotations

import sys

import pytest
from PIL import Image, ImageDraw

from tests.cli_helpers import one_line_error, run_digin

TINY = ["generator=tiny", "classifier=tiny_a", "device=cpu", "generator.num_steps=3", "optimizer.augment.num=2"]


def picture(colour, blob, size=(80, 72)):
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).ellipse((24, 18, 60, 54), fill=blob)
    return image


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """``images/`` (two photos), ``train/`` (1000 class folders; goldfish, great white shark and fireboat hold
    images, tench is empty) and ``objects.txt``."""
    root = tmp_path_factory.mktemp("neuron_data")
    (root / "images").mkdir()
    picture((40, 120, 200), (220, 90, 30)).save(root / "images" / "crab.png")
    picture((200, 180, 120), (30, 30, 30)).save(root / "images" / "chicken.png")
    train = root / "train"
    for i in range(1000):
        (train / f"n{i:04d}").mkdir(parents=True)
    for label, n in ((1, 4), (2, 4), (554, 2)):
        for k in range(n):
            picture((20 * k, 100 + 30 * k, 200 - 20 * label % 50), (200, 40 * k, 60)).save(
                train / f"n{label:04d}" / f"img_{k}.png")
    (root / "objects.txt").write_text("# candidates\nsand\n\nwater\n")
    (root / "empty.txt").write_text("\n# nothing\n")
    return root


@pytest.fixture(scope="session")
def digin(tmp_path_factory):
    cache = tmp_path_factory.mktemp("neuron_cache")

    def run(*args, output):
        return run_digin(*TINY, f"paths.output_root={output}", f"paths.cache_dir={cache}", *args)

    run.cache = cache
    return run


@pytest.fixture(scope="session")
def digin_here(tmp_path_factory):
    """The same ``digin`` entry point run in this process: for inputs that fail before any model loads, where a
    fresh interpreter would spend all its time importing torch and diffusers."""
    import contextlib
    import io
    import types

    from digin_cli import cli

    cache = tmp_path_factory.mktemp("neuron_cache_here")

    def run(*args, output, tiny=True):
        argv, out, err, code = sys.argv, io.StringIO(), io.StringIO(), 0
        sys.argv = ["digin", *(TINY if tiny else ["device=cpu"]), f"paths.output_root={output}",
                    f"paths.cache_dir={cache}", *args]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                cli.main()
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
        finally:
            sys.argv = argv
        return types.SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())

    return run


@pytest.fixture(scope="session")
def expect_error():
    return one_line_error

"""issue 16 §1 "Done when": `digin task=hard_prompt generator=tiny_lcm classifier=tiny_a task.classes='[bee]'` with the
default settings ends on a text other than its initial argmax, and metrics.json / the strip / report.html show the
text per iterate. Plus task.vocabulary's one-line refusals through the CLI."""

import json

import pytest

from tests.cli_helpers import one_line_error, run_digin

pytestmark = pytest.mark.slow

BASE = ["task=hard_prompt", "generator=tiny_lcm", "classifier=tiny_a", "task.classes=[bee]", "device=cpu"]


def digin(tmp_path, *args):
    return run_digin(*BASE, f"paths.output_root={tmp_path / 'out'}", f"paths.cache_dir={tmp_path / 'cache'}", *args)


def test_default_hard_prompt_moves_off_its_initial_argmax(tmp_path):
    proc = digin(tmp_path, "task.num_samples=1")  # optimisation settings are the defaults (200 Adam steps)
    assert proc.returncode == 0, proc.stderr
    (item,) = (tmp_path / "out").glob("hard_prompt/runs/*/bee/seed_0")
    metrics = json.loads((item / "metrics.json").read_text())
    iterates = metrics["iterates"]
    assert len(iterates) == 201 and all(i["text"].startswith("a picture of ") for i in iterates)
    initial, final = iterates[0], iterates[-1]
    assert initial["top_prob"][0] < 1e-3 and initial["entropy"][0] > 10  # the initial argmax means nothing
    assert final["text"] == metrics["text"] != initial["text"], (initial["text"], metrics["text"])
    assert final["top_prob"][0] > 100 * initial["top_prob"][0]
    summary = metrics["summary"]
    assert summary["initial_text"] == initial["text"] and summary["text_per_iterate"].startswith(
        f"0: {initial['words']} · ")
    assert metrics["embedding_norms"]["ratio"] > 0
    assert (item / "explanation.txt").read_text().strip() == metrics["text"]
    report = next((tmp_path / "out").glob("hard_prompt/runs/*/report.html")).read_text()
    assert summary["text_per_iterate"].split(" · ")[1] in report


@pytest.mark.parametrize("vocabulary,needle", [
    ("[bee,goldfinch]", "'goldfinch' is 2 CLIP tokens"),
    ("/nonexistent/words.txt", "does not exist"),
])
def test_bad_vocabulary_is_one_line_and_writes_no_item(tmp_path, vocabulary, needle):
    proc = digin(tmp_path, f"task.vocabulary={vocabulary}")
    one_line_error(proc, needle)
    assert not list((tmp_path / "out").glob("hard_prompt/runs/*/bee"))

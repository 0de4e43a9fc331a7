"""The one helper behind every "cannot load ... offline" error: a hub id names the cache, HF_HUB_OFFLINE and the
fix; an existing path names the loader's own reason; DiginErrors and other exceptions pass through unchanged."""

import pytest

from digin_cli.errors import DiginError, hub_loading

KW = dict(what="thing weights", local_what="a thing", fix="or set thing.pretrained=/local/folder",
          local_fix="point thing.pretrained= at a save_pretrained folder")


def _message(source, err):
    with pytest.raises(DiginError) as info, hub_loading(source, **KW):
        raise err
    assert "\n" not in str(info.value) and info.value.__cause__ is None and info.value.__suppress_context__
    return str(info.value)


def test_a_hub_id_missing_offline_names_the_id_offline_and_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    msg = _message("org/no-such-thing", OSError("We couldn't connect to 'https://huggingface.co'\nmore"))
    assert msg == ("cannot load thing weights 'org/no-such-thing': not in the local Hugging Face cache and "
                   "HF_HUB_OFFLINE is set — download them once with network access (HF_HUB_OFFLINE=0), or set "
                   "thing.pretrained=/local/folder")


def test_a_local_folder_names_the_loaders_reason(tmp_path):
    msg = _message(str(tmp_path), ValueError("config.json is missing\nsecond line"))
    assert msg == (f"cannot load a thing from folder '{tmp_path}' (ValueError: config.json is missing) — point "
                   "thing.pretrained= at a save_pretrained folder")
    (tmp_path / "w.safetensors").write_bytes(b"")
    assert f"cannot load a thing from '{tmp_path / 'w.safetensors'}' (OSError: " in _message(
        str(tmp_path / "w.safetensors"), OSError("bad file"))


def test_user_errors_and_bugs_pass_through():
    with pytest.raises(DiginError, match="^wrong model type$"), hub_loading("x", **KW):
        raise DiginError("wrong model type")
    with pytest.raises(KeyError), hub_loading("x", **KW):
        raise KeyError("a bug keeps its traceback")


def test_a_loader_that_wraps_the_failed_fetch_says_which_errors_are_load_failures():
    """open_clip re-raises a failed download as a RuntimeError: ``failed=`` recognises it; other errors still pass."""
    def wrapped(err):
        return "download" in str(err)

    with pytest.raises(DiginError, match="^cannot load thing weights 'org/x': not in the local"), \
            hub_loading("org/x", failed=wrapped, **KW):
        raise RuntimeError("Failed to download weights for tag 'x'")
    with pytest.raises(OSError), hub_loading("org/x", failed=wrapped, **KW):
        raise OSError("a disk error that is no failed fetch")
    with pytest.raises(DiginError, match="^download nothing$"), hub_loading("org/x", failed=wrapped, **KW):
        raise DiginError("download nothing")

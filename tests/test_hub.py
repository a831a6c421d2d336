"""Hub sharing: pull by repo id (a Hub cache read offline; pickles and code never fetched or read), push to a Hub on
127.0.0.1 and pull back bit-identical, the same strict checks as for a local folder, one-line errors.

Everything goes through the real `huggingface_hub` client: `tests/hub_server.py` answers its endpoints."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import build_tiny_model
from hub_server import FakeHub
from huggingface_hub import constants
from test_lora import denoise, lora_checkpoint

from zoo import hub as zoo_hub
from zoo.adapters.folder import load_adapters
from zoo.adapters.share import export
from zoo.cli import main as zoo_main
from zoo.lora import model_fingerprint


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """A Hub on a free local port and an empty cache, for this process (constants) and its children (environment)."""
    server = FakeHub().start()
    cache = tmp_path / "hub-cache"
    env = {"HF_ENDPOINT": server.url, "HF_HUB_CACHE": str(cache), "HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "0"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def adapter(tmp_path_factory) -> tuple[Path, object]:
    """An exported adapter folder of a tiny LoRA model (base: build_tiny_model(seed=0)) and that model."""
    root = tmp_path_factory.mktemp("hub-adapter")
    ckpt, model = lora_checkpoint(root / "run" / "last.ckpt")
    export(ckpt, root / "adapter", num_samples=0)
    return root / "adapter", model


class _Boom:
    """A pickle that leaves a file behind if anything ever unpickles it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _lay_out_cache(cache: Path, repo_id: str, folder: Path, extra: dict[str, bytes]) -> str:
    """A Hub cache entry as huggingface_hub writes it: blobs by hash, a snapshot of links, refs/main → commit."""
    entry = cache / f"models--{repo_id.replace('/', '--')}"
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    for name, data in {**files, **extra}.items():
        blob = entry / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = entry / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (entry / "refs").mkdir(parents=True, exist_ok=True)
    (entry / "refs" / "main").write_text(commit)
    return commit


# ------------------------------------------------------------------------------------------------------ pull
def test_repo_spec_parsing() -> None:
    assert zoo_hub.parse_repo_spec("me/adapter") == ("me/adapter", None)
    assert zoo_hub.parse_repo_spec("me/adapter@v1.0") == ("me/adapter", "v1.0")
    for not_a_repo in ("adapter", "./me/adapter", "/abs/path", "~/x/y", "a/b/c"):
        assert zoo_hub.parse_repo_spec(not_a_repo) is None


def test_offline_cache_pull_never_reads_a_pickle_or_code(adapter, hub, monkeypatch, tmp_path) -> None:
    folder, lora_model = adapter
    marker = tmp_path / "pickle-ran"
    evil = {
        "base/adapter_model.bin": pickle.dumps(_Boom(marker)),
        "base/adapter_model.safetensors.pt": pickle.dumps(_Boom(marker)),
        "modeling_adapter.py": f"open({str(marker)!r}, 'w')\n".encode(),
    }
    _lay_out_cache(Path(constants.HF_HUB_CACHE), "me/adapter", folder, evil)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.stop()  # offline means offline: nothing may be asked of the server

    base = build_tiny_model()
    load_adapters(base, [("me/adapter", 1.0)])
    torch.testing.assert_close(denoise(base), denoise(lora_model), atol=1e-5, rtol=0)
    assert not marker.exists() and not hub.requests


def test_a_local_folder_of_the_same_name_wins(adapter, hub, monkeypatch, tmp_path) -> None:
    folder, _ = adapter
    monkeypatch.chdir(tmp_path)
    shutil.copytree(folder, tmp_path / "me" / "adapter")
    assert zoo_hub.resolve_folder("me/adapter") == Path("me/adapter")
    assert not hub.requests


def test_unknown_repo_is_one_line_naming_it(hub, capsys) -> None:
    with pytest.raises(ValueError, match=r"--adapter 'nobody/nothing': no such folder, and the Hub repo could not"):
        zoo_hub.resolve_folder("nobody/nothing", what="--adapter")
    assert zoo_main(["lora", "info", "nobody/nothing"]) == 2
    err = capsys.readouterr().err
    assert "nobody/nothing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------------------ push
def test_dry_run_lists_only_what_the_zoo_shares(adapter, hub, tmp_path, capsys) -> None:
    folder, _ = adapter
    copy = shutil.copytree(folder, tmp_path / "adapter")
    (copy / "base" / "adapter_model.bin").write_bytes(b"not shared")
    (copy / "train.py").write_text("print('not shared')")
    assert zoo_main(["lora", "push", str(copy), "me/adapter", "--dry-run"]) == 0
    listed = capsys.readouterr().out.split()
    assert "base/adapter_model.safetensors" in listed and "README.md" in listed and "zoo_adapter.json" in listed
    assert not any(name.endswith((".bin", ".py")) for name in listed)
    assert not hub.requests  # a dry run talks to nobody


def test_push_then_pull_by_repo_id_is_bit_identical(adapter, hub, tmp_path) -> None:
    folder, _ = adapter
    copy = shutil.copytree(folder, tmp_path / "adapter")
    (copy / "base" / "adapter_model.bin").write_bytes(b"never uploaded")
    assert zoo_main(["lora", "push", str(copy), "me/adapter", "--private", "--revision", "v1"]) == 0
    uploaded = hub.snapshot("me/adapter", "v1")
    assert "base/adapter_model.safetensors" in uploaded and not any(n.endswith(".bin") for n in uploaded)
    assert hub.repos["me/adapter"].private
    card = uploaded["README.md"].decode()
    assert card.startswith("---") and "library_name: peft" in card and "instruct-imagen" in card

    local, pulled = build_tiny_model(), build_tiny_model()
    load_adapters(local, [(folder, 0.5)])
    load_adapters(pulled, [("me/adapter@v1", 0.5)])
    assert torch.equal(denoise(local), denoise(pulled))
    assert not any(".bin" in request for request in hub.requests)


def test_a_wrong_base_pulled_from_the_hub_is_refused_like_a_local_one(adapter, hub) -> None:
    folder, _ = adapter
    zoo_hub.push_folder(folder, "me/adapter")
    other = build_tiny_model(seed=3)
    with pytest.raises(ValueError, match=rf"base is {model_fingerprint(other)}"):
        load_adapters(other, [("me/adapter", 1.0)])


# -------------------------------------------------------------------------------------------------- pipelines
def test_a_pipeline_and_an_adapter_from_the_hub_generate_as_the_local_folders(adapter, hub, tmp_path) -> None:
    from PIL import Image

    from zoo.eval.evaluate import parse_checkpoints
    from zoo.pipeline import InstructImagenPipeline

    folder, _ = adapter
    pipe = InstructImagenPipeline(build_tiny_model())
    local = pipe.save_pretrained(tmp_path / "pipe")
    assert pipe.push_to_hub("me/pipe").startswith(hub.url)
    zoo_hub.push_folder(folder, "me/adapter")

    common = ["Draw a red circle on the left", "--steps", "3", "--seed", "1"]
    assert (
        zoo_main(
            ["generate", *common, "--model", str(local), "--adapter", f"{folder}:0.5", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    assert (
        zoo_main(
            ["generate", *common, "--model", "me/pipe", "--adapter", "me/adapter:0.5", "--out", str(tmp_path / "b")]
        )
        == 0
    )
    (a,), (b,) = sorted((tmp_path / "a").glob("*.png")), sorted((tmp_path / "b").glob("*.png"))
    assert Image.open(a).tobytes() == Image.open(b).tobytes()
    assert list(parse_checkpoints(["me/pipe"])) == ["pipe"]  # zoo evaluate --ckpt me/pipe names it by its repo

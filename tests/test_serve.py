"""Tests of `python -m zoo serve`: the Gradio demo on a tiny exported pipeline, through gradio_client (the API) and a
real headless Chromium driven by Playwright (the page).

The server runs in this process on a free 127.0.0.1 port, started and stopped by a module fixture; every wait is
bounded. The browser test needs Debian's `chromium` (`apt-get install -y chromium`); without it the test is skipped,
except under CI, where .ci/run installs it and its absence is a failure.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import IMAGE_SIZE, REPO_ROOT, build_tiny_model, perturb_context_layers, shipped_models
from PIL import Image

from zoo import serve
from zoo.checkpoint_io import save_weights_checkpoint
from zoo.pipeline import InstructImagenPipeline

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError  # noqa: E402

FAST = 2  # sampling steps: enough to run the whole path, cheap at 16 px
TIMEOUT_S = 60  # one API call
# One browser wait: under `make test` another pytest worker shares the two cores with Chromium and the server.
BROWSER_TIMEOUT_S = 180
CHROMIUM = shutil.which("chromium")
INSTALL_CHROMIUM = "apt-get install -y chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny exported pipeline whose context layers matter (so references change the image)."""
    base = build_tiny_model()
    perturb_context_layers(base, 1)
    return InstructImagenPipeline(base).save_pretrained(tmp_path_factory.mktemp("serve") / "tiny")


@pytest.fixture(scope="module")
def recipes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("recipes")
    task = {"class_path": "tasks.text_to_image.TextToImage", "init_args": {"num_examples": 8, "image_size": 16}}
    recipe = {
        "seed_everything": 0,
        "model": {"unet": "tiny", "text_encoder": "builtin:tiny-t5"},
        "data": {"image_size": 16, "tasks": [task]},
    }
    (folder / "tiny.yaml").write_text(yaml.safe_dump(recipe))
    return folder


@pytest.fixture(scope="module")
def loads() -> list[str]:
    return []


@pytest.fixture(scope="module")
def server(model_dir: Path, recipes: Path, loads: list[str]):
    """The demo on a free port, counting model loads; closed (and its files removed) at the end of the module."""
    original = InstructImagenPipeline.from_pretrained.__func__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(
            InstructImagenPipeline,
            "from_pretrained",
            classmethod(lambda cls, folder, **kw: loads.append(str(folder)) or original(cls, folder, **kw)),
        )
        argv = ["--model", str(model_dir), "--port", str(free_port()), "--device", "cpu", "--recipes", str(recipes)]
        running = serve.start(argv)
    try:
        yield running
    finally:
        running.close()
    assert not running.outputs.exists()


@pytest.fixture(scope="module")
def client(server) -> Client:
    return Client(server.url, verbose=False, httpx_kwargs={"timeout": TIMEOUT_S})


@pytest.fixture(scope="module")
def refs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("refs")
    paths = {}
    for name, color in [("red", (220, 30, 30)), ("blue", (30, 30, 220)), ("green", (30, 200, 30))]:
        paths[name] = folder / f"{name}.png"
        Image.new("RGB", (24, 24), color).save(paths[name])
    paths["broken"] = folder / "broken.png"
    paths["broken"].write_bytes(b"not an image at all")
    return paths


def form(
    text: str, references: list[tuple[str, str, Path | None]] = (), seed: int = 0, images: int = 1, **settings
) -> list:
    """The /generate endpoint's arguments: text, 8 × (marker, short text, image), then the settings."""
    rows = []
    for index in range(serve.MAX_REFERENCES):
        if index < len(references):
            marker, short, path = references[index]
            rows += [marker, short, handle_file(str(path)) if path is not None else None]
        else:
            rows += [f"[ref#{index + 1}]", "", None]
    return [
        text,
        *rows,
        settings.get("sampler", "ddpm"),
        FAST,
        settings.get("mode", serve.GUIDANCE_SINGLE),
        settings.get("guidance", 3.0),
        settings.get("context_guidance", 2.0),
        seed,
        images,
    ]


def generate(client: Client, *args, **kwargs) -> tuple[list[Path], str]:
    gallery, status = client.submit(*form(*args, **kwargs), api_name="/generate").result(timeout=TIMEOUT_S)
    return [Path(item["image"]) for item in gallery], status


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


TWO_REFS = "Draw [ref#1] in the style of [ref#2]"


def test_two_references_same_seed_same_image_with_metadata(client: Client, refs: dict[str, Path]) -> None:
    two = [("[ref#1]", "[ref#1] toy", refs["red"]), ("[ref#2]", "a [ref#2] style", refs["blue"])]
    (first,), status = generate(client, TWO_REFS, two, seed=3)
    (again,), _ = generate(client, TWO_REFS, two, seed=3)
    (other,), _ = generate(client, TWO_REFS, two, seed=4)
    assert Image.open(first).size == (IMAGE_SIZE, IMAGE_SIZE) and f"{IMAGE_SIZE}×{IMAGE_SIZE}" in status
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))
    metadata = Image.open(first).text
    assert metadata["instruction"] == TWO_REFS
    assert json.loads(metadata["context"]) == [
        {"marker": "[ref#1]", "text": "[ref#1] toy"},
        {"marker": "[ref#2]", "text": "a [ref#2] style"},
    ]
    settings = json.loads(metadata["settings"])
    assert settings["seed"] == 3 and settings["steps"] == FAST and settings["sampler"] == "ddpm"


@pytest.mark.parametrize(
    "text, references, message",
    [
        ("Draw [ref#1] on the left", [], "marker [ref#1] appears in the text"),
        ("Draw a red circle", [("[ref#1]", "", "red")], "[ref#1]"),
        ("Draw [ref#1]", [("[ref#1]", "", "broken")], "not a readable image"),
        ("Draw [ref1] on the left", [], "malformed reference marker"),
        ("Draw a red circle " * 6, [], "more than the 32 this model's text encoder reads"),
    ],
    ids=["marker-without-reference", "reference-without-marker", "unreadable-image", "malformed-marker", "too-long"],
)
def test_bad_requests_are_readable_errors_and_the_server_stays_up(client, refs, text, references, message) -> None:
    rows = [(marker, short, refs[name]) for marker, short, name in references]
    with pytest.raises(AppError, match=None) as raised:
        generate(client, text, rows)
    assert message in str(raised.value) and "Traceback" not in str(raised.value)
    images, _ = generate(client, "Draw a red circle")
    assert len(images) == 1


def test_concurrent_requests_keep_their_references_and_seeds(client: Client, refs: dict[str, Path]) -> None:
    text = "Draw a circle like [ref#1]"
    jobs = {
        name: (client.submit(*form(text, [("[ref#1]", "", refs[name])], seed=seed), api_name="/generate"))
        for name, seed in [("red", 11), ("green", 12)]
    }
    together = {name: pixels(Path(job.result(timeout=TIMEOUT_S)[0][0]["image"])) for name, job in jobs.items()}
    for name, seed in [("red", 11), ("green", 12)]:
        (alone,), _ = generate(client, text, [("[ref#1]", "", refs[name])], seed=seed)
        assert np.array_equal(pixels(alone), together[name])
    assert not np.array_equal(together["red"], together["green"])


def test_zero_and_eight_references_and_several_images(client: Client, refs: dict[str, Path]) -> None:
    images, status = generate(client, "Draw a red circle", images=2, seed=5)
    assert len(images) == 2 and "seeds 5–6" in status
    eight = [(f"[ref#{i}]", "", refs[["red", "blue", "green"][i % 3]]) for i in range(1, 9)]
    text = "".join(f"[ref#{i}]" for i in range(1, 9))
    images, _ = generate(client, text, eight, mode=serve.GUIDANCE_SEPARATE, sampler="dpmsolver++")
    assert Image.open(images[0]).size == (IMAGE_SIZE, IMAGE_SIZE)
    assert json.loads(Image.open(images[0]).text["settings"])["context_guidance"] == 2.0


def test_data_preview_tab(client: Client, recipes: Path) -> None:
    sheet, report = client.predict(str(recipes / "tiny.yaml"), 2, api_name="/preview")
    assert Image.open(sheet).width > 0 and "text_to_image" in report
    with pytest.raises(AppError, match="missing.yaml"):
        client.predict(str(recipes / "missing.yaml"), 2, api_name="/preview")


def test_examples_come_from_the_task_plugins_imported_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    examples, note = serve.build_examples(tmp_path, image_size=16)
    assert [e.task for e in examples] == [name for name, _ in serve.EXAMPLE_TASKS] and note == ""
    assert any(len(e.references) >= 1 for e in examples)
    for example in examples:
        for _, _, path in example.references:
            assert Image.open(path).size == (16, 16)
    tree = ast.parse(Path(serve.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not any("tasks" in ast.unparse(node).split()[1].split(".")[0] for node in top_level)
    monkeypatch.setitem(sys.modules, "tasks.control", None)  # importing it now raises ImportError
    examples, note = serve.build_examples(tmp_path, image_size=16)
    assert "control" not in [e.task for e in examples] and "control" in note


def test_the_default_model_is_a_shipped_instruction_follower() -> None:
    """The page's examples carry reference images: the default must be a stage-2 model trained on context tasks."""
    assert serve.DEFAULT_MODEL.parent == Path("checkpoints") and serve.DEFAULT_MODEL.name in shipped_models()
    config = yaml.safe_load((REPO_ROOT / serve.DEFAULT_MODEL / "training_config.yaml").read_text())
    trained_on = {task["class_path"] for task in config["data"]["tasks"]}
    assert {"tasks.subject_driven.SubjectDriven", "tasks.styled_generation.StyledGeneration"} <= trained_on


def test_without_a_model_one_clear_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # no checkpoints/ here
    assert serve.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--model" in err and "--ckpt" in err and str(serve.DEFAULT_MODEL) in err
    assert serve.main(["--model", str(tmp_path)]) == 2
    assert "not a saved pipeline" in capsys.readouterr().err


def test_browser_generates_and_shows_errors(server, refs: dict[str, Path], tmp_path: Path) -> None:
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the browser test: chromium is missing ({INSTALL_CHROMIUM}; .ci/run does it)")
        pytest.skip(
            f"Chromium is not installed, so the real-browser test of the web demo is skipped: {INSTALL_CHROMIUM}"
        )
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, timeout=BROWSER_TIMEOUT_S * 1000)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(BROWSER_TIMEOUT_S * 1000)
            expect.set_options(timeout=BROWSER_TIMEOUT_S * 1000)  # assertions wait 5 s unless told
            page.goto(server.url, wait_until="domcontentloaded")
            page.get_by_text("styled_generation:").click()  # an example fills the text and its reference images
            expect(page.locator("#instruction textarea")).not_to_have_value("")
            expect(page.locator("#ref1 img")).to_be_visible()
            page.get_by_role("button", name="Add a reference").click()
            expect(page.locator("#ref2")).to_be_visible()
            page.locator("#remove2").click()
            expect(page.locator("#ref2")).to_be_hidden()
            page.locator("#instruction textarea").fill("Draw a circle in the style of [ref#1]")
            page.locator("#ref1 input[type=file]").set_input_files(str(refs["blue"]))
            expect(page.locator("#ref1 img")).to_be_visible()
            page.locator("#generate").click()
            expect(page.locator("#gallery img").first).to_be_visible()
            expect(page.locator("#status")).to_contain_text(f"{IMAGE_SIZE}×{IMAGE_SIZE}")
            page.screenshot(path=tmp_path / "web_demo.png", full_page=True)
            assert Image.open(tmp_path / "web_demo.png").width >= 1000
            if os.environ.get("ZOO_SCREENSHOT"):  # how docs/web-demo.png is made
                shutil.copy(tmp_path / "web_demo.png", os.environ["ZOO_SCREENSHOT"])

            page.locator("#instruction textarea").fill("Draw a circle in the style of [ref#2]")
            page.locator("#generate").click()
            expect(page.get_by_text("marker [ref#2] appears in the text")).to_be_visible()
            assert "Traceback" not in page.content()
        finally:
            browser.close()


def test_the_api_offers_generate_and_preview_only(client: Client) -> None:
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert sorted(endpoints) == ["/generate", "/preview"]
    assert len(endpoints["/generate"]["parameters"]) == 1 + 3 * serve.MAX_REFERENCES + 7


def test_the_model_was_loaded_once_and_the_queue_is_bounded(server, loads: list[str], model_dir: Path) -> None:
    assert loads == [str(model_dir)]
    assert server.app._queue.max_size == serve.DEFAULT_QUEUE_SIZE


def test_adapter_weights_are_sliders_that_steer_the_model(tmp_path: Path) -> None:
    """An adapter on a --ckpt model: its slider is on the page, and weight 0 gives the base model's image."""
    import torch

    from zoo.adapters.share import export

    save_weights_checkpoint(build_tiny_model(), tmp_path / "base.ckpt")
    lora = build_tiny_model(lora={"rank": 4})
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if ".lora_" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)
    save_weights_checkpoint(lora, tmp_path / "lora.ckpt")
    export(tmp_path / "lora.ckpt", tmp_path / "my-adapter", num_samples=0)

    argv = ["--ckpt", str(tmp_path / "base.ckpt"), "--adapter", f"{tmp_path / 'my-adapter'}:0.5", "--device", "cpu"]
    pipe, description, adapters = serve.load_pipeline(serve.build_parser().parse_args(argv))
    assert [(label, weight) for label, _, weight in adapters] == [("my-adapter", 0.5)]
    demo = serve.Demo(pipe, description, adapters, tmp_path)
    sliders = [c for c in serve.build_app(demo, [], "", []).config["components"] if c["type"] == "slider"]
    assert any(c["props"]["label"] == "Adapter my-adapter" and c["props"]["value"] == 0.5 for c in sliders)

    def generate_with(demo: serve.Demo, *weights: float) -> Path:
        gallery, _ = demo.generate(lambda *args, **kwargs: None, *form("Draw a red circle"), *weights)
        return Path(gallery[0][0])

    plain = pixels(
        generate_with(serve.Demo(InstructImagenPipeline.from_checkpoint(tmp_path / "base.ckpt"), "", [], tmp_path))
    )
    assert np.array_equal(pixels(generate_with(demo, 0.0)), plain)
    steered = generate_with(demo, 1.0)
    assert not np.array_equal(pixels(steered), plain)
    assert json.loads(Image.open(steered).text["settings"])["adapters"] == {"my-adapter": 1.0}

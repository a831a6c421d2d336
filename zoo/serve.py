"""`python -m zoo serve`: a local Gradio web demo of a model — multimodal instructions in a form, images out.

This module owns the whole demo: the command line (which model, adapters, port, device), loading the model once,
the page (an instruction with up to `MAX_REFERENCES` context rows of marker + short text + image, sampler and
guidance settings, adapter weights, example instructions from the built-in world, a gallery of PNGs that carry the
instruction and settings in their metadata, and a second tab with a recipe's data preview), and turning every user
mistake into a readable message on the page. The server listens on 127.0.0.1 only; Gradio's queue is bounded and
runs one generation at a time, so requests never share references, seeds or adapter weights.

Without `--model`/`--ckpt` it serves the shipped instruction follower, `checkpoints/world-instruct-32-refiner`, when
that folder exists: the page's examples all carry reference images, which a text-to-image base does not read.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import random
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gradio as gr
import torch
from PIL import Image, UnidentifiedImageError
from PIL.PngImagePlugin import PngInfo

import zoo
from zoo.diffusion.samplers import SAMPLERS, make_sampler
from zoo.grid import to_pil
from zoo.instruction import MARKER_RE, ContextItem, Instruction

if TYPE_CHECKING:  # imported (with Lightning) only when a model loads, so a usage mistake is answered sooner
    from zoo.pipeline import InstructImagenPipeline

DEFAULT_MODEL = Path("checkpoints/world-instruct-32-refiner")
DEFAULT_PORT = 7860
MAX_REFERENCES = 8
MAX_IMAGES = 8
# Requests waiting beyond this are turned away with Gradio's "queue is full" message instead of piling up.
DEFAULT_QUEUE_SIZE = 16
# Example reference images are drawn at this size for the page; the pipeline resizes them for each stage anyway.
EXAMPLE_IMAGE_SIZE = 64
# (module under `tasks`, class): one example per task of the built-in world. Imported by name when the demo starts,
# because `zoo` never imports the task plugins at module level.
EXAMPLE_TASKS = [
    ("text_to_image", "TextToImage"),
    ("styled_generation", "StyledGeneration"),
    ("subject_driven", "SubjectDriven"),
    ("style_transfer", "StyleTransfer"),
    ("control", "Control"),
]
GUIDANCE_SINGLE, GUIDANCE_SEPARATE = "one scale", "separate text and context scales"
# System fonts only: Gradio's default theme fetches web fonts, and the demo must render offline.
THEME = gr.themes.Soft(font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"])


# --------------------------------------------------------------------------------------------------- loading
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo serve", description=__doc__.split("\n\n")[0])
    model = parser.add_mutually_exclusive_group()
    model.add_argument(
        "--model",
        metavar="FOLDER",
        help=f"a pipeline folder (python -m zoo export) or Hub repo id (default: {DEFAULT_MODEL})",
    )
    model.add_argument("--ckpt", help="a base-stage Lightning checkpoint written by `python -m zoo fit`")
    parser.add_argument("--sr-ckpt", help="a super-resolution checkpoint to run after --ckpt")
    parser.add_argument(
        "--adapter",
        action="append",
        default=[],
        metavar="DIR[:WEIGHT]",
        help="LoRA adapter folder or Hub repo id (user/name[@revision]); repeatable, each weight gets a slider",
    )
    parser.add_argument(
        "--sampler", choices=SAMPLERS, default=None, help="the sampler selected at first (default: the model's)"
    )
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default: {DEFAULT_PORT})")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument(
        "--queue-size",
        type=int,
        default=DEFAULT_QUEUE_SIZE,
        help=f"requests that may wait (default: {DEFAULT_QUEUE_SIZE})",
    )
    parser.add_argument(
        "--recipes", default="recipes", metavar="DIR", help="recipes the data-preview tab offers (default: ./recipes)"
    )
    return parser


def load_pipeline(args: argparse.Namespace) -> tuple[InstructImagenPipeline, str, list[tuple[str, str, float]]]:
    """The pipeline the arguments name (`zoo.pipeline.InstructImagenPipeline`) with its adapters loaded.

    Returns:
        (pipeline, a short description of the model, [(adapter label, adapter name in the model, weight)]).

    Raises:
        ValueError: one line for the user: no model, a missing or unreadable file, a bad adapter.
    """
    from zoo.pipeline import InstructImagenPipeline

    if args.model is None and args.ckpt is None:
        if not (DEFAULT_MODEL / "model_index.json").is_file():
            raise ValueError(
                f"no model to serve: the shipped model {DEFAULT_MODEL} is not here; pass --model FOLDER "
                "(a pipeline folder from `python -m zoo export`) or --ckpt FILE"
            )
        args.model = str(DEFAULT_MODEL)
    if args.model is not None:
        if args.sr_ckpt is not None:
            raise ValueError("--sr-ckpt goes with --ckpt; a --model folder already holds its SR stage")
        pipe, source = InstructImagenPipeline.from_pretrained(args.model, sampler=args.sampler), args.model
    else:
        for flag, path in [("--ckpt", args.ckpt), ("--sr-ckpt", args.sr_ckpt)]:
            if path is not None and not Path(path).is_file():
                raise ValueError(f"{flag} {path}: no such file")
        pipe = InstructImagenPipeline.from_checkpoint(args.ckpt, args.sr_ckpt, sampler=args.sampler or "ddpm")
        source = args.ckpt + (f" + {args.sr_ckpt}" if args.sr_ckpt else "")
    adapters = []
    if args.adapter:
        from zoo.adapters.folder import load_adapters
        from zoo.commands.lora import parse_weighted

        weighted = [parse_weighted(value) for value in args.adapter]
        names = load_adapters(pipe.base, weighted)
        adapters = [(Path(folder).name, name, weight) for (folder, weight), name in zip(weighted, names)]
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        pipe.to(device)
    except (RuntimeError, AssertionError) as error:  # torch names an unknown or absent device with these
        raise ValueError(f"--device {device}: {str(error).splitlines()[0]}") from error
    return pipe, f"{source} on {device}", adapters


# ------------------------------------------------------------------------------------------------ validation
def encoder_limit(pipe: InstructImagenPipeline) -> tuple[Any, int]:
    """(a text encoder, the fewest tokens any stage's encoder reads): a longer text would be cut somewhere."""
    encoders = [pipe.base.text_encoder] + ([pipe.sr.text_encoder] if pipe.sr is not None else [])
    shortest = min(encoders, key=lambda encoder: encoder.max_length)
    return shortest, shortest.max_length


def read_reference(image: Image.Image | str | Path | None, label: str) -> Image.Image | None:
    """An uploaded reference as RGB, fully decoded (a truncated file fails here); ValueError naming `label`."""
    if image is None or isinstance(image, Image.Image):
        return None if image is None else image.convert("RGB")
    try:
        with Image.open(image) as opened:
            opened.load()
            return opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as error:
        raise ValueError(f"{label}: not a readable image ({error})") from error


def build_instruction(
    text: str,
    references: list[tuple[str, str, Image.Image | str | None]],
    pipe: InstructImagenPipeline | None = None,
) -> Instruction:
    """The instruction a form describes: a row is a context item when it holds an image.

    Args:
        text: the payload text with `[ref#N]` markers.
        references: (marker, short text, image or image path or None) per row; rows without an image are skipped.
        pipe: when given, every text the encoders read is checked against their token limit.

    Raises:
        ValueError: one readable message (the schema's own for markers; the limit; an unreadable image).
    """
    text = (text or "").strip()
    if not text:
        raise ValueError("the instruction is empty: write a text, e.g. 'Draw a red circle in the style of [ref#1]'")
    context = []
    for row, (marker, short_text, image) in enumerate(references, start=1):
        picture = read_reference(image, f"reference {row} image")
        if picture is None:
            continue
        marker = (marker or "").strip()
        if not MARKER_RE.fullmatch(marker):
            raise ValueError(f"reference {row}: marker {marker!r} is malformed; write it as [ref#N] with N = 1, 2, ...")
        context.append(ContextItem(marker, (short_text or "").strip() or f"{marker} reference image", picture))
    try:
        instruction = Instruction(text=text, context=context, task="generate")
    except ValueError as error:
        missing = [m for m in MARKER_RE.findall(text) if f"[ref#{m}]" not in {item.marker for item in context}]
        hint = f" — add a reference row with marker [ref#{missing[0]}] and an image" if missing else ""
        raise ValueError(f"{error}{hint}") from error
    if pipe is not None:
        encoder, limit = encoder_limit(pipe)
        texts = [instruction.text] + [item.prompt for item in instruction.context]
        for which, count in zip(
            ["the instruction"] + [f"reference {i.marker}'s text" for i in context], encoder.token_counts(texts)
        ):
            if count > limit:
                raise ValueError(
                    f"{which} takes {count} tokens, more than the {limit} this model's text encoder reads; shorten it"
                )
    return instruction


# -------------------------------------------------------------------------------------------------- examples
@dataclass
class Example:
    """One example instruction of the built-in world, its reference images written as PNG files."""

    task: str
    text: str
    references: list[tuple[str, str, str]]  # (marker, short text, PNG path)


def build_examples(folder: Path, image_size: int = EXAMPLE_IMAGE_SIZE) -> tuple[list[Example], str]:
    """One example per task of `EXAMPLE_TASKS` (evaluation split) → (examples, a note: '' unless some are missing).

    The task plugins are imported by name here and only here; when they are not installed the demo runs without
    examples and the note says why.
    """
    examples, problems = [], []
    for module_name, class_name in EXAMPLE_TASKS:
        try:
            task_class = getattr(importlib.import_module(f"tasks.{module_name}"), class_name)
            instruction = task_class(num_examples=4, seed=0, image_size=image_size, split="eval")[0]
        except ImportError as error:
            problems.append(f"{module_name} ({error})")
            continue
        references = []
        for index, item in enumerate(instruction.context[:MAX_REFERENCES]):
            path = folder / f"{module_name}_{index}.png"
            to_pil(item.image).save(path)
            references.append((item.marker, item.text, str(path)))
        examples.append(Example(module_name, instruction.text, references))
    note = f"No example instructions for: {'; '.join(problems)}." if problems else ""
    return examples, note


# ------------------------------------------------------------------------------------------------ generation
def reference_image(label: str, elem_id: str) -> gr.Image:
    """An image upload whose unreadable file is a readable message: Gradio decodes uploads before the handler runs
    and would otherwise answer only "Error". The instance's decoder is wrapped rather than gr.Image subclassed,
    because Gradio writes a .pyi stub next to the module of every component subclass it sees."""
    image = gr.Image(label=label, type="pil", height=140, elem_id=elem_id)
    decode = image.preprocess

    def preprocess(payload: Any) -> Image.Image | None:
        try:
            return decode(payload)
        except (UnidentifiedImageError, OSError) as error:
            raise gr.Error(f"{label}: not a readable image ({error})", title="Invalid reference") from error

    image.preprocess = preprocess
    return image


def png_info(metadata: dict[str, str]) -> PngInfo:
    info = PngInfo()
    for key, value in metadata.items():
        info.add_text(key, value)
    return info


class Demo:
    """The loaded model and what one generation needs; `generate` is the page's Generate handler."""

    def __init__(
        self, pipe: InstructImagenPipeline, description: str, adapters: list[tuple[str, str, float]], outputs: Path
    ) -> None:
        self.pipe, self.description, self.adapters, self.outputs = pipe, description, adapters, outputs
        # Gradio runs one generation at a time (concurrency 1); the lock keeps that true for any other caller too,
        # since adapter weights are set on the shared model for each request.
        self.lock = threading.Lock()

    def sampler_defaults(self, name: str) -> tuple[int, float]:
        """The steps and guidance scale `name` uses on this model when not told otherwise."""
        hp = self.pipe.base.hparams
        chosen = make_sampler(name, self.pipe.base.scheduler, None, None, None, hp.sample_steps, hp.guidance_scale)
        return chosen.num_inference_steps, chosen.guidance.scale

    def set_adapter_weights(self, weights: list[float]) -> None:
        from peft.tuners.lora import LoraLayer

        for module in self.pipe.base.model.modules():
            if isinstance(module, LoraLayer):
                for (_, name, _), weight in zip(self.adapters, weights):
                    module.set_scale(name, float(weight))

    def generate(self, progress: gr.Progress = gr.Progress(), *values: Any) -> tuple[list[tuple[str, str]], str]:
        """The form's values → (gallery items, status line). The values, as `/generate` takes them: text,
        `MAX_REFERENCES` × (marker, short text, image), sampler, steps, guidance mode, guidance, context guidance,
        seed, number of images, then one weight per adapter.

        `progress` comes first because Gradio fills the positional parameters before `*values` with its special
        objects; the form's values follow.
        """
        text, rest = values[0], values[1:]
        rows = [tuple(rest[3 * i : 3 * i + 3]) for i in range(MAX_REFERENCES)]
        sampler, steps, guidance_mode, guidance, context_guidance, seed, num_images, *weights = rest[
            3 * MAX_REFERENCES :
        ]
        try:
            instruction = build_instruction(text, rows, self.pipe)
            if sampler not in SAMPLERS:
                raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
            steps, num_images, seed = int(steps), int(num_images), int(seed)
            if steps < 1 or not 1 <= num_images <= MAX_IMAGES:
                raise ValueError(f"steps must be at least 1 and images between 1 and {MAX_IMAGES}")
        except ValueError as error:
            raise gr.Error(str(error), duration=None, title="Invalid instruction") from error
        seed = random.randrange(2**31) if seed < 0 else seed
        context_scale = float(context_guidance) if guidance_mode == GUIDANCE_SEPARATE else None
        settings = {
            "model": self.description,
            "sampler": sampler,
            "steps": steps,
            "guidance": float(guidance),
            "context_guidance": context_scale,
            "adapters": {label: float(w) for (label, _, _), w in zip(self.adapters, weights)},
        }
        results = []
        with self.lock:
            self.set_adapter_weights(weights)
            for index in range(num_images):  # one call per seed: image k equals `zoo generate --seed seed+k`
                progress((index, num_images), desc=f"image {index + 1} of {num_images}")
                try:
                    image = self.pipe(
                        instruction,
                        num_inference_steps=steps,
                        guidance_scale=float(guidance),
                        context_guidance_scale=context_scale,
                        seed=seed + index,
                        sampler=sampler,
                    )[0]
                except ValueError as error:  # the pipeline names what it cannot do with these settings
                    raise gr.Error(str(error), duration=None, title="Cannot generate") from error
                results.append(self.save(image, instruction, {**settings, "seed": seed + index}))
        width, height = image.size
        return results, f"{num_images} image(s), {width}×{height} px, seeds {seed}–{seed + num_images - 1}"

    def save(self, image: Image.Image, instruction: Instruction, settings: dict[str, Any]) -> tuple[str, str]:
        """Writes one result as PNG with the instruction and settings in its text chunks → (path, caption)."""
        context = [{"marker": item.marker, "text": item.text} for item in instruction.context]
        metadata = {
            "instruction": instruction.text,
            "context": json.dumps(context),
            "settings": json.dumps(settings),
            "Software": f"zoo {zoo.__version__} (python -m zoo serve)",
        }
        handle = tempfile.NamedTemporaryFile(
            dir=self.outputs, prefix=f"seed{settings['seed']}_", suffix=".png", delete=False
        )
        with handle:
            image.save(handle, format="PNG", pnginfo=png_info(metadata))
        return handle.name, f"seed {settings['seed']}"


# ---------------------------------------------------------------------------------------------- data preview
def recipe_choices(folder: str | Path) -> list[str]:
    folder = Path(folder)
    return sorted(str(path) for path in folder.rglob("*.yaml")) if folder.is_dir() else []


def data_preview(recipe: str, n: int, outputs: Path) -> tuple[str, str]:
    """`python -m zoo data preview` for `recipe` → (contact sheet PNG path, its printed report)."""
    from zoo.commands.data import main as preview_main

    if not recipe:
        raise gr.Error("choose a recipe first", title="No recipe")
    out = Path(tempfile.mkdtemp(dir=outputs)) / "data_preview.png"
    printed, errors = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
            status = preview_main(["preview", "--config", recipe, "--n", str(int(n)), "--out", str(out)])
    except SystemExit as exit_:  # the recipe parser exits on a bad recipe, after printing why
        lines = [line for line in errors.getvalue().splitlines() if line.strip()]
        raise gr.Error(
            f"{recipe}: {lines[-1] if lines else f'exit {exit_.code}'}", title="Recipe not readable"
        ) from exit_
    except (ValueError, TypeError, OSError) as error:
        raise gr.Error(f"{recipe}: {error}", title="Recipe not readable") from error
    if status != 0 or not out.is_file():
        raise gr.Error(f"{recipe}: {errors.getvalue().strip() or 'no preview written'}", title="Recipe not readable")
    return str(out), printed.getvalue()


# ------------------------------------------------------------------------------------------------------ page
def build_app(
    demo: Demo, examples: list[Example], note: str, recipes: list[str], sampler: str | None = None
) -> gr.Blocks:
    """The page: a Generate tab and a Data preview tab; the API names are `/generate` and `/preview`."""
    sampler = sampler or demo.pipe.sampler
    steps, guidance = demo.sampler_defaults(sampler)
    with gr.Blocks(title="zoo · Instruct-Imagen", analytics_enabled=False) as app:
        gr.Markdown(
            "## zoo · Instruct-Imagen\nWrite an instruction with `[ref#N]` markers and give each marker a reference "
            f"image. Model: `{demo.description}`."
        )
        with gr.Tab("Generate"):
            with gr.Row():
                with gr.Column(scale=3):
                    text = gr.Textbox(
                        label="Instruction",
                        lines=2,
                        elem_id="instruction",
                        placeholder="Draw a red circle on the left in the style of [ref#1]",
                    )
                    shown = gr.State([row == 0 for row in range(MAX_REFERENCES)])
                    groups, rows, removes = [], [], []
                    for row in range(MAX_REFERENCES):
                        with gr.Group(visible=row == 0) as group:
                            with gr.Row(equal_height=True):
                                marker = gr.Textbox(f"[ref#{row + 1}]", label="Marker", scale=1, min_width=90)
                                short = gr.Textbox(
                                    label="Short text", placeholder=f"a [ref#{row + 1}] style image", scale=4
                                )
                                remove = gr.Button(
                                    "Remove", size="sm", scale=0, min_width=80, elem_id=f"remove{row + 1}"
                                )
                            image = reference_image(f"Reference {row + 1} image", f"ref{row + 1}")
                        groups.append(group)
                        rows.append((marker, short, image))
                        removes.append(remove)
                    add = gr.Button("Add a reference", size="sm")
                    with gr.Accordion("Settings", open=True):
                        with gr.Row():
                            sampler_box = gr.Dropdown(list(SAMPLERS), value=sampler, label="Sampler")
                            steps_box = gr.Slider(1, max(256, steps), value=steps, step=1, label="Steps")
                            images_box = gr.Slider(1, MAX_IMAGES, value=1, step=1, label="Images")
                            seed_box = gr.Number(0, precision=0, label="Seed (-1: random)")
                        with gr.Row():
                            mode_box = gr.Radio(
                                [GUIDANCE_SINGLE, GUIDANCE_SEPARATE], value=GUIDANCE_SINGLE, label="Guidance"
                            )
                            guidance_box = gr.Slider(0, 30, value=guidance, step=0.5, label="Guidance scale")
                            context_box = gr.Slider(
                                0, 30, value=guidance, step=0.5, label="Context guidance scale", visible=False
                            )
                        adapter_boxes = [
                            gr.Slider(-1, 2, value=weight, step=0.05, label=f"Adapter {label}")
                            for label, _, weight in demo.adapters
                        ]
                    button = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=2):
                    gallery = gr.Gallery(
                        label="Results",
                        columns=2,
                        object_fit="contain",
                        elem_id="gallery",
                        buttons=["download", "download_all", "fullscreen"],
                    )
                    status = gr.Markdown(elem_id="status")
            if examples:
                dataset = gr.Dataset(
                    label="Examples from the built-in world (click one, then Generate)",
                    components=[gr.Textbox(visible=False), gr.Image(visible=False)],
                    type="index",
                    samples=[[f"{e.task}: {e.text}", e.references[0][2] if e.references else None] for e in examples],
                    headers=["task: instruction", "first reference"],
                )
            if note:
                gr.Markdown(note)
        with gr.Tab("Data preview"):
            gr.Markdown("The first training instructions of a recipe, as `python -m zoo data preview` draws them.")
            with gr.Row():
                recipe_box = gr.Dropdown(
                    recipes, value=recipes[0] if recipes else None, label="Recipe", allow_custom_value=True
                )
                count_box = gr.Slider(1, 32, value=8, step=1, label="Instructions")
                preview_button = gr.Button("Preview", variant="primary")
            sheet = gr.Image(label="Contact sheet", type="filepath", interactive=False)
            report = gr.Textbox(label="Per-task counts", lines=8, interactive=False)

        row_outputs = [component for row in rows for component in row]

        def show(flags: list[bool]) -> list[Any]:
            return [gr.update(visible=flag) for flag in flags]

        def add_row(flags: list[bool]) -> list[Any]:
            flags = list(flags)
            if False in flags:
                flags[flags.index(False)] = True
            return [flags, *show(flags)]

        def remove_row(index: int) -> Callable[[list[bool]], list[Any]]:
            def handler(flags: list[bool]) -> list[Any]:
                flags = list(flags)
                flags[index] = False
                return [flags, *show(flags), f"[ref#{index + 1}]", "", None]

            return handler

        add.click(add_row, shown, [shown, *groups], api_visibility="private")
        for index, remove in enumerate(removes):
            remove.click(remove_row(index), shown, [shown, *groups, *rows[index]], api_visibility="private")
        mode_box.change(
            lambda mode: gr.update(visible=mode == GUIDANCE_SEPARATE), mode_box, context_box, api_visibility="private"
        )
        sampler_box.change(
            lambda name: [gr.update(value=value) for value in demo.sampler_defaults(name)],
            sampler_box,
            [steps_box, guidance_box],
            api_visibility="private",
        )
        if examples:

            def fill(index: int) -> list[Any]:
                example = examples[index]
                values, flags = [], []
                for row in range(MAX_REFERENCES):
                    if row < len(example.references):
                        values += list(example.references[row])
                    else:
                        values += [f"[ref#{row + 1}]", "", None]
                    flags.append(row < max(1, len(example.references)))
                return [example.text, *values, flags, *show(flags)]

            dataset.click(fill, dataset, [text, *row_outputs, shown, *groups], api_visibility="private")
        inputs = [
            text,
            *row_outputs,
            sampler_box,
            steps_box,
            mode_box,
            guidance_box,
            context_box,
            seed_box,
            images_box,
            *adapter_boxes,
        ]
        button.click(demo.generate, inputs, [gallery, status], api_name="generate", concurrency_limit=1)
        preview_button.click(
            lambda recipe, n: data_preview(recipe, n, demo.outputs),
            [recipe_box, count_box],
            [sheet, report],
            api_name="preview",
            concurrency_limit=1,
        )
    return app


@dataclass
class Server:
    """A running demo: `url`, and `close()` to stop it and remove its files."""

    app: gr.Blocks
    url: str
    outputs: Path

    def close(self) -> None:
        self.app.close()
        shutil.rmtree(self.outputs, ignore_errors=True)


def start(argv: list[str]) -> Server:
    """Loads the model once and starts the demo on 127.0.0.1 without blocking (ValueError: one line for the user)."""
    args = build_parser().parse_args(argv)
    if args.queue_size < 1:
        raise ValueError(f"--queue-size must be at least 1, got {args.queue_size}")
    pipe, description, adapters = load_pipeline(args)
    outputs = Path(tempfile.mkdtemp(prefix="zoo-serve-"))
    try:
        examples, note = build_examples(outputs)
        demo = Demo(pipe, description, adapters, outputs)
        app = build_app(demo, examples, note, recipe_choices(args.recipes), args.sampler)
        app.queue(max_size=args.queue_size, default_concurrency_limit=1)
        app.launch(
            server_name="127.0.0.1",
            server_port=args.port,
            prevent_thread_lock=True,
            quiet=True,  # main prints the one line that matters; Gradio's own lines suggest share links
            show_error=False,
            ssr_mode=False,
            theme=THEME,
            allowed_paths=[str(outputs)],
        )
    except OSError as error:  # Gradio's "Cannot find empty port in range" when the port is taken
        shutil.rmtree(outputs, ignore_errors=True)
        raise ValueError(f"--port {args.port}: {error}; pass another --port") from error
    return Server(app, app.local_url, outputs)


def main(argv: list[str]) -> int:
    try:
        server = start(argv)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"zoo serve: open {server.url} (Ctrl+C stops it)", flush=True)
    try:
        server.app.block_thread()
    finally:
        server.close()
    return 0

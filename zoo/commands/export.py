"""`python -m zoo export`: Lightning checkpoints → one pipeline folder (`InstructImagenPipeline.save_pretrained`).

The folder holds every component in diffusers' layout with safetensors weights (see `zoo.pipeline`) and loads with
`InstructImagenPipeline.from_pretrained`, `python -m zoo generate --model FOLDER` or `python -m zoo evaluate --ckpt
FOLDER`; `--push-to-hub user/name` uploads it (`zoo.hub`), after which those take the repo id in place of FOLDER.
A missing checkpoint ends with one line naming it and exit code 2.

The model card (README.md) also says where the weights came from, so a shared model can be reproduced and judged:
- provenance, read from the base checkpoint and its run folder: the optimizer steps, the training time Lightning's
  `Timer` measured (a run with `max_time`), and the run's full resolved config (LightningCLI's `config.yaml`), copied
  as `training_config.yaml` so `python -m zoo fit --config training_config.yaml` repeats the run;
- with `--eval DIR` (a `python -m zoo evaluate` output folder): its tables (unseen examples, chance baselines, 95%
  intervals), the evaluation command's settings, `evaluation.md` (the whole report) and the contact sheets.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from zoo.diffusion.samplers import SAMPLERS

# The report's sections the card repeats; the rest (how the numbers are measured, sheets) stays in evaluation.md.
CARD_SECTIONS = ("## In-domain", "## Zero-shot", "## Editing", "## Context ablation", "## Attribute pass rates")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m zoo export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="the base-stage checkpoint")
    parser.add_argument("--sr-ckpt", help="a super-resolution checkpoint (recipes/sr.yaml)")
    parser.add_argument("--out", required=True, metavar="FOLDER", help="the folder to write")
    parser.add_argument("--sampler", choices=SAMPLERS, default="ddpm", help="the pipeline's default sampler")
    parser.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="the pipeline's default guidance scale (default: the run's `guidance_scale`); e.g. the best of "
        "experiments/guidance_sweep.py",
    )
    parser.add_argument("--eval", metavar="DIR", help="a `python -m zoo evaluate` output folder to put in the card")
    parser.add_argument(
        "--weights",
        choices=("ema", "live"),
        default="ema",
        help="with an EMA run: the averaged weights (default, what the run sampled with) or the live ones",
    )
    hub = parser.add_argument_group("sharing on the Hugging Face Hub")
    hub.add_argument("--push-to-hub", metavar="USER/NAME", help="upload the written folder to this Hub repo")
    hub.add_argument("--private", action="store_true", help="create the repo private")
    hub.add_argument("--revision", default=None, help="a branch to commit to (created if missing); default main")
    hub.add_argument("--dry-run", action="store_true", help="with --push-to-hub: list the files, upload nothing")
    return parser


def provenance(checkpoint: dict, ckpt: Path, weights: str = "ema") -> tuple[str, Path | None]:
    """The card's "How it was made" section for a base checkpoint (its dict, read from `ckpt`), and its run's
    config.yaml (None if not found)."""
    steps = int(checkpoint.get("global_step", 0))
    timer = checkpoint.get("callbacks", {}).get("Timer", {}).get("time_elapsed", {})
    config = next((p / "config.yaml" for p in ckpt.parents if (p / "config.yaml").is_file()), None)
    lines = [
        "## How it was made",
        "",
        f"- {steps} optimizer steps"
        + (f", {timer['train'] / 60:.1f} minutes of training (Lightning's Timer)" if "train" in timer else "")
        + ".",
    ]
    if "current_model_state" in checkpoint:
        lines.append(f"- Weights: the run's {'EMA average' if weights == 'ema' else 'live (non-averaged) weights'}.")
    if config is not None:
        lines.append(
            "- The run's full resolved config is `training_config.yaml`; repeat the run with "
            "`python -m zoo fit --config training_config.yaml`."
        )
    return "\n".join(lines) + "\n", config


def evaluation(folder: Path, out: Path) -> str:
    """The card's "Evaluation" section from an evaluate output folder; copies its report and sheets into `out`."""
    report, summary = folder / "report.md", folder / "report.json"
    if not report.is_file() or not summary.is_file():
        raise ValueError(
            f"--eval {folder}: no report.md/report.json here; give a `python -m zoo evaluate --out` folder"
        )
    settings = json.loads(summary.read_text())
    shutil.copy(report, out / "evaluation.md")
    for sheet in settings.get("sheets", {}).values():
        target = out / "evaluation" / sheet
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(folder / sheet, target)
    kept, keep = [], False
    for line in report.read_text().splitlines():
        if line.startswith("## "):
            keep = line.startswith(CARD_SECTIONS)
        if keep:
            kept.append(line)
    options = ", ".join(f"{k}: {v}" for k, v in settings["settings"].items())
    sheets = "\n".join(f"- {name}: `evaluation/{sheet}`" for name, sheet in settings.get("sheets", {}).items())
    return (
        f"## Evaluation\n\n`python -m zoo evaluate` on suite `{settings['suite']}` ({options}): unseen examples, "
        "chance baselines beside the model, 95% bootstrap intervals. The whole report is `evaluation.md`.\n\n"
        + "\n".join(kept).replace("## ", "### ")
        + f"\n\nContact sheets (instruction, references, generated, "
        f"target):\n\n{sheets}\n"
    )


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    from huggingface_hub import ModelCard

    from zoo.checkpoint_io import CheckpointError, load_stage
    from zoo.lit.module import InstructImagen
    from zoo.lit.sr_module import SuperResolution
    from zoo.pipeline import InstructImagenPipeline

    try:
        # the base checkpoint is read once, for its weights and the card's provenance
        base, checkpoint = load_stage(InstructImagen, args.ckpt, "--ckpt", weights=args.weights)
        if args.weights == "live" and "current_model_state" not in checkpoint:
            raise CheckpointError(f"--ckpt {args.ckpt}: no live weights (the run kept no EMA); drop --weights live")
        if args.guidance_scale is not None:
            if args.guidance_scale < 0:
                raise ValueError(f"--guidance-scale must be ≥ 0, got {args.guidance_scale}")
            # sampling only: the weights are the run's; the card says the scale was chosen at export
            base.hparams.guidance_scale = args.guidance_scale
        sr = load_stage(SuperResolution, args.sr_ckpt, "--sr-ckpt")[0] if args.sr_ckpt is not None else None
        pipe = InstructImagenPipeline(base, sr, sampler=args.sampler)
        out = pipe.save_pretrained(args.out)
        made, config = provenance(checkpoint, Path(args.ckpt), args.weights)
        if args.guidance_scale is not None:
            made += (
                f"- Sampling default: guidance scale {args.guidance_scale:g}, set at export "
                f"(the run's recipe said {checkpoint['hyper_parameters'].get('guidance_scale')}).\n"
            )
        sections = [made]
        if config is not None:
            shutil.copy(config, out / "training_config.yaml")
        if args.eval is not None:
            sections.append(evaluation(Path(args.eval), out))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    card = ModelCard.load(out / "README.md")
    card.text = card.text.rstrip() + "\n\n" + "\n".join(sections)
    card.save(out / "README.md")
    print(out)
    if args.push_to_hub is not None:
        from zoo.commands.lora import push_or_list

        try:
            push_or_list(str(out), args.push_to_hub, args.private, args.revision, args.dry_run)
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return 0

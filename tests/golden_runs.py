"""The golden runs: a teacher stage and a linearly annealed student on a committed tiny encoder, pinned to committed numbers.

`tests/test_golden.py` runs them and compares with `tests/golden/values.json`
to 1e-5. The encoder in `tests/golden/encoder/` is committed (not built from a
seed at test time) so that a new transformers release that initialises
weights differently cannot move the numbers.

Regenerating the values is a deliberate act, for a change that is meant to
move the numbers (never to make a refactor pass):

    python tests/golden_runs.py --regenerate "why the numbers move"

which rewrites values.json and appends the reason to tests/golden/HISTORY.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).parent
GOLDEN = HERE / "golden"
ENCODER = GOLDEN / "encoder"
VALUES = GOLDEN / "values.json"
DATA = HERE / "fixtures" / "glue"
TOLERANCE = 1e-5

RECIPE = f"""
model = "{ENCODER}"
tasks = ["rte", "stsb", "cola"]
max_length = 32
eval_batch_size = 16
precision = "fp32"
seed = 0
checkpoint_every = 0
[teacher]
batch_size = 8
epochs = 6
learning_rate = 1e-3
[student]
batch_size = 8
epochs = 6
learning_rate = 1e-3
anneal = "linear"
"""


def build_encoder(folder: Path) -> None:
    """How tests/golden/encoder was made (kept for the record; the committed files are what the test loads)."""
    from transformers import BertConfig, BertModel, BertTokenizer

    from conftest import WORDS

    torch.manual_seed(0)
    vocabulary = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    config = BertConfig(
        vocab_size=len(vocabulary), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    BertModel(config).save_pretrained(folder)
    BertTokenizer(vocab=vocabulary).save_pretrained(folder)


def _outputs(path: Path) -> list:
    from bam.teacher_store import read_predictions

    return read_predictions(path).outputs.tolist()


def golden_runs(work: Path) -> dict:
    """Train the teachers and the student on one thread; their dev outputs and metrics."""
    from bam.config import load_recipe
    from bam.student import distill
    from bam.tasks import resolve
    from bam.teachers import train_teachers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recipe_path = work / "golden.toml"
        recipe_path.write_text(RECIPE)
        recipe = load_recipe(recipe_path)
        tasks = resolve(recipe)
        store, run = work / "teachers", work / "student"
        teacher_metrics = train_teachers(recipe, tasks, data_dir=DATA, store=store)
        student_metrics = distill(recipe, tasks, data_dir=DATA, teacher_store=store, out=run)
    finally:
        torch.set_num_threads(threads)
    return {
        "teachers": {"metrics": teacher_metrics, "dev": {task.name: _outputs(store / task.name / "dev.safetensors") for task in tasks}},
        "student": {
            "metrics": student_metrics,
            "metrics.json": json.loads((run / "metrics.json").read_text()),
            "dev": {task.name: _outputs(run / "predictions" / f"{task.name}.dev.safetensors") for task in tasks},
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--regenerate", metavar="REASON", required=True, help="why the pinned numbers are allowed to move")
    parser.add_argument("--build-encoder", action="store_true", help="also rebuild tests/golden/encoder (changes every number)")
    arguments = parser.parse_args()
    import tempfile

    sys.path.insert(0, str(HERE))
    if arguments.build_encoder:
        build_encoder(ENCODER)
    with tempfile.TemporaryDirectory() as work:
        values = golden_runs(Path(work))
    VALUES.write_text(json.dumps(values, indent=1) + "\n")
    with (GOLDEN / "HISTORY.md").open("a", encoding="utf-8") as history:
        history.write(f"- {datetime.date.today().isoformat()}: {arguments.regenerate}\n")
    print(f"wrote {VALUES}")


if __name__ == "__main__":
    main()

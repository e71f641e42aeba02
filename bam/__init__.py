"""bam: Born-Again Multi-Task networks (Clark et al., ACL 2019).

Data flows recipes -> teachers -> student -> analysis:
`bam.teachers` fine-tunes one model per task and caches its predictions,
`bam.student` distils them into one multi-task model with teacher annealing.
`bam.load(path)` gives a trained model that answers on new text (`bam.inference`).
"""

from bam.hardware import guard_onednn

__version__ = "0.1.0"

# Before torch first runs a oneDNN kernel: see bam/hardware.py.
guard_onednn()


def __getattr__(name: str):
    # `bam.load` without importing transformers for every `import bam` (the CLI's --help stays fast).
    if name == "load":
        from bam.inference import load

        return load
    raise AttributeError(f"module 'bam' has no attribute {name!r}")

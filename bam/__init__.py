"""bam: Born-Again Multi-Task networks (Clark et al., ACL 2019).

Data flows recipes -> teachers -> student -> analysis:
`bam.teachers` fine-tunes one model per task and caches its predictions,
`bam.student` distils them into one multi-task model with teacher annealing.
"""

from bam.hardware import guard_onednn

__version__ = "0.1.0"

# Before torch first runs a oneDNN kernel: see bam/hardware.py.
guard_onednn()

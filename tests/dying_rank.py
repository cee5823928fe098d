"""`clear-sae` with one rank that kills itself (SIGKILL) right after saving its n-th training checkpoint: a rank lost
mid-training, for tests/test_distributed.py. Run under torchrun as `dying_rank.py RANK N clear-sae arguments...`."""

from __future__ import annotations

import os
import signal
import sys

import clear_sae.sae.checkpoint as checkpoint
from clear_sae.cli import main

dying_rank, after = int(sys.argv[1]), int(sys.argv[2])
saved = 0
save = checkpoint.save_checkpoint


def save_then_die(*args, **kwargs) -> None:
    """Save as usual; on the dying rank, die once `after` checkpoints are saved."""
    global saved
    save(*args, **kwargs)
    saved += 1
    if int(os.environ["RANK"]) == dying_rank and saved >= after:
        os.kill(os.getpid(), signal.SIGKILL)


checkpoint.save_checkpoint = save_then_die
sys.exit(main(sys.argv[3:]))

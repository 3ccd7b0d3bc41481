"""Run by tests/test_cli_safety.py: ``grd reproduce`` that SIGKILLs itself mid-stage.

Usage: python _reproduce_kill_script.py STAGE K -- GRD_ARGS...

Counts the checkpoints ``grd.checkpoint.save_checkpoint`` writes for STAGE (the stage name
an experiment passes to ``Context.checkpointed``, e.g. ``stationary_seed0``) and kills the
process with SIGKILL (no clean-up can run) right after the K-th; with K = 0 it never kills
and prints ``saves=<count>`` on stdout at the end (how many checkpoints of STAGE this run
wrote: fewer than a fresh run's when it resumed).
"""

import os
import signal
import sys
from pathlib import Path

import grd.checkpoint as ck
from grd.cli import main

stage, kill_after = sys.argv[1], int(sys.argv[2])
argv = sys.argv[sys.argv.index("--") + 1 :]
real_save = ck.save_checkpoint
saves = 0


def save(path, tree, **kwargs):
    global saves
    out = real_save(path, tree, **kwargs)
    if Path(path).stem == stage:
        saves += 1
        if kill_after and saves >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    return out


ck.save_checkpoint = save
code = main(argv)
print(f"saves={saves}")
sys.exit(code)

"""``python -m trainer ARGS``: one training process, or one torchrun rank, of ``trainer.job.job_from_args(ARGS)``.

The worker side of every launcher: ``interest train --nproc N`` and the local multi-GPU task run it under torchrun
(``trainer.job.torchrun_command``), as every node of a PyTorchJob or a Vertex AI custom job does
(``trainer.launch.node_command``); ``ARGS`` is ``TrainJob.argv()``, parsed by the same ``add_arguments`` as
``interest train``, so the command line cannot drift from its parser. A bad setting exits 2 with one line
``train: error: ...`` on stderr, which the launcher reports as the run's error (``trainer.launch.run_torchrun``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from core.configs import ConfigError
from trainer.job import WORKER_ERROR, add_arguments, job_from_args
from trainer.train import fit, summary_line


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer", description="one training process")
    add_arguments(parser)
    job = job_from_args(parser.parse_args(list(argv)))
    logging.basicConfig(level=logging.INFO if int(os.environ.get("RANK", "0")) == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        summary = fit(job)
    except ConfigError as exc:
        print(f"{WORKER_ERROR}{exc}", file=sys.stderr)
        return 2
    if summary:  # every rank returns it; rank 0 alone has written it
        print(summary_line(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""What a run shows while it trains (rank 0 only): TensorBoard scalars, and a tqdm bar on a terminal or plain
periodic log lines otherwise.

TensorBoard tags: ``train/{loss,penalty,lr,grad_norm,tokens_per_second}`` by step; ``valid/{recall@10,ndcg@10}``
and ``norms/{user,item}_norm_{mean,p95,max}`` by step; the validation metrics again under ``valid_by_seconds/`` with
the step axis holding elapsed training seconds, so variants can be compared at equal wall-clock; and hparams.
For an object-store output (gs://, s3://) the events are written to a local folder and copied up at every validation and at the end.
In a Vertex AI CustomJob they are also copied to ``$AIP_TENSORBOARD_LOG_DIR``, which a Vertex AI TensorBoard named for
the job reads (trainer.launch.run_vertex).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter
from tqdm import tqdm

from core import storage

log = logging.getLogger("trainer")

VALID_TAGS = ("recall@10", "ndcg@10")
# Keys of trainer.metrics.norm_stats with the prefixes user_norm / item_norm.
NORM_TAGS = tuple(f"{kind}_norm_{stat}" for kind in ("user", "item") for stat in ("mean", "p95", "max"))


class Monitor:
    def __init__(self, output_dir: str, total_steps: int, start_step: int, log_every_steps: int):
        self.remote = storage.join(output_dir, "tensorboard") if storage.is_remote(output_dir) else None
        self.copies = [uri for uri in (self.remote, os.environ.get("AIP_TENSORBOARD_LOG_DIR")) if uri]
        log_dir = Path(tempfile.mkdtemp(prefix="interest-tb-")) if self.remote else Path(output_dir, "tensorboard")
        self.log_dir = log_dir
        # purge_step hides events a killed run logged after its last checkpoint: the resumed run logs them again.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=start_step or None)
        self.total_steps, self.log_every_steps = total_steps, log_every_steps
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True,
                        disable=not sys.stderr.isatty())
        self.started, self.start_step = time.monotonic(), start_step

    def train(self, step: int, loss: float, penalty: float, lr: float, grad_norm: float, tokens_per_second: float,
              steps_done: int) -> None:
        """Scalars of the last ``log_every_steps`` window; also advances the bar by ``steps_done``."""
        for tag, value in (("loss", loss), ("penalty", penalty), ("lr", lr), ("grad_norm", grad_norm),
                           ("tokens_per_second", tokens_per_second)):
            self.writer.add_scalar(f"train/{tag}", value, step)
        self.bar.update(steps_done)
        self.bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_second:,.0f}", refresh=False)
        if self.bar.disable:
            elapsed = time.monotonic() - self.started
            rate = (step - self.start_step) / elapsed if elapsed > 0 else 0.0
            eta = (self.total_steps - step) / rate if rate > 0 else float("inf")
            log.info("step %d/%d loss %.4f penalty %.4g lr %.3g grad_norm %.3g tokens/s %.0f eta %s", step,
                     self.total_steps, loss, penalty, lr, grad_norm, tokens_per_second, format_seconds(eta))

    def valid(self, step: int, wall_seconds: float, metrics: dict[str, float]) -> None:
        for tag in VALID_TAGS:
            self.writer.add_scalar(f"valid/{tag}", metrics[tag], step)
            self.writer.add_scalar(f"valid_by_seconds/{tag}", metrics[tag], round(wall_seconds))
        for tag in NORM_TAGS:
            self.writer.add_scalar(f"norms/{tag}", metrics[tag], step)
        log.info("step %d validation recall@10 %.4f ndcg@10 %.4f user_norm_mean %.2f", step,
                 metrics["recall@10"], metrics["ndcg@10"], metrics["user_norm_mean"])
        self.writer.flush()
        self.sync()

    def flush(self) -> None:
        self.writer.flush()
        self.sync()

    def hparams(self, hparams: dict, metrics: dict[str, float]) -> None:
        self.writer.add_hparams(hparams, metrics, run_name=".")

    def sync(self) -> None:
        for uri in self.copies:
            storage.copy_tree(str(self.log_dir), uri)

    def close(self) -> None:
        self.bar.close()
        self.writer.close()
        self.sync()
        if self.remote:
            shutil.rmtree(self.log_dir, ignore_errors=True)


def format_seconds(seconds: float) -> str:
    if seconds == float("inf"):
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"

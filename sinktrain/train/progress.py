"""What a user sees while training: a progress line and TensorBoard scalars (rank 0 only)."""

from __future__ import annotations

import datetime
import logging
import time

logger = logging.getLogger("sinktrain")


def format_eta(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class Progress:
    def __init__(self, total_steps: int, start_step: int, samples_per_step: int, tensorboard_dir: str | None, enabled: bool):
        self.total, self.start, self.samples_per_step = total_steps, start_step, samples_per_step
        self.enabled = enabled
        self.started = time.perf_counter()
        self.writer = None
        if enabled and tensorboard_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(tensorboard_dir)

    def line(self, step: int, loss: float, lr: float, skipped: int, extra: dict[str, float]) -> str:
        elapsed = time.perf_counter() - self.started
        done = step - self.start
        rate = done * self.samples_per_step / elapsed if elapsed > 0 else 0.0
        eta = elapsed / done * (self.total - step) if done else 0.0
        text = f"step {step}/{self.total} | loss {loss:.4f} | lr {lr:.2e} | {rate:.1f} samples/s | ETA {format_eta(eta)}"
        text += "".join(f" | {name.split('/')[-1]} {float(value.float().mean()) if hasattr(value, 'mean') else value:.3g}" for name, value in extra.items())
        return text + (f" | skipped {skipped}" if skipped else "")

    def log(
        self, step: int, loss: float, lr: float, skipped: int, show: bool, extra: dict[str, float] | None = None,
        board_only: dict[str, float] | None = None,
    ) -> None:
        """``extra``: method-specific scalars by TensorBoard tag, e.g. {"diysink/sinks_per_image": 2.3};
        ``board_only``: more of them for TensorBoard alone (too many for the progress line)."""
        if not self.enabled:
            return
        extra = extra or {}
        if show:
            logger.info(self.line(step, loss, lr, skipped, extra))
        if self.writer is not None:
            elapsed = time.perf_counter() - self.started
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)
            self.writer.add_scalar("train/samples_per_sec", (step - self.start) * self.samples_per_step / max(elapsed, 1e-9), step)
            self.writer.add_scalar("data/skipped_samples", skipped, step)
            for tag, value in {**extra, **(board_only or {})}.items():
                if hasattr(value, "numel"):  # a tensor: one histogram per step
                    self.writer.add_histogram(tag, value.float().cpu(), step)
                    self.writer.add_scalar(f"{tag}_mean", float(value.float().mean()), step)
                else:
                    self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

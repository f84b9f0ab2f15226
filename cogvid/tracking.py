"""Optional experiment tracking: log each finished video with its settings to Weights & Biases."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cogvid.errors import UsageError

_SCALARS = ("seed", "steps", "guidance", "frames", "height", "width", "fps")


def _has_credentials() -> bool:
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun") or os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    try:
        return "api.wandb.ai" in netrc.read_text(encoding="utf-8", errors="ignore")
    except OSError:
        return False


def require_credentials() -> None:
    """UsageError (before anything heavy) when W&B would have to ask for a login."""
    if not _has_credentials():
        raise UsageError(
            "--wandb needs a Weights & Biases login",
            hint="run `wandb login`, set WANDB_API_KEY, or set WANDB_MODE=offline to log locally",
        )


class WandbLogger:
    """One W&B run for a batch; ``log_video`` uploads (or, offline, stores) each video with its settings."""

    def __init__(self, project: str, config: dict[str, Any], group: str | None = None, name: str | None = None) -> None:
        require_credentials()
        import wandb

        try:
            self.run = wandb.init(project=project, config=config, group=group, name=name, job_type="cogvid-batch")
        except Exception as e:  # wandb raises its own error types for bad projects, network, auth
            raise UsageError(f"cannot start a Weights & Biases run: {e}", hint="check --wandb PROJECT and your login") from e
        self._wandb = wandb

    def log_video(self, path: Path, metadata: dict[str, Any], seconds: float) -> None:
        """Log one finished video: the file, its prompt as caption, and its numeric settings."""
        record: dict[str, Any] = {
            "video": self._wandb.Video(str(path), caption=metadata.get("prompt", ""), format="mp4"),
            "seconds": seconds,
        }
        record.update({key: metadata[key] for key in _SCALARS if isinstance(metadata.get(key), (int, float))})
        self.run.log(record)

    def finish(self) -> None:
        self.run.finish()

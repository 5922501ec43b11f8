"""What `batch` made from what, kept in OUTDIR/.instantrestore-batch.json: a finished output is skipped when its
input, bundle, profile and options are the same and the output still has the hash we wrote."""

from __future__ import annotations

import json
import time
from pathlib import Path

from instantrestore.runtime.files import atomic_write_json, sha256_file

from .batch_videos import Video
from .progress import say

MANIFEST_NAME = ".instantrestore-batch.json"
MANIFEST_FORMAT = "instantrestore-batch"


def read_manifest(out_dir: Path) -> dict:
    try:
        manifest = json.loads((out_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        say(f"warning: {out_dir / MANIFEST_NAME} is unreadable; every video will be restored again")
        return {}
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return {}
    videos = manifest.get("videos")
    return videos if isinstance(videos, dict) else {}


def write_manifest(out_dir: Path, entries: dict) -> None:
    atomic_write_json(out_dir / MANIFEST_NAME, {"format": MANIFEST_FORMAT, "version": 1, "videos": entries})


def video_key(video: Video, bundle_id: str, profile_sha256: str, blend: float) -> dict:
    """What an output was made from: the same key and an intact output mean there is nothing to redo."""
    return {"input_sha256": sha256_file(video.source), "bundle_id": bundle_id, "profile_sha256": profile_sha256,
            "options": {"blend": blend}}


def is_done(video: Video, entry) -> bool:
    if not isinstance(entry, dict) or entry.get("key") != video.key or not video.output.is_file():
        return False
    return sha256_file(video.output) == entry.get("output_sha256")


def finished_entry(video: Video) -> dict:
    """The manifest's entry for a video restored just now."""
    return {"input": str(video.source), "key": video.key, "output_sha256": sha256_file(video.output),
            "frames": video.frames, "faces_restored": video.faces_restored, "seconds": round(video.seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}

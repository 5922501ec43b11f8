"""`instantrestore demo`: the whole flow without the hub, every output marked as not the real model."""

import json

import numpy as np
import pytest

from instantrestore.plugin import home

from tests.support.commands import CLIP_FRAMES, face_regions, run
from tests.support.media_helpers import read_frames

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]

BANNER = "[instantrestore] DEMO MODEL: "


def test_demo_makes_a_random_default_bundle_that_enroll_and_video_announce(fresh_home, selfies, clip, tmp_path,
                                                                            tiny_bundle, capsys):
    home.remember_bundle(tiny_bundle)  # a real bundle was the default: demo says how to get it back
    code, out, err = run(capsys, "demo")
    assert code == 0, err
    demo = fresh_home / "bundles" / "demo-tiny"
    assert home.last_bundle_dir() == demo.resolve()
    assert json.loads((demo / "config.json").read_text())["source"]["random"] == "tiny"
    assert f"switch back with `instantrestore bundles use {tiny_bundle.resolve()}`" in err
    for step in ("instantrestore enroll ", "instantrestore video ", "instantrestore camera ", "instantrestore ui",
                 "instantrestore bench ", "instantrestore export"):
        assert step in out
    code, _, err = run(capsys, "demo")  # again: the same bundle, not written twice
    assert code == 0 and "already there" in err

    code, _, err = run(capsys, "enroll", selfies[0], selfies[1], "--name", "demo")
    assert code == 0, err
    assert err.splitlines()[0].startswith(BANNER) and "random weights, not the real model" in err
    restored = tmp_path / "restored.mp4"
    code, _, err = run(capsys, "video", clip, "-o", restored, "--profile", "demo")
    assert code == 0, err
    assert [line for line in err.splitlines() if line.startswith(BANNER)] == [err.splitlines()[0]]
    before, after = read_frames(clip), read_frames(restored)
    assert len(after) == CLIP_FRAMES
    outside, inner = face_regions(before[0])
    difference = np.abs(after[0].astype(int) - before[0].astype(int)).max(axis=2)
    assert difference[inner].mean() > 20 and difference[outside].mean() < 5  # the face replaced, the rest kept


def test_commands_with_the_real_model_say_nothing_of_a_demo(in_state, clip, tmp_path, capsys):
    code, _, err = run(capsys, "video", clip, "-o", tmp_path / "restored.mp4", "--profile", "me")
    assert code == 0, err
    assert "DEMO MODEL" not in err

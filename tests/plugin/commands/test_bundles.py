"""`instantrestore bundles`: several bundles side by side and switching the default."""

import torch

from instantrestore.plugin import home
from instantrestore.plugin.cli import main
from instantrestore.runtime import load_bundle


# ------------------------------------------------------------------------------------- several bundles


def test_a_second_export_says_how_to_switch_back_and_bundles_lists_both(tiny_release, tiny_restorer, tmp_path,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("INSTANTRESTORE_HOME", str(tmp_path / "state"))
    common = ["--checkpoint", str(tiny_release["checkpoint"]), "--base", str(tiny_release["base"]),
              "--vae", str(tiny_release["vae"])]
    assert main(["export", *common, "--dtype", "float32"]) == 0
    first = home.bundles_dir() / "final_model_ckpt-float32"
    assert home.last_bundle_dir() == first.resolve()
    # a profile enrolled with the first bundle
    profile = tiny_restorer.enroll(torch.zeros(1, 3, 128, 128))
    profile.bundle_id = load_bundle(first).bundle_id
    profile.save(home.profile_path("me"))
    capsys.readouterr()

    assert main(["export", *common]) == 0  # float16: a second bundle beside the first
    second = home.bundles_dir() / "final_model_ckpt-float16"
    err = capsys.readouterr().err
    assert f"{second} is now the default bundle (it was {first.resolve()}); switch back with " \
           "`instantrestore bundles use final_model_ckpt-float32`" in err
    assert "profiles enrolled with another bundle, not usable with this one: me" in err

    assert main(["bundles"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert rows == [["final_model_ckpt-float16", "float16", "final_model_ckpt.pt", "0 profiles", "default"],
                    ["final_model_ckpt-float32", "float32", "final_model_ckpt.pt", "1 profile"]]

    assert main(["bundles", "use", "final_model_ckpt-float32"]) == 0
    assert home.last_bundle_dir() == first.resolve()
    assert "1 profile fit it: me" in capsys.readouterr().err
    assert main(["bundles", "use", "nothing-here"]) == 2
    assert "no bundle named 'nothing-here'" in capsys.readouterr().err
    assert home.last_bundle_dir() == first.resolve()

"""Bad input: each case gives one clear line naming the fix, exit code 2 and no partial files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from darkmatter.pipeline import cli

from helpers import TINY_D_MODEL, TINY_HOOK, leftovers, run_script, save_sae


def base_args(model_dir: Path, sae_dir: Path, text: str, out: Path) -> list[str]:
    return ["--model", str(model_dir), "--hook-name", TINY_HOOK, "--sae-path", str(sae_dir),
            "--text-files", text, "--context-size", "32", "--n-tokens", "800", "--completeness-runs", "0",
            "--outputs", str(out)]


def fails(capsys, step: int, argv: list[str], *expected: str) -> str:
    code = cli.main(step, argv)
    lines = capsys.readouterr().err.strip().splitlines()  # progress bars may precede the error
    err = lines[-1] if lines else ""
    assert code == 2, lines
    assert err.startswith("error: ") and sum(x.startswith("error:") for x in lines) == 1, lines
    for text in expected:
        assert text in err, err
    return err


def no_temporary_files(folder: Path) -> bool:
    return not leftovers(folder)


def test_missing_earlier_step(tmp_path, capsys):
    fails(capsys, 3, ["--outputs", str(tmp_path)], "config.json is missing",
          "01_setup_and_load.py")


def test_missing_collection_after_setup(tmp_path, capsys, tiny_model_dir, tiny_sae_dir, text_glob):
    assert cli.main(1, base_args(tiny_model_dir, tiny_sae_dir, text_glob, tmp_path)) == 0
    capsys.readouterr()
    fails(capsys, 4, ["--outputs", str(tmp_path)], "02_collect_activations.py")
    fails(capsys, 3, ["--outputs", str(tmp_path)], "02_collect_activations.py")


def test_sae_of_the_wrong_width(tmp_path, capsys, tiny_model_dir, text_glob):
    wrong = save_sae(tmp_path / "sae48", 48, 96)
    out = tmp_path / "out"
    fails(capsys, 1, base_args(tiny_model_dir, wrong, text_glob, out),
          "(96, 48)", f"{TINY_D_MODEL} wide", "--sae-path")
    assert not out.exists() or not list(out.iterdir())


def test_missing_sae(tmp_path, capsys, tiny_model_dir, text_glob):
    out = tmp_path / "out"
    fails(capsys, 1, base_args(tiny_model_dir, tmp_path / "nowhere", text_glob, out),
          "no SAE at", "--sae-path")


def test_unknown_hook(tmp_path, capsys, tiny_model_dir, tiny_sae_dir, text_glob):
    argv = base_args(tiny_model_dir, tiny_sae_dir, text_glob, tmp_path)
    argv += ["--hook-name", "blocks.6.hook_resid_mid_typo"]
    fails(capsys, 1, argv, "unknown hook", "blocks.6.hook_resid_mid_typo")
    assert not list(tmp_path.iterdir())


def test_nan_activations_from_the_model(tmp_path, capsys, tiny_model_dir, tiny_sae_dir, text_glob):
    broken = tmp_path / "broken_model"
    shutil.copytree(tiny_model_dir, broken)
    state = torch.load(broken / "weights.pt")
    state["blocks.2.mlp.W_in"][:] = float("nan")
    torch.save(state, broken / "weights.pt")
    out = tmp_path / "out"
    assert cli.main(1, base_args(broken, tiny_sae_dir, text_glob, out)) == 0
    capsys.readouterr()
    fails(capsys, 2, ["--outputs", str(out)], "NaN", "--model")
    assert not (out / "activations.npy").exists() and not (out / "residuals.npy").exists()
    assert no_temporary_files(out)


def test_nan_in_residuals_file(tmp_path, capsys, tiny_model_dir, tiny_sae_dir, text_glob):
    argv = base_args(tiny_model_dir, tiny_sae_dir, text_glob, tmp_path)
    assert cli.main(1, argv) == 0
    assert cli.main(2, ["--outputs", str(tmp_path)]) == 0
    capsys.readouterr()
    resid = np.load(tmp_path / "residuals.npy", mmap_mode="r+")
    resid[123, 4] = np.nan
    resid.flush()
    del resid
    fails(capsys, 3, ["--outputs", str(tmp_path)], "NaN", "02_collect_activations.py")
    assert not (tmp_path / "diagnostics.json").exists() and no_temporary_files(tmp_path)


def test_wrong_shape_of_a_collected_array(tmp_path, capsys, tiny_model_dir, tiny_sae_dir, text_glob):
    argv = base_args(tiny_model_dir, tiny_sae_dir, text_glob, tmp_path)
    assert cli.main(1, argv) == 0
    assert cli.main(2, ["--outputs", str(tmp_path)]) == 0
    capsys.readouterr()
    np.save(tmp_path / "residuals.npy", np.zeros((800, TINY_D_MODEL + 1), dtype=np.float32))
    fails(capsys, 3, ["--outputs", str(tmp_path)], "shape", "02_collect_activations.py")


def test_default_outputs_folder_is_used_without_the_flag(tmp_path):
    import subprocess
    import sys

    from helpers import REPO

    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "03_diagnostics.py")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "outputs/config.json is missing" in proc.stderr and "01_setup_and_load.py" in proc.stderr


def test_script_exit_code_and_message(tmp_path):
    proc = run_script("05_compare_sae.py", "--outputs", str(tmp_path / "empty"), check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "01_setup_and_load.py" in proc.stderr


def test_config_of_another_version(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"n_tokens": 5}')
    fails(capsys, 3, ["--outputs", str(tmp_path)], "another version", "01_setup_and_load.py")


def test_unknown_flag_and_bad_choice_are_one_line(tmp_path):
    for argv, text in ((["--n-tokenz", "5"], "unrecognized arguments"),
                       (["--ica-backend", "jax"], "invalid choice")):
        proc = run_script("04_run_ica.py", "--outputs", str(tmp_path), *argv, check=False)
        assert proc.returncode == 2 and text in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr


def test_missing_cached_activations(tmp_path, capsys):
    fails(capsys, 1, ["--activations", str(tmp_path / "nope.npy"), "--outputs", str(tmp_path / "o")],
          "--activations", "no such file")


"""The ICA components as a SAELens SAE: a round trip through ``SAE.load_from_disk`` on synthetic data
and on a small planted run's step-04 outputs; SAELens metadata of the SAEs step 01 saves, and the
refusal of an SAE trained at another hook."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from darkmatter.errors import DarkMatterError
from darkmatter.pipeline import cli, flags, table
from darkmatter.pipeline.resolve import resolve_new
from darkmatter.pipeline.source_kinds import sae_metadata
from darkmatter.sources.ica_sae import ICASAE, ica_sae_metadata, load_ica_sae, save_ica_sae
from darkmatter.sources.saes import check_hook, folder_metadata, write_folder_metadata

from helpers import TINY_HOOK, run_steps, save_sae

D, K = 24, 7
META = {"model_name": "gpt2", "hook_name": "blocks.6.hook_resid_pre", "context_size": 128, "prepend_bos": True,
        "dataset_path": "Skylion007/openwebtext"}


def synthetic(seed: int = 0):
    """A non-orthogonal mixing [D, K], its pseudo-inverse as unmixing [K, D], a mean and residual rows."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(D, D)))
    mixing = q[:, :K] * rng.uniform(0.5, 2.0, size=K) + 0.1 * rng.normal(size=(D, K))
    unmixing = np.linalg.pinv(mixing)
    mean = rng.normal(size=D) * 3
    r = rng.laplace(size=(500, K)) @ mixing.T + 0.05 * rng.normal(size=(500, D)) + mean
    return unmixing, mixing, mean, r


def test_round_trip_through_saelens(tmp_path):
    from sae_lens import SAE, StandardSAE

    unmixing, mixing, mean, r = synthetic()
    folder = tmp_path / "ica_sae"
    save_ica_sae(folder, unmixing, mixing, mean, META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ica_sae"], "temporary folder left behind"
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "cfg.json", "sae_weights.safetensors"]

    sae = SAE.load_from_disk(str(folder))
    assert isinstance(sae, StandardSAE) and sae.cfg.d_in == D and sae.cfg.d_sae == 2 * K
    x = torch.tensor(r, dtype=torch.float32)
    with torch.no_grad():
        f = sae.encode(x)
        decoded = sae.decode(f).numpy()
    assert (f >= 0).all()
    s = (f[:, :K] - f[:, K:]).numpy()
    expected = (r - mean) @ unmixing.T
    np.testing.assert_allclose(s, expected, atol=1e-5 * np.abs(expected).max())
    assert ((f[:, :K] > 0) & (f[:, K:] > 0)).sum() == 0  # one of each pair fires
    np.testing.assert_allclose(decoded, expected @ mixing.T + mean, atol=1e-5 * np.abs(r).max())

    cfg = json.loads((folder / "cfg.json").read_text())
    assert cfg["architecture"] == "standard" and cfg["apply_b_dec_to_input"] is True
    assert cfg["normalize_activations"] == "none" and cfg["reshape_activations"] == "none"
    for key, value in META.items():
        assert cfg["metadata"][key] == value and getattr(sae.cfg.metadata, key) == value
    assert cfg["metadata"]["n_components"] == K and cfg["metadata"]["sae_lens_version"]
    assert "f[:, :k] - f[:, k:]" in (folder / "README.md").read_text()

    ica = load_ica_sae(folder)
    np.testing.assert_allclose(ica.sources(r), expected, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(ica.sources(torch.tensor(r)), ica.sources(r))
    np.testing.assert_allclose(ica.unmixing, unmixing, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ica.mixing, mixing, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ica.reconstruct(r), decoded, rtol=1e-6, atol=1e-5)

    save_ica_sae(folder, unmixing[:3], mixing[:, :3], mean, META)  # an existing folder is replaced
    assert load_ica_sae(folder).k == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["ica_sae"]


def test_bad_shapes_and_folders_name_the_fix(tmp_path):
    unmixing, mixing, mean, r = synthetic()
    with pytest.raises(DarkMatterError, match=r"do not fit together.*ica_unmixing.npy"):
        save_ica_sae(tmp_path / "a", unmixing, mixing.T, mean, META)
    with pytest.raises(DarkMatterError, match="must be 1-D"):
        save_ica_sae(tmp_path / "a", unmixing, mixing, mean[None], META)
    assert not list(tmp_path.iterdir())
    with pytest.raises(DarkMatterError, match=r"no SAE at .*save_ica_sae"):
        load_ica_sae(tmp_path / "missing")
    with pytest.raises(DarkMatterError, match="not an ICA SAE"):
        load_ica_sae(save_sae(tmp_path / "plain", D, 2 * K))
    save_ica_sae(tmp_path / "ica", unmixing, mixing, mean, META)
    with pytest.raises(DarkMatterError, match=rf"reads \[m, {D}\] rows"):
        load_ica_sae(tmp_path / "ica").sources(r[:, :5])


@pytest.fixture(scope="module")
def planted_run(tmp_path_factory):
    """Steps 01-04 of a small planted run (oracle SAE, fixed k, no Gaussian control: a few seconds)."""
    out = tmp_path_factory.mktemp("planted_ica_sae")
    argv = ["--preset", "planted", "--planted-d-model", "16", "--planted-features", "24", "--planted-withheld", "4",
            "--n-tokens", "4000", "--stability-splits", "1", "--n-components", "8", "--control", "false",
            "--device", "cpu", "--outputs", str(out)]
    run_steps(resolve_new(flags.parse(argv, None).given), 1, 2, 3, 4)
    return out


def test_export_of_a_run_reproduces_its_sources(planted_run, tmp_path):
    out = planted_run
    config = json.loads((out / "config.json").read_text())
    meta = ica_sae_metadata(sae_metadata(config), base_sae="sae", hook_name=json.loads((out / "setup.json").read_text())
                            ["hook"]["hook_name"])
    save_ica_sae(tmp_path / "ica_sae", np.load(out / "ica_unmixing.npy"), np.load(out / "ica_mixing.npy"),
                 np.load(out / "residual_mean.npy"), meta)
    ica = load_ica_sae(tmp_path / "ica_sae")
    assert isinstance(ica, ICASAE) and ica.k == 8 and ica.d_model == 16
    expected = np.load(out / "ica_activations.npy")
    scale = np.abs(expected).max()
    np.testing.assert_allclose(ica.sources(np.load(out / "residuals.npy")), expected, atol=1e-4 * scale)
    # from activations through the run's SAE (a folder or a loaded SAELens SAE)
    x = np.load(out / "activations.npy")
    np.testing.assert_allclose(ica.residual_sources(x, out / "sae"), expected, atol=1e-4 * scale)
    assert ica.sae.cfg.metadata.hook_name == "planted" and ica.sae.cfg.metadata.residual_hook_name == \
        "planted.hook_sae_error"
    # step 01 filled the SAELens metadata of the SAE it saved
    sae_meta = folder_metadata(out / "sae")
    assert sae_meta["hook_name"] == "planted" and sae_meta["model_name"] == "planted"
    assert sae_meta["model_source"] == "planted"


def test_metadata_of_a_model_run():
    config = resolve_new(flags.parse(["--preset", "gpt2-small-res-jb"], None).given).to_dict()
    meta = ica_sae_metadata(sae_metadata(config), base_sae="gpt2-small-res-jb/blocks.6.hook_resid_pre")
    assert {k: meta[k] for k in META} == META
    assert meta["model_class_name"] == "HookedTransformer"
    with pytest.raises(DarkMatterError, match="source.hook_name"):
        sae_metadata({"run": {}})


def test_an_sae_trained_at_another_hook_is_refused(tmp_path, capsys):
    assert check_hook({}, TINY_HOOK, 32, True) == []
    assert check_hook({"hook_name": TINY_HOOK, "context_size": 32, "prepend_bos": True}, TINY_HOOK, 32, True) == []
    notes = check_hook({"hook_name": TINY_HOOK, "context_size": 128, "prepend_bos": False}, TINY_HOOK, 32, True)
    assert len(notes) == 2 and "`context_size` 128" in notes[0] and "`prepend_bos` false" in notes[1]
    assert check_hook({"hook_name": TINY_HOOK, "context_size": 128}, TINY_HOOK) == []  # no windows: nothing to say
    with pytest.raises(DarkMatterError, match="pass `hook_name` blocks.3.hook_resid_pre, or pick an SAE"):
        check_hook({"hook_name": "blocks.3.hook_resid_pre"}, TINY_HOOK)

    sae_dir = save_sae(tmp_path / "sae", 16, 32)
    write_folder_metadata(sae_dir, {"hook_name": "blocks.3.hook_resid_pre"})
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(600, 16)).astype(np.float32))
    out = tmp_path / "out"
    code = cli.main(1, ["--activations", str(tmp_path / "x.npy"), "--sae-path", str(sae_dir), "--hook-name",
                        TINY_HOOK, "--n-tokens", "200", "--outputs", str(out)])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and err.startswith("error: the SAE was trained on blocks.3.hook_resid_pre")
    assert "--hook-name blocks.3.hook_resid_pre" in err
    assert not out.exists() or not list(out.iterdir())


def test_an_sae_folder_sets_the_windows_the_user_did_not_type(tmp_path, capsys):
    sae_dir = save_sae(tmp_path / "sae", 16, 32)
    write_folder_metadata(sae_dir, {"hook_name": TINY_HOOK, "context_size": 64, "prepend_bos": False})

    def resolved(*argv):
        return resolve_new(flags.parse(["--model", "gpt2", "--hook-name", TINY_HOOK, "--sae-path", str(sae_dir),
                                        *argv], table.step(1)).given).source

    s = resolved()
    assert (s.context_size, s.prepend_bos) == (64, False)
    assert "--context-size 64, --prepend-bos false" in capsys.readouterr().out
    s = resolved("--context-size", "32", "--prepend-bos", "true")
    assert (s.context_size, s.prepend_bos) == (32, True)

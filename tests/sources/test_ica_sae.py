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
from darkmatter.sources.ica_sae import ICASAE, ResidualExpected, ica_sae_metadata, load_ica_sae, rms_norm, save_ica_sae
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
    readme = (folder / "README.md").read_text()
    assert "f[:, :k] - f[:, k:]" in readme and f'load_from_disk("{folder.as_posix()}")' in readme

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


def test_a_staged_export_names_its_final_folder_and_the_residual(tmp_path):
    """Written under a staging name (as step 08's transaction does), the README and the metadata
    name the folder users load, the base SAE (absolute, and relative to the export) and the input."""
    unmixing, mixing, mean, r = synthetic()
    base = save_sae(tmp_path / "run" / "sae", D, 2 * K)
    final = tmp_path / "run" / "ica_sae"
    meta = ica_sae_metadata(META, base_sae_path=base, residual_rms_norm=1.0, activation_rms_norm=5.0)
    save_ica_sae(tmp_path / "stage" / ".ica_sae.tmp123", unmixing, mixing, mean, meta, final=final)
    folder = tmp_path / "stage" / ".ica_sae.tmp123"
    readme = (folder / "README.md").read_text()
    assert ".tmp" not in readme and readme.count(f'"{final.as_posix()}"') == 3
    assert "reads the residual r = x - base_sae(x)" in readme and str(base.resolve()) in readme
    m = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert m["input"] == "residual x - base_sae(x)" and m["hook_name"] == META["hook_name"]
    assert m["residual_hook_name"] == META["hook_name"] + ".hook_sae_error"
    assert m["base_sae_path"] == m["base_sae"] == str(base.resolve()) and m["base_sae_path_from_export"] == "../sae"
    assert m["base_sae_release"] is None and "NOT the activations x" in m["input_warning"]
    assert (m["residual_rms_norm"], m["activation_rms_norm"]) == (1.0, 5.0)
    pre = ica_sae_metadata(META, base_sae_release="gpt2-small-res-jb", base_sae_id="blocks.6.hook_resid_pre")
    assert pre["base_sae"] == "gpt2-small-res-jb/blocks.6.hook_resid_pre" and pre["base_sae_path"] is None
    with pytest.raises(DarkMatterError, match="both `base_sae_release` and `base_sae_id`"):
        ica_sae_metadata(META, base_sae_release="gpt2-small-res-jb")


def test_activations_given_for_residuals_are_refused(tmp_path):
    """Rows with the activations' RMS norm raise a ValueError naming the fix; residuals pass; the
    check can be turned off; without stored norms nothing is checked."""
    unmixing, mixing, mean, r = synthetic()
    res = rms_norm(r, chunk_size=64)
    assert res == pytest.approx(np.sqrt((r ** 2).sum(1).mean()), rel=1e-12)
    x = r * 4.0  # activations: 4x the residual's norm
    save_ica_sae(tmp_path / "ica", unmixing, mixing, mean,
                 ica_sae_metadata(META, base_sae="b", residual_rms_norm=res, activation_rms_norm=4 * res))
    ica = load_ica_sae(tmp_path / "ica")
    for call in (ica.sources, ica.encode, ica.reconstruct):
        with pytest.raises(ValueError, match=r"reads x - base_sae\(x\).*compute the residual first"):
            call(x)
    with pytest.raises(ResidualExpected, match="check_input=False"):
        ica.sources(torch.tensor(x[:10]))
    assert issubclass(ResidualExpected, DarkMatterError)
    expected = (r - mean) @ unmixing.T
    np.testing.assert_allclose(ica.sources(r), expected, atol=1e-5 * np.abs(expected).max())
    assert ica.encode(r).shape == (len(r), 2 * K)
    assert ica.sources(x, check_input=False).shape == (len(r), K)
    assert load_ica_sae(tmp_path / "ica", check_input=False).sources(x).shape == (len(r), K)
    save_ica_sae(tmp_path / "plain", unmixing, mixing, mean, META)  # no norms: no check
    assert load_ica_sae(tmp_path / "plain").sources(x).shape == (len(r), K)
    with pytest.raises(DarkMatterError, match="cannot find the base SAE b.*pass the base SAE"):
        ica.residual(x)


def test_step_08_exports_an_honest_ica_sae(tiny_run):
    """The export of a real run (tiny model, SAE trained by 01): cfg.json names the residual and the
    base SAE, the dataset, the norms; the README the final folder; SAELens loads it and the sources
    match ica_activations.npy; the activations are refused and go through the base SAE instead."""
    from sae_lens import SAE

    out = tiny_run
    folder = out / "ica_sae"
    m = json.loads((folder / "cfg.json").read_text())["metadata"]
    assert m["hook_name"] == TINY_HOOK and m["input"] == "residual x - base_sae(x)"
    assert m["base_sae_path"] == str((out / "sae").resolve()) and m["base_sae_path_from_export"] == "../sae"
    assert m["dataset_path"].endswith("*.txt") and m["dataset_description"].startswith("local text files")
    x, r = np.load(out / "activations.npy"), np.load(out / "residuals.npy")
    assert m["residual_rms_norm"] == pytest.approx(np.sqrt((r.astype(np.float64) ** 2).sum(1).mean()), rel=1e-9)
    assert m["activation_rms_norm"] == pytest.approx(np.sqrt((x.astype(np.float64) ** 2).sum(1).mean()), rel=1e-9)
    assert m["activation_rms_norm"] > 1.5 * m["residual_rms_norm"]
    readme = (folder / "README.md").read_text()
    assert ".tmp" not in readme and f'load_from_disk("{folder.as_posix()}")' in readme

    sae = SAE.load_from_disk(str(folder))
    expected = np.load(out / "ica_activations.npy")
    with torch.no_grad():
        f = sae.encode(torch.tensor(r)).numpy()
    k = expected.shape[1]
    atol = 1e-4 * np.abs(expected).max()
    np.testing.assert_allclose(f[:, :k] - f[:, k:], expected, atol=atol)
    ica = load_ica_sae(folder)
    np.testing.assert_allclose(ica.sources(r), expected, atol=atol)
    with pytest.raises(ValueError, match="compute the residual first"):
        ica.sources(x)
    np.testing.assert_allclose(ica.residual(x), r, atol=1e-4 * np.abs(r).max())  # the base SAE from the metadata
    np.testing.assert_allclose(ica.residual_sources(x), expected, atol=atol)


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

"""Flow training on a tiny real latent cache (simulated videos -> tiny VQVAE -> cache): a complete run
folder, exact resume after a stop, the options, and a 2-process DDP run with gloo."""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from safetensors.torch import load_file

from smokeflow.cli import main as cli_main
from smokeflow.config import load_config
from smokeflow.flow.path import FlowPath
from smokeflow.flow.predictor import FlowConfig, build_vector_field
from smokeflow.training.flow_trainer import FlowTrainingConfig, learning_rate_factor, train_flow, training_loss
from smokeflow.training.run_logger import read_metrics

from vqvae_helpers import TINY_CONFIG, tiny_latent_data


@pytest.fixture(scope="module")
def latent_data(tmp_path_factory):
    """(data root with a train+val latent cache, VQVAE folder), made by the real code."""
    return tiny_latent_data(str(tmp_path_factory.getbasetemp()))


def _train(tmp, latent_data, name, **kwargs):
    root, vqvae = latent_data
    run_dir = os.path.join(tmp, name)
    metrics = train_flow(run_dir, load_config(TINY_CONFIG), root, seed=3, vqvae_checkpoint=vqvae,
                         show_progress=False, **kwargs)
    return run_dir, metrics


def test_cli_training_writes_a_complete_self_contained_run(latent_data, tmp_path):
    root, vqvae = latent_data
    code = cli_main(["train", "--run-name", "r", "--config", TINY_CONFIG, "--random-seed", "1", "--device", "cpu",
                     "--data", root, "--vqvae-checkpoint", vqvae, "--runs-dir", str(tmp_path), "--no-progress"])
    assert code == 0
    run = tmp_path / "r"
    for name in ("config.yaml", "vqvae.safetensors", "latent_stats.safetensors", "flow.safetensors",
                 "train_state.pt", "metrics.jsonl"):
        assert (run / name).is_file(), name
    train = read_metrics(run, "train")
    val = read_metrics(run, "val")
    assert [r["step"] for r in train] == [2, 4, 6]
    assert all(r["train_loss"] > 0 and r["lr"] > 0 and r["steps_per_s"] > 0 for r in train)
    assert [r["step"] for r in val] == [2, 4, 6] and all(r["val_loss"] > 0 and r["val_loss_ema"] > 0 for r in val)
    assert sorted(os.listdir(run / "samples")) == ["step_000003.gif", "step_000006.gif"]
    # The folder loads as a whole: SmokeFlow predicts with the EMA flow weights saved there.
    from smokeflow.pipeline import SmokeFlow

    pipe = SmokeFlow.from_pretrained(str(run))
    frames = pipe.decode(torch.zeros(2, 16, 8, 8))
    out = pipe.predict(frames, num_frames=2, steps=2, num_samples=2)
    assert out.frames.shape == (2, 2, 64, 64, 3) and out.nfe == 4


def test_resume_after_a_stop_repeats_the_uninterrupted_run_exactly(latent_data, tmp_path):
    full, _ = _train(str(tmp_path), latent_data, "full")
    root, vqvae = latent_data
    # As if killed after step 3 (through the CLI, which comparison runs use).
    assert cli_main(["train", "--run-name", "part", "--config", TINY_CONFIG, "--random-seed", "3", "--device", "cpu",
                     "--data", root, "--vqvae-checkpoint", vqvae, "--runs-dir", str(tmp_path), "--no-progress",
                     "--stop-after-step", "3"]) == 0
    part = os.path.join(str(tmp_path), "part")
    state = torch.load(os.path.join(part, "train_state.pt"), weights_only=True)
    assert state["step"] == 3
    _train(str(tmp_path), latent_data, "part", resume=True)
    a, b = load_file(os.path.join(full, "flow.safetensors")), load_file(os.path.join(part, "flow.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(os.path.join(full, "train_state.pt"), weights_only=True)
    sb = torch.load(os.path.join(part, "train_state.pt"), weights_only=True)
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])
    assert sa["scheduler"]["last_epoch"] == sb["scheduler"]["last_epoch"] == 6
    # The resumed run's log has each step once, as the uninterrupted one.
    assert [r["step"] for r in read_metrics(part, "train")] == [r["step"] for r in read_metrics(full, "train")]


def test_two_process_ddp_sees_different_data_and_ends_with_equal_weights(latent_data, tmp_path):
    root, vqvae = latent_data
    code = cli_main(["train", "--run-name", "ddp", "--config", TINY_CONFIG, "--num-gpus", "2", "--device", "cpu",
                     "--data", root, "--vqvae-checkpoint", vqvae, "--runs-dir", str(tmp_path), "--no-progress",
                     "--max-steps", "4"])
    assert code == 0
    run = tmp_path / "ddp"
    train = read_metrics(run, "train")
    assert len(train) == 2
    for record in train:
        sums = record["rank_batch_sums"]
        assert len(sums) == 2 and sums[0] != sums[1]
    (ddp,) = read_metrics(run, "ddp")
    checksums = ddp["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1]
    assert (run / "flow.safetensors").is_file()


def test_loss_options_change_the_loss_and_the_schedule_warms_up_then_decays(latent_data):
    from smokeflow.data.latent_cache import LatentClipDataset

    root, _ = latent_data
    config = load_config(TINY_CONFIG)
    model = build_vector_field(FlowConfig.from_section(config["flow"]))
    torch.nn.init.normal_(model.head.weight, std=0.1)
    clips = torch.stack([LatentClipDataset(root, "train", 6, windows="all", seed=0)[i] for i in range(3)])
    base = dataclasses.replace(FlowTrainingConfig.from_section(config["flow_training"]), smoke_weight=1.0,
                               condition_noise=0.0)

    def loss(cfg):
        return training_loss(model, FlowPath(), clips, cfg, torch.Generator().manual_seed(0), None).item()

    plain = loss(base)
    assert plain == loss(base)  # same draws -> same loss
    assert loss(dataclasses.replace(base, smoke_weight=5.0)) != plain
    assert loss(dataclasses.replace(base, condition_noise=0.5)) != plain
    on_predictions = dataclasses.replace(base, rollout_reference_prob=1.0, rollout_reference_steps=2)
    assert loss(on_predictions) == loss(on_predictions) != plain
    chained = dataclasses.replace(on_predictions, rollout_reference_chain=3)
    assert loss(chained) == loss(chained) != loss(on_predictions)
    # The warm-start path draws after RIVER's draws: with s fixed at 0 it is RIVER's loss exactly.
    assert loss(dataclasses.replace(base, warm_start_path_prob=1.0, warm_start_path_max=0.0)) == plain
    warm = dataclasses.replace(base, warm_start_path_prob=1.0, warm_start_path_max=0.5)
    assert loss(warm) == loss(warm) != plain
    # Time weighting draws nothing: the same draws, each clip's error weighted by (1 - t) ** p (a weighted mean).
    timed = dataclasses.replace(base, loss_time_power=2.0)
    assert loss(timed) == loss(timed) != plain
    assert loss(dataclasses.replace(base, loss_time_power=1e-9)) == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ValueError, match="loss_time_power"):
        dataclasses.replace(base, loss_time_power=-1.0)
    # Change weighting draws nothing either: same draws, positions weighted by the true frame's change.
    changing = dataclasses.replace(base, change_weight=4.0)
    assert loss(changing) == loss(changing) != plain
    assert loss(dataclasses.replace(base, change_weight=1.0 + 1e-9)) == pytest.approx(plain, rel=1e-6)
    with pytest.raises(ValueError, match="change_weight"):
        dataclasses.replace(base, change_weight=0.5)
    # On CPU the step's Gaussian noise comes from the step's generator itself (no extra draw); on a GPU from a
    # generator there seeded by one draw from it (benchmarks/check_cuda.py runs that path).
    from smokeflow.training.flow_trainer import device_noise_generator

    generator = torch.Generator().manual_seed(3)
    assert device_noise_generator(generator, torch.device("cpu")) is generator
    assert training_loss(model, FlowPath(), clips, base, torch.Generator().manual_seed(0), None,
                         noise_on_device=False).item() == plain
    assert generator.initial_seed() == 3 and torch.equal(generator.get_state(),
                                                         torch.Generator().manual_seed(3).get_state())
    lr = [learning_rate_factor(s, dataclasses.replace(base, warmup_steps=4, max_steps=20)) for s in range(20)]
    assert lr[0] < lr[3] == 1.0 and lr[-1] < lr[10] < lr[4]
    assert abs(lr[-1] - base.min_lr_ratio) < 0.02


def test_wandb_without_the_package_is_a_clear_error(latent_data, tmp_path, capsys):
    try:
        import wandb  # noqa: F401
        pytest.skip("wandb is installed here")
    except ImportError:
        pass
    root, vqvae = latent_data
    code = cli_main(["train", "--run-name", "w", "--config", TINY_CONFIG, "--device", "cpu", "--data", root,
                     "--vqvae-checkpoint", vqvae, "--runs-dir", str(tmp_path), "--no-progress", "--wandb",
                     "--max-steps", "1"])
    assert code == 2
    assert "wandb" in capsys.readouterr().err


def test_wandb_offline_run_logs_the_same_metrics(latent_data, tmp_path, monkeypatch):
    """Where wandb is installed: --wandb without network stores an offline run inside the run folder."""
    pytest.importorskip("wandb")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_SILENT", "true")
    root, vqvae = latent_data
    code = cli_main(["train", "--run-name", "w", "--config", TINY_CONFIG, "--device", "cpu", "--data", root,
                     "--vqvae-checkpoint", vqvae, "--runs-dir", str(tmp_path), "--no-progress", "--wandb",
                     "--max-steps", "2"])
    assert code == 0
    offline = [d for d in os.listdir(tmp_path / "w" / "wandb") if d.startswith("offline-run-")]
    assert len(offline) == 1
    assert any(name.endswith(".wandb") for name in os.listdir(tmp_path / "w" / "wandb" / offline[0]))
    assert [r["step"] for r in read_metrics(tmp_path / "w", "train")] == [2]


def test_time_limit_stops_after_a_checkpoint(latent_data, tmp_path):
    run_dir, _ = _train(str(tmp_path), latent_data, "timed", max_minutes=0.0)
    assert torch.load(os.path.join(run_dir, "train_state.pt"), weights_only=True)["step"] == 1
    assert os.path.isfile(os.path.join(run_dir, "flow.safetensors"))


def test_init_from_starts_from_another_runs_weights(latent_data, tmp_path):
    first, _ = _train(str(tmp_path), latent_data, "first", max_steps=2)
    second, _ = _train(str(tmp_path), latent_data, "second", max_steps=1, init_from=first)
    fresh, _ = _train(str(tmp_path), latent_data, "fresh", max_steps=1)
    a = load_file(os.path.join(first, "flow.safetensors"))
    b = load_file(os.path.join(second, "flow.safetensors"))
    c = load_file(os.path.join(fresh, "flow.safetensors"))
    # One more step moves the weights only a little away from the run it started from.
    dist = lambda x, y: sum((x[k] - y[k]).abs().sum().item() for k in x)  # noqa: E731
    assert dist(a, b) < dist(a, c)


def test_a_river_run_fine_tunes_into_a_network_with_the_warm_start_input(latent_data, tmp_path):
    root, vqvae = latent_data
    first, _ = _train(str(tmp_path), latent_data, "river", max_steps=2)
    config = load_config(TINY_CONFIG)
    config["flow"]["vector_field_regressor"]["warm_start_input"] = True
    config["flow_training"].update(warm_start_path_prob=1.0, warm_start_path_max=0.5, rollout_reference_prob=0.5,
                                   max_steps=1)
    second = os.path.join(str(tmp_path), "warm")
    train_flow(second, config, root, seed=3, vqvae_checkpoint=vqvae, show_progress=False, init_from=first)
    a, b = load_file(os.path.join(first, "flow.safetensors")), load_file(os.path.join(second, "flow.safetensors"))
    new = sorted(set(b) - set(a))
    assert new and all(k.startswith("warm_start_mlp.") for k in new) and set(a) <= set(b)
    # One step of fine-tuning: the shared weights moved only a little, and the new input started learning.
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 0.05
    assert b["warm_start_mlp.2.weight"].abs().sum() > 0


def test_predicted_references_are_made_exactly_as_the_sampler_makes_frames(latent_data):
    """The training-time prediction of a reference frame is the sampler's prediction (same noise, same steps)."""
    from smokeflow.data.latent_cache import LatentClipDataset
    from smokeflow.flow.sampler import rollout
    from smokeflow.training.rollout_reference import predicted_references

    root, _ = latent_data
    model = build_vector_field(FlowConfig.from_section(load_config(TINY_CONFIG)["flow"]))
    torch.nn.init.normal_(model.head.weight, std=0.1)
    clip = torch.as_tensor(LatentClipDataset(root, "train", 4, windows="all", seed=0)[0])
    clips = clip.unsqueeze(0).expand(3, -1, -1, -1, -1)  # the same clip 3 times, like K samples of it
    # float32 like the CPU sampler (training's "auto" precision may pick bf16 on a CPU with native bf16)
    predicted = predicted_references(model, FlowPath(), clips, torch.ones(3, dtype=torch.long), steps=3,
                                     warm_start=0.1, generator=torch.Generator().manual_seed(7), precision="fp32")
    sampled = rollout(model, FlowPath(), clip[:1], num_frames=1, steps=3, solver="euler", warm_start=0.1,
                      num_samples=3, seed=7).latents[:, 0]
    torch.testing.assert_close(predicted, sampled)
    assert not torch.allclose(predicted, clip[1])  # a prediction, not the true frame
    # Later frames: the context is drawn from the frames before the previous one (distance >= 2).
    later = predicted_references(model, FlowPath(), clips, torch.tensor([1, 2, 3]), steps=2, warm_start=0.0,
                                 generator=torch.Generator().manual_seed(1))
    assert later.shape == (3, *clip.shape[1:]) and torch.isfinite(later).all()
    with pytest.raises(ValueError, match="ref_idx >= 1"):
        predicted_references(model, FlowPath(), clips, torch.zeros(3, dtype=torch.long), 2, 0.1,
                             torch.Generator())


def test_chained_predictions_replace_a_run_of_frames_ending_at_the_reference(latent_data):
    """Chains: the l frames up to the reference are predictions (l in 1..min(chain, ref_idx)), all others true."""
    from smokeflow.data.latent_cache import LatentClipDataset
    from smokeflow.training.rollout_reference import chained_predicted_clips

    root, _ = latent_data
    model = build_vector_field(FlowConfig.from_section(load_config(TINY_CONFIG)["flow"]))
    torch.nn.init.normal_(model.head.weight, std=0.1)
    dataset = LatentClipDataset(root, "train", 6, windows="all", seed=0)
    clips = torch.stack([torch.as_tensor(dataset[i % len(dataset)]) for i in range(12)])
    before = clips.clone()
    ref_idx = torch.tensor([1, 2, 3, 4] * 3)
    out = chained_predicted_clips(model, FlowPath(), clips, ref_idx, chain=3, steps=2, warm_start=0.1,
                                  generator=torch.Generator().manual_seed(0))
    assert torch.equal(clips, before) and out.shape == clips.shape
    changed = (out != clips).flatten(2).any(-1)  # [B, T]: which frames are predictions
    lengths = []
    for row, ref in zip(changed, ref_idx.tolist()):
        length = int(row.sum())
        assert 1 <= length <= min(3, ref)
        assert row[ref - length + 1 : ref + 1].all()  # one run of frames, ending at the reference
        lengths.append(length)
    assert max(lengths) > 1  # chains do occur
    single = chained_predicted_clips(model, FlowPath(), clips, ref_idx, chain=1, steps=2, warm_start=0.1,
                                     generator=torch.Generator().manual_seed(0))
    assert ((single != clips).flatten(2).any(-1).sum(1) == 1).all()
    with pytest.raises(ValueError, match="chain"):
        chained_predicted_clips(model, FlowPath(), clips, ref_idx, 0, 2, 0.1, torch.Generator())


def test_cli_set_overrides_config_values_and_trains_on_predicted_references(latent_data, tmp_path, capsys):
    root, vqvae = latent_data
    base = ["train", "--run-name", "s", "--config", TINY_CONFIG, "--device", "cpu", "--data", root,
            "--vqvae-checkpoint", vqvae, "--runs-dir", str(tmp_path), "--no-progress"]
    code = cli_main(base + ["--set", "flow_training.rollout_reference_prob=0.5", "flow_training.max_steps=3",
                               "flow_training.learning_rate=2e-4"])
    assert code == 0
    saved = load_config(str(tmp_path / "s" / "config.yaml"))["flow_training"]
    assert saved["rollout_reference_prob"] == 0.5 and saved["max_steps"] == 3 and saved["learning_rate"] == 2e-4
    assert [r["step"] for r in read_metrics(tmp_path / "s", "train")][-1] == 3
    # A typo is an error that names the key, never a silently added setting.
    assert cli_main(base[:2] + ["t"] + base[3:] + ["--set", "flow_training.learning_rat=1"]) != 0
    assert "'flow_training': unknown key(s) ['learning_rat']" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()
    assert cli_main(base[:2] + ["t"] + base[3:] + ["--set", "flow_trainin.max_steps=1"]) != 0
    assert "no section 'flow_trainin'" in capsys.readouterr().err
    assert cli_main(base + ["--resume", "--set", "flow_training.max_steps=4"]) != 0
    assert "--set cannot be combined with --resume" in capsys.readouterr().err


def test_ema_state_loads_onto_the_models_device():
    """Resume loads the train state onto the CPU; the EMA shadow must follow the model (found on CUDA, where
    the first update after a resume mixed devices). The meta device stands in for a GPU here."""
    from smokeflow.training.flow_trainer import EMA

    saved = EMA(torch.nn.Linear(3, 2), decay=0.9).state_dict()
    ema = EMA(torch.nn.Linear(3, 2, device="meta"), decay=0.5)
    ema.load_state_dict(saved)
    assert all(v.device.type == "meta" for v in ema.shadow.values())
    assert ema.decay == 0.9


def test_preloaded_latents_give_the_same_batches_and_the_same_run(latent_data, tmp_path):
    """Batches gathered from the cache held in memory (the default on CUDA) equal the per-clip reads, flips
    included, and a run trained on them ends with the same weights."""
    from smokeflow.data.latent_cache import LatentClipDataset
    from smokeflow.data.preloaded_latents import PreloadedLatentClips
    from smokeflow.training.flow_trainer import load_batch

    root, _ = latent_data
    dataset = LatentClipDataset(root, "train", 4, random_horizontal_flip=True, windows="all", seed=5)
    preloaded = PreloadedLatentClips(dataset, "cpu")
    assert preloaded.nbytes == 2 * dataset.stored_array().nbytes
    flips_seen = set()
    for epoch in range(4):
        dataset.set_epoch(epoch)
        indices = [0, len(dataset) - 1, 1, 0]
        flips_seen.update(dataset.clip_rows(i)[1] for i in indices)
        expected = torch.stack([dataset[i] for i in indices])
        assert torch.equal(preloaded.batch(indices), expected)
        assert torch.equal(load_batch(dataset, indices, "cpu"), expected)
    assert flips_seen == {True, False}  # both kinds of rows were gathered

    config = load_config(TINY_CONFIG)
    runs = {}
    for preload in (True, False):
        config["flow_training"] = {**config["flow_training"], "preload_latents": preload}
        root, vqvae = latent_data
        run_dir = os.path.join(str(tmp_path), f"preload_{preload}")
        train_flow(run_dir, config, root, seed=3, vqvae_checkpoint=vqvae, show_progress=False, max_steps=3)
        runs[preload] = load_file(os.path.join(run_dir, "flow.safetensors"))
    assert all(torch.equal(runs[True][k], runs[False][k]) for k in runs[True])
    with pytest.raises(ValueError, match="preload_latents"):
        FlowTrainingConfig(preload_latents="sometimes")

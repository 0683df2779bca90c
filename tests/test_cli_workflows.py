"""Your pair, your data, from the command line: eval / certify / calibrate / train on saved tiny models and on
CIFAR-format, ImageFolder and digits data the tests write; the JSON equals the Python API; user errors exit 2
with one line."""

from __future__ import annotations

import argparse
import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from robustmix import AdaptiveSmoothing, AttackSuite, evaluate_models
from robustmix.cli import COMMANDS, build_parser, main
from robustmix.registry import build_architecture, register_architecture
from robustmix.workflow import load_dataset


def tiny_cnn(num_classes: int = 10, channels: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 4, 3, padding=1), nn.Softplus(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
        nn.Linear(16, num_classes),
    )


register_architecture("cli_test_cnn", tiny_cnn, overwrite=True)


def _weights(tmp_path, name: str, seed: int, channels: int, classes: int = 10) -> str:
    torch.manual_seed(seed)
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_cnn(classes, channels).state_dict().items()}, str(path))
    return str(path)


def _pair_args(tmp_path, channels: int) -> list[str]:
    g = _weights(tmp_path, "g", 0, channels)
    h = _weights(tmp_path, "h", 1, channels)
    arch = f'cli_test_cnn{{"channels": {channels}}}'
    return ["--g", f"{arch}:{g}", "--h", f"{arch}:{h}"]


def _python_pair(tmp_path, channels: int) -> AdaptiveSmoothing:
    from safetensors.torch import load_file

    models = []
    for name in ("g", "h"):
        m = build_architecture("cli_test_cnn", channels=channels)
        m.load_state_dict(load_file(str(tmp_path / f"{name}.safetensors")))
        models.append(m.eval())
    return AdaptiveSmoothing(*models, alpha=1.0, mode="argmax", space="logit")


def _write_cifar10(root, n: int = 24) -> None:
    rng = np.random.default_rng(0)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": rng.integers(0, 10, n).tolist()}
    with open(folder / "test_batch", "wb") as f:
        pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, f)


def _write_image_folder(root, per_class: int = 3, classes: int = 10, size: int = 12) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in range(classes):
        (root / f"c{c:02d}").mkdir(parents=True)
        for k in range(per_class):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / f"c{c:02d}" / f"{k}.png")


EVAL = ["--steps", "2", "--restarts", "1", "--alphas", "0,1,inf", "--autoattack", "off", "--eps", "8/255",
        "--no-progress", "--device", "cpu"]


@pytest.mark.parametrize("dataset", ["cifar10", "imagefolder", "digits"])
def test_eval_json_equals_the_python_api(tmp_path, dataset, capsys):
    channels = 1 if dataset == "digits" else 3
    data_args, load_kwargs = [], {}
    if dataset == "cifar10":
        _write_cifar10(tmp_path / "data")
        data_args, load_kwargs = ["--data-dir", str(tmp_path / "data")], {"data_dir": tmp_path / "data"}
    elif dataset == "imagefolder":
        _write_image_folder(tmp_path / "images")
        data_args = ["--data-dir", str(tmp_path / "images"), "--image-size", "8"]
        load_kwargs = {"data_dir": tmp_path / "images", "image_size": 8}
    out = tmp_path / "run.json"
    argv = ["eval", "--dataset", dataset, *data_args, "--limit", "20", *_pair_args(tmp_path, channels), *EVAL,
            "--out", str(out), "--quiet"]
    assert main(argv) == 0
    record = json.loads(out.read_text())
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and "robust accuracy" in summary[0]

    data = load_dataset(dataset, limit=20, **load_kwargs)
    model = _python_pair(tmp_path, channels)
    suite = AttackSuite(eps=8 / 255, steps=2, restarts=1, alphas=(0.0, 1.0, float("inf")), autoattack=False)
    report = evaluate_models({"g (standard)": model.g, "h (robust)": model.h, "mixture": model}, data.x, data.y,
                             suite, progress=False)
    assert record["n"] == 20 and record["dataset"] == {"name": dataset, "split": "test", "n": 20}
    assert record["clean"] == report["mixture"].clean and record["robust"] == report["mixture"].robust
    assert [r["robust"] for r in record["rows"]] == [s.robust for s in report.scores]
    assert record["survival"] == report.masks["mixture"].int().tolist()
    assert record["threat_model"] == {"norm": "linf", "eps": 8 / 255}
    assert set(record["versions"]) == {"robustmix", "torch", "python"}


def test_eval_of_a_saved_directory_and_a_sweep_plot(tmp_path):
    (tmp_path / "w").mkdir()
    _pair_args(tmp_path / "w", 1)
    mixture = _python_pair(tmp_path / "w", 1)
    saved = mixture.save_pretrained(tmp_path / "saved")
    out, plot = tmp_path / "r.json", tmp_path / "sweep.png"
    assert main(["eval", "--model", str(saved), "--limit", "16", *EVAL, "--sweep", "--plot", str(plot),
                 "--out", str(out), "--quiet"]) == 0
    record = json.loads(out.read_text())
    assert [r["alpha"] for r in record["rows"]][3:] == [0.0, 1.0, "inf"] and plot.stat().st_size > 0


def test_certify_calibrate_and_train_run_end_to_end_and_load_back(tmp_path, capsys):
    from robustmix import from_pretrained

    pair = _pair_args(tmp_path, 1)
    common = ["--dataset", "digits", "--device", "cpu", "--no-progress"]
    cert_out = tmp_path / "cert.json"
    assert main(["certify", *pair, *common, "--limit", "3", "--n", "100", "--radii", "0,0.001",
                 "--out", str(cert_out)]) == 0
    cert = json.loads(cert_out.read_text())
    assert len(cert["theorem2"]["radius_per_example"]) == 3 and "[CERTIFICATE]" in capsys.readouterr().out

    cal_out = tmp_path / "cal.json"
    assert main(["calibrate", *pair, *common, "--limit", "200", "--eps", "0.01", "--steps", "3",
                 "--target", "0.8", "--save", str(tmp_path / "cal"), "--out", str(cal_out), "--quiet"]) == 0
    record = json.loads(cal_out.read_text())
    loaded = from_pretrained(tmp_path / "cal")
    data = load_dataset("digits", split="train", limit=200)
    with torch.no_grad():
        clean = float((loaded(data.x).argmax(1) == data.y).double().mean())
    assert clean == pytest.approx(record["predicted_clean"])
    assert loaded.h_map.get_config() == record["h_map"]

    capsys.readouterr()
    assert main(["train", *pair, *common, "--limit", "64", "--eps", "0.05", "--steps", "2", "--out",
                 str(tmp_path / "train"), "--quiet"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    printed = float(line.rsplit(" ", 1)[1].rstrip("%"))
    trained = from_pretrained(tmp_path / "train" / "model")
    data = load_dataset("digits", split="train", limit=64)
    with torch.no_grad():
        clean = float((trained(data.x).argmax(1) == data.y).double().mean())
    assert 100 * clean == pytest.approx(printed, abs=0.005)
    assert json.loads((tmp_path / "train" / "run.json").read_text())["steps"] == 2


def _one_error_line(capsys, argv) -> str:
    with pytest.raises(SystemExit) as exit_info:
        code = main(argv)
        raise SystemExit(code)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_user_errors_exit_2_with_one_line(tmp_path, capsys):
    pair = _pair_args(tmp_path, 1)
    (tmp_path / "empty").mkdir()
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "note.txt").write_text("not images")
    cases = {
        "unknown architecture": (["eval", "--g", "no_such_net", "--h", "no_such_net", *EVAL], "unknown architecture"),
        "missing weights": (["eval", "--g", "cli_test_cnn:missing.safetensors", "--h", pair[3], *EVAL],
                            "no weights file"),
        "pickle weights": (["eval", "--g", "cli_test_cnn:w.pt", "--h", pair[3], *EVAL], ".safetensors"),
        "missing data dir": (["eval", "--dataset", "cifar10", "--data-dir", str(tmp_path / "nope"), *pair, *EVAL],
                             "not a directory"),
        "no cifar in dir": (["eval", "--dataset", "cifar10", "--data-dir", str(tmp_path / "empty"), *pair, *EVAL],
                            "no CIFAR10 data"),
        "image folder format": (["eval", "--dataset", "imagefolder", "--data-dir", str(tmp_path / "flat"), *pair,
                                 *EVAL], "not an image folder"),
        "class count": (["eval", "--g", f"cli_test_cnn{{\"channels\": 1, \"num_classes\": 7}}:{_weights(tmp_path, 'g7', 0, 1, classes=7)}", "--h",
                         pair[3], *EVAL], "classes"),
        "missing model dir": (["eval", "--model", str(tmp_path / "no_model"), *EVAL], "no_model"),
        "bad option value": (["eval", "--eps", "eight", *EVAL[:-4]], "8/255"),
        "g without h": (["eval", "--g", pair[1], *EVAL], "--g and --h"),
    }
    for name, (argv, needle) in cases.items():
        line = _one_error_line(capsys, argv)
        assert needle in line, (name, line)


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="unknown architecture"):
        main(["--debug", "eval", "--g", "no_such_net", "--h", "no_such_net", *EVAL])
    with pytest.raises(ValueError, match="unknown architecture"):
        main(["eval", "--g", "no_such_net", "--h", "no_such_net", *EVAL, "--debug"])


def _subcommands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _subcommands(sub, (*path, name))


@pytest.mark.parametrize("path", [p for p, _ in _subcommands(build_parser())], ids=" ".join)
def test_help_lists_every_option_with_its_default(path):
    sub = dict(_subcommands(build_parser()))[path]
    assert path[0] in COMMANDS
    text = sub.format_help()
    options = [a for a in sub._actions if a.option_strings and a.dest != "help"]
    for action in options:
        assert action.option_strings[-1] in text and action.help, action
    assert text.count("(default:") >= len(options)

"""``robustmix eval``: clean and per-example worst-case robust accuracy of a mixture, its g and h, and
optionally a fixed-α sweep, on a standard dataset; a RobustBench-style summary line and a JSON record.

The model is ``--model`` (saved directory, Hub repo id, zoo name) or ``--g``/``--h`` with mixture options;
without either, the digits demo's pair. Every row faces every attack of the suite, and every adversarial
input that broke one row is tried on the others. Under ``torchrun --nproc_per_node=N`` the examples are
split over the N processes; rank 0 prints and writes.
"""

from __future__ import annotations

import argparse

from . import _options as opt

_PAPER_ALPHAS = "0,0.316,1.46,6.81,31.6,147,681,3162,inf"  # section 6.3, as robustmix.attacks.PAPER_ALPHAS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    opt.add_model_arguments(parser)
    opt.add_data_arguments(parser)
    opt.add_threat_arguments(parser)
    parser.add_argument("--alphas", type=opt.numbers, default=opt.numbers(_PAPER_ALPHAS),
                        help="fixed α_t the mixtures are attacked at (eq. 6)")
    parser.add_argument("--sweep", action="store_true", help="also evaluate fixed-α mixtures at every --alphas value")
    parser.add_argument("--plot", default=None, help="write the accuracy-robustness plot of the sweep (PNG) here; implies --sweep")
    opt.add_run_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from ..distributed import init_from_env
    from ..evaluate import format_table, plot_alpha_sweep
    from ..evaluate.accuracy import evaluate_models, fixed_alpha_mixtures
    from ..workflow import resolve_device, run_record, write_json
    from ..workflow.results import summary_line

    start = time.perf_counter()
    ctx = init_from_env(device=resolve_device(args.device).type)  # one process, or one rank under torchrun
    device = ctx.device
    data = opt.load_data(args)
    model = opt.load_model(args, data, device)
    suite = opt.suite_of(args, args.alphas)
    x, y = data.x.to(device), data.y.to(device)
    rows = {"g (standard)": model.g, "h (robust)": model.h, "mixture": model}
    sweep = fixed_alpha_mixtures(model, args.alphas) if args.sweep or args.plot else {}
    rows.update(sweep)
    alphas = dict(zip(sweep, args.alphas, strict=True)) if sweep else None
    progress = opt.progress_of(args) and ctx.is_main
    report = evaluate_models(rows, x, y, suite, progress=progress, distributed=ctx.distributed, alphas=alphas)
    if not ctx.is_main:
        return 0
    elapsed = time.perf_counter() - start
    mixture = report["mixture"]
    line = summary_line(opt.describe_model(args), f"{data.name} ({data.split})", suite.norm, suite.eps, mixture.clean, mixture.robust,
                        mixture.n)
    opt.say(args, format_table(report, title=f"{data.name} ({data.split}), {len(y)} examples"))
    print(line)
    if args.plot and sweep:
        path = plot_alpha_sweep([report[n] for n in sweep], report["mixture"], args.plot)
        opt.say(args, f"plot written to {path}")
    if args.out:
        record = run_record(
            "eval", model=opt.model_spec(args), dataset={"name": data.name, "split": data.split, "n": len(y)},
            threat_model={"norm": suite.norm, "eps": suite.eps}, suite=suite.describe(data.num_classes),
            rows=[{"name": s.name, "clean": s.clean, "robust": s.robust, "alpha": s.alpha} for s in report.scores],
            clean=mixture.clean, robust=mixture.robust, n=mixture.n, seconds=elapsed,
            survival=report.masks["mixture"].int(), summary=line,
        )
        opt.say(args, f"wrote {write_json(args.out, record)}")
    return 0

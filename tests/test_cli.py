"""`qsample bench`: prints a table against the classical floor and writes JSON."""

import json

import dimod
import pytest

from qsample.cli import main


def test_bench_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(["bench", "--batch", "1", "4", "--top-k", "8", "--vocab", "500", "--repeats", "1",
                 "--combos", "gumbel/neal", "boltzmann/exact", "--json", str(out)])
    assert code == 0
    table = capsys.readouterr().out
    assert "floor ms" in table and "gumbel" in table and "boltzmann" in table
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert {(r["mode"], r["backend"], r["batch"]) for r in rows} == {
        ("gumbel", "neal", 1), ("gumbel", "neal", 4), ("boltzmann", "exact", 1),
        ("boltzmann", "exact", 4)}
    for row in rows:
        assert row["median_ms"] > 0 and row["floor_ms"] > 0
        assert row["ratio"] == pytest.approx(row["median_ms"] / row["floor_ms"])
        assert row["race_ratio"] == pytest.approx(row["median_ms"] / row["race_ms"])


def test_bench_anneal_compares_batched_sa_with_neal_on_the_same_problems(tmp_path, capsys):
    out = tmp_path / "anneal.json"
    assert main(["bench-anneal", "--batch", "1", "3", "--top-k", "8", "--num-reads", "2",
                 "--num-sweeps", "20", "--repeats", "1", "--threads", "1", "--json", str(out)]) == 0
    assert "vs neal/row" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    rows = payload["rows"]
    assert [(r["arm"], r["batch"]) for r in rows] == [
        (arm, batch) for batch in (1, 3)
        for arm in ("neal per-row", "neal union", "batched-sa one-hot", "batched-sa dense",
                    "batched-sa sample_batch")]
    assert all(r["median_ms"] > 0 and 0 <= r["ground_state_rate"] <= 1 for r in rows)
    assert all(r["speedup_vs_neal_per_row"] > 0 for r in rows)
    assert payload["num_sweeps"] == 20 and payload["annealer_threads"] == 1


def test_bench_skips_combinations_a_backend_cannot_do(tmp_path, capsys):
    code = main(["bench", "--batch", "1", "--top-k", "32", "--vocab", "100", "--repeats", "1",
                 "--combos", "gumbel/tree", "--json", str(tmp_path / "b.json")])
    assert code == 0
    assert "skip gumbel/tree K=32" in capsys.readouterr().err


def test_bad_configuration_exits_2_naming_the_field(tmp_path, capsys):
    code = main(["bench", "--batch", "1", "--top-k", "8", "--vocab", "100", "--repeats", "1",
                 "--combos", "sideways/neal", "--json", str(tmp_path / "b.json")])
    assert code == 2
    assert "mode='sideways'" in capsys.readouterr().err


def test_fidelity_command_prints_and_writes_the_fit(tmp_path, capsys):
    out = tmp_path / "fid.json"
    code = main(["fidelity", "--mode", "gumbel", "--backend", "exact", "--top-k", "4",
                 "--shape", "peaked", "--draws", "400", "--json", str(out),
                 "--set", "num_reads=2"])
    assert code == 0
    assert "exact" in capsys.readouterr().out
    (row,) = json.loads(out.read_text())["rows"]
    assert row["draws"] == 400 and row["config"]["num_reads"] == 2
    assert 0 <= row["p_value"] <= 1 and 0 <= row["tv"] <= 1


def test_generate_streams_text_and_writes_the_trace(tiny_llama_dir, tmp_path, capsys):
    trace = tmp_path / "trace.jsonl"
    code = main(["generate", "Once upon a time", "--model", str(tiny_llama_dir),
                 "--max-new-tokens", "6", "--top-k", "16", "--trace", str(trace), "--baseline"])
    assert code == 0
    captured = capsys.readouterr()
    assert "--- baseline: plain sampling" in captured.out
    assert "[qsample] 6 tokens" in captured.err and "0 fallbacks" in captured.err
    assert "[baseline] 6 tokens" in captured.err
    assert len(trace.read_text().splitlines()) == 6


def test_generate_draws_coupled_sequences(tiny_llama_dir, capsys):
    code = main(["generate", "Once upon a time", "--model", str(tiny_llama_dir), "--n", "3",
                 "--coupling", "distinct", "--top-k", "16", "--max-new-tokens", "5"])
    assert code == 0
    captured = capsys.readouterr()
    assert captured.out.count("--- sequence") == 3
    assert "3 distinct sequences of 3" in captured.err
    assert main(["generate", "x", "--model", str(tiny_llama_dir), "--coupling", "-1"]) == 2
    assert "coupling=" in capsys.readouterr().err


def test_generate_same_seed_same_text(tiny_llama_dir, capsys):
    outs = []
    for _ in range(2):
        assert main(["generate", "The annealer", "--model", str(tiny_llama_dir),
                     "--max-new-tokens", "8", "--seed", "4", "--chat"]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1] and outs[0].strip()


def test_generate_exit_codes(tiny_llama_dir, tmp_path, capsys):
    assert main(["generate", "x", "--model", str(tiny_llama_dir), "--top-p", "2"]) == 2
    assert "top_p=2.0" in capsys.readouterr().err
    code = main(["generate", "x", "--model", str(tmp_path / "no-such-model")])
    assert code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("qsample: error:") and len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exc:
        main(["generate", "x", "--max-new-tokens", "many"])
    assert exc.value.code == 2


def test_bench_generate_compares_plain_and_qsample(tiny_llama_dir, tmp_path, capsys):
    out = tmp_path / "gen.json"
    code = main(["bench-generate", "--model", str(tiny_llama_dir), "--batch", "1", "2",
                 "--new-tokens", "4", "--repeats", "1", "--combos", "gumbel/neal",
                 "--json", str(out)])
    assert code == 0
    assert "vs plain" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [(r["arm"], r["batch"]) for r in rows] == [
        ("plain", 1), ("qsample gumbel/neal", 1), ("plain", 2), ("qsample gumbel/neal", 2)]
    assert all(r["tokens_per_s"] > 0 for r in rows)
    assert rows[0]["ratio_vs_plain"] == 1.0 and rows[1]["sampler_share"] > 0


def test_warm_up_compiles_or_loads_every_annealer_kernel(capsys):
    assert main(["warm-up"]) == 0
    assert "17 annealer kernels" in capsys.readouterr().out


def test_first_step_bench_reports_warm_up_apart_from_the_first_step(tmp_path):
    out = tmp_path / "first.json"
    assert main(["bench-first-step", "--combos", "gumbel/batched-sa", "--repeats", "2",
                 "--top-k", "8", "--json", str(out)]) == 0
    row = json.loads(out.read_text())["rows"][0]
    assert row["warm_up_ms"] > 0 and row["first_step_ms"] > 0 and row["step_ms"] > 0
    assert set(row) >= {"import_ms", "first_step_within_target"}


def test_bench_sparse_writes_table_and_json(tmp_path, capsys, monkeypatch):
    from qsample.tools import anneal_bench

    small = {"mixed": [dimod.generators.ran_r(1, 4, seed=s) for s in range(3)]
             + [dimod.generators.ran_r(1, 30, seed=3)]}
    monkeypatch.setattr(anneal_bench, "sparse_cases", lambda seed=0: small)
    out = tmp_path / "sparse.json"
    assert main(["bench-sparse", "--num-reads", "2", "--num-sweeps", "10", "--repeats", "1",
                 "--threads", "1", "--json", str(out)]) == 0
    assert "vs neal" in capsys.readouterr().out
    rows = json.loads(out.read_text())["rows"]
    assert [r["arm"] for r in rows] == ["neal", "batched-sa", "batched-sa dense"]
    assert rows[2]["dense_mb"] > 0 and all(r["median_ms"] > 0 for r in rows)


def test_bench_serve_defaults_and_combos():
    from qsample.cli import build_parser

    args = build_parser().parse_args(["bench-serve"])
    assert (args.clients, args.requests, args.new_tokens, args.repeats, args.top_k) == (
        16, 64, 64, 3, 64)
    assert args.combos == [("gumbel", "batched-sa")]
    assert args.json == "bench-results/serve_throughput.json"
    args = build_parser().parse_args(["bench-serve", "--combos", "gumbel/batched-sa",
                                      "boltzmann/batched-sa", "--clients", "4"])
    assert args.combos == [("gumbel", "batched-sa"), ("boltzmann", "batched-sa")]
    assert args.clients == 4


def test_interleaved_summary_ratios_are_per_group():
    from qsample.tools.bench import interleaved_summary

    rounds = {"plain": [{"seconds": 10.0, "tokens": 1000}, {"seconds": 20.0, "tokens": 1000},
                        {"seconds": 10.0, "tokens": 1000}],
              "q": [{"seconds": 12.5, "tokens": 1000}, {"seconds": 20.0, "tokens": 1000},
                    {"seconds": 10.0, "tokens": 900}]}
    plain, q = interleaved_summary(rounds, "plain")
    assert plain["pair_ratios"] == [1.0, 1.0, 1.0] and plain["tokens_per_s"] == 100.0
    assert q["pair_ratios"] == pytest.approx([0.8, 1.0, 0.9])
    assert q["ratio_vs_plain"] == pytest.approx(0.9)  # the median of the groups' ratios
    assert (q["ratio_min"], q["ratio_max"]) == pytest.approx((0.8, 1.0))
    assert q["median_s"] == 12.5 and q["tokens_per_s"] == 80.0
    with pytest.raises(ValueError, match="rounds"):
        interleaved_summary({"plain": rounds["plain"], "q": rounds["q"][:2]}, "plain")


#: Other names for SamplerConfig's fields that no command may use.
SYNONYMS = {"k": "top_k", "reads": "num_reads", "sweeps": "num_sweeps", "temp": "temperature"}


def sampler_flags():
    """(command, flag, action, field) of every option of every command that names a
    SamplerConfig field or a synonym of one."""
    import argparse
    import dataclasses

    from qsample import SamplerConfig
    from qsample.cli import build_parser

    fields = {f.name: f for f in dataclasses.fields(SamplerConfig)}
    commands = next(a for a in build_parser()._actions
                    if isinstance(a, argparse._SubParsersAction)).choices
    for command, parser in commands.items():
        for action in parser._actions:
            for flag in action.option_strings:
                name = flag.lstrip("-").replace("-", "_")
                if name in fields or name in SYNONYMS:
                    yield command, flag, action, fields.get(name)


def differs(action, field) -> bool:
    """Whether a flag's default is another value than the SamplerConfig field's (a list of
    values to sweep, as ``--top-k 16 64`` of the benchmarks, is not one setting)."""
    import dataclasses

    if action.default is None or (action.nargs in ("+", "*") and field.name != "beta_range"):
        return False
    theirs = None if field.default is dataclasses.MISSING else field.default
    ours = tuple(action.default) if isinstance(action.default, list) else action.default
    return ours != theirs


def test_every_command_takes_its_sampler_flags_from_samplerconfig():
    """One vocabulary, generated: a flag for a SamplerConfig field is --<field> (--top-k,
    --num-reads, --num-sweeps, --beta-range, ...), never a synonym (--k, --reads, --sweeps), and is
    the option `add_sampler_flags` makes for the field (destination, type, choices, help), so
    names, defaults and help cannot drift; a default other than SamplerConfig's is stated in the
    help, with SamplerConfig's own. FIELD_HELP describes exactly the fields the commands take."""
    import argparse

    from qsample.cli.common import FIELD_HELP, add_sampler_flags

    attributes = ("option_strings", "dest", "nargs", "default", "type", "choices", "help")
    wrong, used = [], set()
    for command, flag, action, field in sampler_flags():
        if field is None:
            wrong.append(f"qsample {command} {flag}: use --{SYNONYMS[flag[2:]].replace('_', '-')}")
            continue
        used.add(field.name)
        made = argparse.ArgumentParser()
        add_sampler_flags(made, multiple={field.name} if action.nargs == "+" else (),
                          **{field.name: action.default})
        for attribute in attributes:
            if getattr(action, attribute) != getattr(made._actions[-1], attribute):
                wrong.append(f"qsample {command} {flag}: {attribute} {getattr(action, attribute)!r}"
                             " is not add_sampler_flags'")
        if differs(action, field) and "SamplerConfig's" not in action.help:
            wrong.append(f"qsample {command} {flag}: default {action.default!r} is not "
                         "SamplerConfig's; say so in its help")
    assert not wrong, "\n".join(wrong)
    assert set(FIELD_HELP) == used
    assert len(used) > 10  # the commands do take sampler settings


def test_sampler_flags_parse_to_samplerconfig_values():
    from qsample.cli import build_parser

    parse = build_parser().parse_args
    args = parse(["bench-anneal", "--beta-range", "0.5", "5", "--top-k", "8"])
    assert (args.beta_range, args.top_k, args.num_reads) == ([0.5, 5.0], [8], 5)
    args = parse(["generate", "x", "--coupling", "distinct", "--top-p", "0.9"])
    assert (args.mode, args.coupling, args.top_p, args.temperature, args.seed) == (
        None, "distinct", 0.9, 0.8, 0)
    assert parse(["fidelity", "--mode", "boltzmann"]).mode == ["boltzmann"]
    with pytest.raises(SystemExit):
        parse(["calibrate", "--mode", "sideways"])

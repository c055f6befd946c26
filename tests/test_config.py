"""SamplerConfig: a frozen, validated description of a sampler; bad values name the field."""

import dataclasses

import dimod
import pytest

from qsample import ConfigError, SamplerConfig


def test_defaults_match_the_documented_api():
    cfg = SamplerConfig()
    assert (cfg.mode, cfg.backend, cfg.top_k, cfg.top_p, cfg.min_p, cfg.temperature) == (
        "gumbel", "batched-sa", 64, 1.0, 0.0, 1.0)
    assert cfg.fallback == "exact"


def test_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        SamplerConfig().top_k = 3


def test_from_dict_coerces_flat_string_values():
    cfg = SamplerConfig.from_dict(
        {"mode": "boltzmann", "top_k": "16", "temperature": "0.7", "seed": "3", "num_reads": 4.0})
    assert (cfg.top_k, cfg.temperature, cfg.seed, cfg.num_reads) == (16, 0.7, 3, 4)
    assert SamplerConfig.from_dict({"beta_range": "0.1,10"}).beta_range == (0.1, 10.0)


def test_unknown_key_names_key_and_known_fields():
    with pytest.raises(ConfigError) as err:
        SamplerConfig.from_dict({"topk": 5})
    assert err.value.field == "topk"
    assert "top_k" in str(err.value)


@pytest.mark.parametrize(
    "field, value, allowed",
    [
        ("mode", "quantum", "'gumbel', 'boltzmann'"),
        ("backend", "qpu9000", "'neal'"),
        ("backend", object(), "dimod.Sampler"),
        ("top_k", 0, ">= 1"),
        ("top_k", 2.5, "integer"),
        ("top_k", True, "integer"),
        ("top_p", 0.0, "(0, 1]"),
        ("top_p", 1.5, "(0, 1]"),
        ("min_p", 1.0, "[0, 1)"),
        ("min_p", -0.1, "[0, 1)"),
        ("temperature", -1.0, ">= 0"),
        ("temperature", float("nan"), ">= 0"),
        ("temperature", "hot", ">= 0"),
        ("num_reads", 0, ">= 1"),
        ("num_sweeps", -5, ">= 1"),
        ("beta_range", (10.0, 0.1), "beta_hot <= beta_cold"),
        ("beta_range", (0.0, 1.0), "0 < beta_hot"),
        ("penalty", 0.0, "> 0"),
        ("seed", -1, ">= 0"),
        ("fallback", "argmax", "'exact', 'error'"),
        ("batching", "some", "'per-row'"),
    ],
)
def test_bad_values_name_field_value_and_allowed(field, value, allowed):
    with pytest.raises(ConfigError) as err:
        SamplerConfig(**{field: value})
    assert isinstance(err.value, ValueError)
    assert err.value.field == field
    assert field in str(err.value) and allowed in str(err.value)


def test_boltzmann_rejects_an_annealing_schedule():
    with pytest.raises(ConfigError, match="beta_range"):
        SamplerConfig(mode="boltzmann", beta_range=(0.1, 10))


def test_accepts_any_dimod_sampler_instance():
    cfg = SamplerConfig(backend=dimod.ExactSolver(), top_k=4)
    assert cfg.backend_name == "ExactSolver"
    assert cfg.to_dict()["backend"] == "ExactSolver"


def test_replace_validates_again():
    with pytest.raises(ConfigError):
        SamplerConfig().replace(top_p=2)
    assert SamplerConfig().replace(top_k=8).top_k == 8


def test_integer_strings_are_exact_at_any_size():
    big = 2**53 + 1  # a float would round it to 2**53
    assert SamplerConfig.from_dict({"seed": str(big)}).seed == big
    assert SamplerConfig.from_dict({"seed": str(2**64 - 1)}).seed == 2**64 - 1
    assert SamplerConfig.from_dict({"top_k": " 64.0 "}).top_k == 64

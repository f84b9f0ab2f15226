"""The speed settings as request fields: checked once, recorded, shown by --dry-run, refused before loading."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cogvid.cli.app import app
from cogvid.errors import UsageError
from cogvid.prepare import prepare, resolve_model
from cogvid.request import GenerationRequest, ModelChoice

runner = CliRunner()


def test_everything_is_off_by_default_and_old_requests_still_read():
    choice, request = ModelChoice(), GenerationRequest()
    assert (choice.compile, choice.quantize, choice.quantize_text, choice.attention, request.cache) == (False, None, False, "sdpa", None)
    recorded = GenerationRequest(prompt="a", model=ModelChoice(quantize="int8wo", attention="auto", compile=True), cache="fbcache:0.1").to_json()
    assert GenerationRequest.from_json(json.loads(json.dumps(recorded))) == GenerationRequest.from_json(recorded)
    assert recorded["cache"] == "fbcache:0.1" and recorded["model"]["quantize"] == "int8wo"
    old = {k: v for k, v in GenerationRequest(prompt="a").to_json().items() if k != "cache"}  # a sidecar of before
    old["model"] = {k: v for k, v in old["model"].items() if k not in ("compile", "quantize", "quantize_text", "attention")}
    assert GenerationRequest.from_json(old) == GenerationRequest(prompt="a")


@pytest.mark.parametrize("value, normal", [("teacache", "teacache"), (" TeaCache:0.20 ", "teacache:0.2"), ("fbcache:1e-1", "fbcache:0.1")])
def test_cache_values_are_normalized(value, normal):
    assert GenerationRequest(cache=value).cache == normal


@pytest.mark.parametrize("changes, message", [
    ({"cache": "magcache"}, "unknown step cache"),
    ({"cache": "teacache:fast"}, "not a number"),
    ({"cache": "teacache:0"}, "above 0"),
    ({"cache": "fbcache:nan"}, "above 0"),
])
def test_bad_cache_settings_are_refused(changes, message):
    with pytest.raises(UsageError, match=message):
        GenerationRequest(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"quantize": "int4"}, "unknown quantization"),
    ({"attention": "xformers"}, "unknown attention kernel"),
    ({"quantize_text": True}, "--quantize-text"),
    ({"quantize": "fp8dq", "device": "cpu"}, "compute capability 8.9"),
    ({"quantize": "fp8wo", "device": "cpu"}, "does not run on the CPU"),
    ({"attention": "flash", "device": "cpu"}, "CUDA GPUs only"),
    ({"attention": "sage", "device": "cuda"}, "sageattention package"),
])
def test_bad_model_choices_are_refused(changes, message):
    with pytest.raises(UsageError, match=message):
        ModelChoice(**changes)
    with pytest.raises(UsageError, match=message):  # and through replace(), which checks only what changed
        ModelChoice().replace(**changes)


def test_prepare_fills_the_default_threshold_and_needs_teacache_coefficients():
    model = resolve_model(ModelChoice())  # test-tiny: no published coefficients, no calibration
    prepared = prepare(GenerationRequest(prompt="a red ball", cache="fbcache"), model)
    assert prepared.request.cache == "fbcache:0.12"
    assert prepared.describe()["speed"] == "cache fbcache:0.12"
    with pytest.raises(UsageError, match="no TeaCache coefficients") as caught:
        prepare(GenerationRequest(prompt="a red ball", cache="teacache"), model)
    assert "cogvid cache calibrate -m test-tiny" in caught.value.hint
    published = resolve_model(ModelChoice(name="cogvideox-5b"))  # weights absent: prepare loads nothing
    assert prepare(GenerationRequest(prompt="a", cache="teacache:0.3"), published).request.cache == "teacache:0.3"
    assert prepare(GenerationRequest(prompt="a"), model).describe()["speed"] is None


def test_dry_run_shows_the_speed_settings_and_refuses_what_cannot_run():
    result = runner.invoke(app, ["t2v", "a red ball", "--dry-run", "--compile", "--quantize", "int8wo", "--quantize-text",
                                 "--cache", "fbcache", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "speed: compiled blocks, quantize int8wo (DiT and T5), cache fbcache:0.12" in result.stdout
    result = runner.invoke(app, ["t2v", "a red ball", "--dry-run", "--json", "--attention", "auto"])
    record = json.loads(result.stdout)
    assert record["request"]["model"]["attention"] == "auto" and record["speed"] == "attention auto"
    for args, message in ((["--quantize", "fp8dq", "--device", "cpu"], "compute capability 8.9"),
                          (["--attention", "flash", "--device", "cpu"], "CUDA GPUs only"),
                          (["--cache", "teacache"], "no TeaCache coefficients")):
        result = runner.invoke(app, ["t2v", "a red ball", "--dry-run", *args])
        assert result.exit_code == 2 and message in result.stderr, result.output


def test_batch_lines_may_set_the_cache_and_keys_change_only_when_speed_settings_are_on(tmp_path):
    from cogvid.batch import model_key, parse_prompt_file

    prompts = tmp_path / "jobs.jsonl"
    prompts.write_text('{"prompt": "a red ball", "cache": "fbcache:0.2"}\n{"prompt": "a blue cube"}\n', encoding="utf-8")
    jobs = parse_prompt_file(prompts, GenerationRequest(cache="teacache"))
    assert [job.request.cache for job in jobs] == ["fbcache:0.2", "teacache"]
    plain = GenerationRequest(prompt="a")
    assert model_key(plain, "m", None) == "m"  # as cogvid 0.1 made it: resume keys of old outputs hold
    fast = plain.replace(cache="fbcache:0.2", model=ModelChoice(quantize="int8wo", compile=True))
    assert model_key(fast, "m", None) == "m+quantize:int8wo+compile+cache:fbcache:0.2"


def test_repl_set_cache():
    from cogvid.repl import parse_setting, setting_rows, with_setting

    template = with_setting(GenerationRequest(), "cache", "fbcache:0.3")
    assert template.cache == "fbcache:0.3" and ("cache", "fbcache:0.3") in setting_rows(template, {})
    assert with_setting(template, "cache", "off").cache is None and parse_setting("cache", "default") is None
    with pytest.raises(UsageError, match="unknown step cache"):
        with_setting(template, "cache", "fastest")


@pytest.mark.parametrize("changes, suggestion", [
    ({"quantize": "int8"}, "did you mean 'int8wo' or 'int8dq'?"),
    ({"quantize": "fp8"}, "did you mean 'fp8wo' or 'fp8dq'?"),
    ({"attention": "flash2"}, "did you mean 'flash'?"),
    ({"offload": "block"}, "did you mean 'blocks'?"),
])
def test_a_near_miss_names_the_closest_choices(changes, suggestion):
    with pytest.raises(UsageError) as error:
        ModelChoice(**changes)
    assert error.value.hint.startswith(suggestion)
    assert "use one of:" in error.value.hint

"""Property-based input tests (hypothesis): hparams strings, schedule arguments and CLI arguments are
parsed correctly or rejected with a ValueError naming the key, never another exception."""

import contextlib
import io
import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tfprune
from tfprune.export.formats import format_names
from tfprune.hparams import _DEFAULTS, ContribSchedule

FAST = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
KEYS = sorted(_DEFAULTS)

# ---------------------------------------------------------------------------------------------
# hparams strings
# ---------------------------------------------------------------------------------------------


def _int_text(low, high):
    return st.integers(low, high).flatmap(
        lambda v: st.sampled_from([str(v), f" {v} ", f"+{v}" if v >= 0 else str(v)]).map(lambda t, v=v: (t, v)))


def _float_text(low, high):
    return st.floats(low, high, exclude_max=True, allow_nan=False).flatmap(
        lambda v: st.sampled_from([repr(v), f"{v:.6e}", f"{v:.4f}"]).map(lambda t: (t, float(t)))
    ).filter(lambda pair: low <= pair[1] < high)  # rounding in the text may reach the bound


def _bool_text():
    return st.sampled_from([("true", True), ("True", True), ("1", True), ("false", False), ("FALSE", False),
                            ("0", False)])


@st.composite
def valid_hparams(draw):
    """(text, expected values) for strings whose every entry is valid, cross-key rules included."""
    entries, expected = [], {}

    def put(key, pair):
        text, value = pair
        entries.append(f"{key}={text}")
        expected[key] = value

    if draw(st.booleans()):
        begin = draw(_int_text(0, 10**6))
        put("begin_pruning_step", begin)
        if draw(st.booleans()):
            put("end_pruning_step", draw(st.one_of(st.just(("-1", -1)), _int_text(begin[1] + 1, begin[1] + 10**6))))
    if draw(st.booleans()):
        f_begin = draw(_int_text(0, 10**6))
        f_end = draw(_int_text(f_begin[1] + 1, f_begin[1] + 10**7))
        put("sparsity_function_begin_step", f_begin)
        put("sparsity_function_end_step", f_end)
    for key in ("threshold_decay", "initial_sparsity", "target_sparsity"):
        if draw(st.booleans()):
            put(key, draw(_float_text(0.0, 1.0)))
    for key in ("pruning_frequency", "nbins"):
        if draw(st.booleans()):
            put(key, draw(_int_text(1, 10**6)))
    for key in ("block_height", "block_width"):
        if draw(st.booleans()):
            put(key, draw(st.one_of(st.just(("-1", -1)), _int_text(1, 64))))
    if draw(st.booleans()):
        put("sparsity_function_exponent", draw(_float_text(1e-3, 10.0)))
    if draw(st.booleans()):
        put("use_tpu", draw(_bool_text()))
    if draw(st.booleans()):
        text = draw(st.sampled_from(["avg", "AVG", "max", " Max "]))
        put("block_pooling_function", (text, text.strip().upper()))
    if draw(st.booleans()):
        maps = draw(st.lists(st.tuples(st.sampled_from(["conv1", "dense/kernel", "lstm.*", "^d[0-9]+"]),
                                       st.floats(0, 1, exclude_max=True)), max_size=3, unique_by=lambda t: t[0]))
        text = "[" + ",".join(f"{p}:{s!r}" for p, s in maps) + "]"
        put("weight_sparsity_map", (text, [f"{p}:{s!r}" for p, s in maps] or [""]))
    order = draw(st.permutations(range(len(entries))))
    return ",".join(entries[i] for i in order), expected


@settings(max_examples=400, **FAST)
@given(valid_hparams())
def test_valid_hparams_strings_parse_to_their_values(case):
    text, expected = case
    values = tfprune.get_pruning_hparams().parse(text).values()
    for key, value in expected.items():
        if isinstance(value, float):
            assert values[key] == pytest.approx(value, rel=1e-12, abs=0), key
        else:
            assert values[key] == value, key
    for key in set(_DEFAULTS) - set(expected):
        assert values[key] == _DEFAULTS[key], key


_GARBAGE = st.lists(st.sampled_from(list("abc_=,[]:x-+.01239eE \t%()*?\\é٣") + ["nan", "inf", "true"]),
                    max_size=30).map("".join)


def _assert_names_a_key(err, text):
    message = str(err)
    named = [k for k in KEYS if k in text and (f"'{k}'" in message or k in message)]
    syntax = any(s in message for s in ("Malformed hparams entry", "Unbalanced", "Unknown pruning hparam"))
    assert named or syntax, (text, message)


@settings(max_examples=400, **FAST)
@given(st.one_of(
    _GARBAGE,
    st.lists(st.tuples(st.sampled_from(KEYS + ["bogus", "", "Begin_pruning_step"]), _GARBAGE), max_size=4)
    .map(lambda kv: ",".join(f"{k}={v}" for k, v in kv)),
))
def test_arbitrary_hparams_strings_parse_or_name_the_key(text):
    try:
        tfprune.get_pruning_hparams().parse(text)
    except ValueError as err:
        _assert_names_a_key(err, text)


@settings(max_examples=300, **FAST)
@given(st.sampled_from([k for k in KEYS if k != "name"]),
       st.one_of(_GARBAGE, st.integers(-2**70, 2**70).map(str), st.floats().map(repr),
                 st.sampled_from(["1e999", "-1e999", "9" * 5000, "", "[", "]", "[a:0.5", "a:b:c", "(:0.5"])))
def test_a_bad_value_names_its_key(key, value):
    try:
        hp = tfprune.get_pruning_hparams().parse(f"{key}={value}")
    except ValueError as err:
        assert key in str(err) or "Unbalanced" in str(err) or "Malformed" in str(err), (key, value, str(err))
        return
    parsed = hp.values()[key]  # accepted: the stored value is a real, finite, in-range value
    if isinstance(parsed, float):
        assert math.isfinite(parsed)
    if isinstance(parsed, int) and not isinstance(parsed, bool):
        assert -(2**63) <= parsed < 2**63


@settings(max_examples=100, **FAST)
@given(st.dictionaries(st.sampled_from(KEYS + ["bogus"]),
                       st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=6),
                                 st.lists(st.text(max_size=4), max_size=2), st.just(np.int64(3)), st.just(1j)),
                       max_size=4))
def test_hparams_overrides_as_python_values(overrides):
    try:
        tfprune.hparams.PruningHParams(**overrides)
    except ValueError as err:
        assert any(k in str(err) for k in overrides), (overrides, str(err))


# ---------------------------------------------------------------------------------------------
# Schedules
# ---------------------------------------------------------------------------------------------

ANY_VALUE = st.one_of(
    st.integers(-5, 2000), st.integers(-2**80, 2**80), st.floats(allow_nan=True, allow_infinity=True),
    st.floats(0, 1), st.booleans(), st.none(), st.text(max_size=4), st.sampled_from([np.int64(10), np.float32(0.5),
                                                                                      "0.5", [1], 10**400]))
SCHEDULE_ARGS = {
    tfprune.ConstantSparsity: ["target_sparsity", "begin_step", "end_step", "frequency"],
    tfprune.PolynomialDecay: ["initial_sparsity", "final_sparsity", "begin_step", "end_step", "power", "frequency"],
    ContribSchedule: ["begin_pruning_step", "end_pruning_step", "pruning_frequency", "initial_sparsity",
                      "target_sparsity", "sparsity_function_begin_step", "sparsity_function_end_step",
                      "sparsity_function_exponent"],
}
STEPS = [0, 1, 7, 100, 10**6]


@pytest.mark.parametrize("cls", list(SCHEDULE_ARGS), ids=lambda c: c.__name__)
def test_schedule_arguments_are_accepted_or_named(cls):
    names = SCHEDULE_ARGS[cls]

    @settings(max_examples=250, **FAST)
    @given(st.fixed_dictionaries({}, optional={n: ANY_VALUE for n in names}))
    def check(kwargs):
        try:
            schedule = cls(**kwargs)
        except ValueError as err:
            assert any(f"`{n}`" in str(err) or n in str(err) for n in names), (kwargs, str(err))
            return
        except TypeError as err:
            missing = [n for n in names if n not in kwargs]
            assert missing and "missing" in str(err), (kwargs, str(err))  # a required argument left out
            return
        for step in STEPS:
            should, sparsity = schedule(step)
            assert bool(should) in (True, False)
            if cls is not tfprune.PolynomialDecay or schedule.power > 0:
                assert 0.0 <= float(sparsity) <= 1.0, (kwargs, step, float(sparsity))
        again = cls.from_config(schedule.get_config())
        assert again.get_config() == schedule.get_config()

    check()


# ---------------------------------------------------------------------------------------------
# Command-line arguments
# ---------------------------------------------------------------------------------------------


def _run_cli(run, argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exit_:
        run(argv)
    return exit_.value.code, stdout.getvalue(), stderr.getvalue()


def _listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


NAME = st.text(alphabet=st.sampled_from(list("abcXYZ019_- .é")), min_size=1, max_size=12).map(str.strip).filter(bool)


def _parses_as_ratio(text):
    """True when ``text`` is a number the ratio flags accept (``"0"``, ``"0_0"``, ``".9"``), so not a bad value."""
    try:
        return 0 <= float(text) < 1
    except ValueError:
        return False


@pytest.fixture(scope="module")
def cli_root(tmp_path_factory):
    import keras

    root = tmp_path_factory.mktemp("fuzz_cli")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(root / "model.keras")
    (root / "ck").mkdir()
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)]).save(root / "ck" / "ckpt-01.keras")
    (root / "out").mkdir()
    (root / "a_file.txt").write_text("not a directory")
    return root


def test_strip_bad_arguments_exit_2_one_line(cli_root):
    from tfprune.cli import strip

    before = _listing(cli_root)

    @settings(max_examples=25, **FAST)
    @given(st.one_of(
        NAME.map(lambda n: [f"--checkpoint_dir={cli_root / 'missing' / 'dir' / n}"]),
        st.just([f"--checkpoint_dir={cli_root / 'a_file.txt'}"]),
        st.just([f"--checkpoint_dir={cli_root / 'out'}"]),  # empty directory
        NAME.filter(lambda f: f.strip().lower() not in format_names()).map(
            lambda f: [f"--checkpoint_dir={cli_root / 'ck'}", f"--output_format={f}",
                       f"--output_dir={cli_root / 'out'}"]),
        NAME.map(lambda n: [f"--checkpoint_dir={cli_root / 'ck'}", f"--filename=model.{n}x",
                            f"--output_dir={cli_root / 'out'}"]),
        NAME.map(lambda n: [f"--checkpoint_dir={cli_root / 'ck'}", f"--baseline={cli_root / 'missing' / 'dir' / n}",
                            f"--output_dir={cli_root / 'out'}", "--filename=m.keras"]),
        st.just([f"--checkpoint_dir={cli_root / 'ck'}", "--bogus_flag=1"]),
        st.just(["positional", f"--checkpoint_dir={cli_root / 'ck'}"]),
    ))
    def check(args):
        code, out, err = _run_cli(strip.run, ["tfprune-strip", *args])
        assert code == 2, (args, code, out, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert err.startswith("tfprune-strip: error:"), err
        assert _listing(cli_root) == before, args  # nothing written

    check()


def test_prune_filters_bad_arguments_exit_2_one_line(cli_root):
    from tfprune.cli import prune_filters

    before = _listing(cli_root)
    model, out = str(cli_root / "model.keras"), str(cli_root / "out" / "pruned.keras")
    bad_ratio = st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(float("nan")))

    @settings(max_examples=25, **FAST)
    @given(st.one_of(
        bad_ratio.map(lambda r: [f"--model={model}", f"--output={out}", f"--pruning_ratio={r!r}"]),
        NAME.filter(lambda r: not _parses_as_ratio(r)).map(
            lambda r: [f"--model={model}", f"--output={out}", f"--pruning_ratio={r}"]),
        st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0 + 1e-9)).map(
            lambda r: [f"--model={model}", f"--output={out}", f"--max_pruning_ratio={r!r}"]),
        NAME.map(lambda n: [f"--model={cli_root / 'missing' / 'dir' / n}.keras", f"--output={out}"]),
        NAME.map(lambda n: [f"--model={model}", f"--output={cli_root / 'missing' / 'dir' / n}.keras"]),
        NAME.map(lambda n: [f"--model={model}", f"--output={cli_root / 'out' / n}.h5"]),
        NAME.filter(lambda n: n not in prune_filters.cli_importances() and ":" not in n).map(
            lambda n: [f"--model={model}", f"--output={out}", f"--importance={n}"]),
        st.integers(-10**6, 0).map(lambda r: [f"--model={model}", f"--output={out}", f"--round_to={r}"]),
        st.just([f"--output={out}"]),
    ))
    def check(args):
        code, stdout, err = _run_cli(prune_filters.run, ["tfprune-prune-filters", *args])
        assert code == 2, (args, code, stdout, err)
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (args, err)
        assert _listing(cli_root) == before, args

    check()

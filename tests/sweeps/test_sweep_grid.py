"""Grid specs, their product, and grid keys as command-line arguments (no command runs here)."""

from __future__ import annotations

import pytest

from interplab.sweeps.grid import OptionSpec, cell_args, cell_name, expand, parse_grid, typed_values, validate_keys

OPTIONS = {
    "--seed": OptionSpec(("--seed",)),
    "--n-chunks": OptionSpec(("--n-chunks",)),
    "--set": OptionSpec(("--set",)),
    "--no-progress": OptionSpec(("--no-progress",), is_flag=True),
    "--out": OptionSpec(("--out",)),
}


def test_ranges_are_inclusive_and_mix_with_values():
    g = parse_grid(["seed=0..4", "--lr=1e-3, 1e-2", "n=1,4..6"])
    assert g == {"seed": ["0", "1", "2", "3", "4"], "lr": ["1e-3", "1e-2"], "n": ["1", "4", "5", "6"]}


@pytest.mark.parametrize(
    ("specs", "needle"),
    [
        ([], "at least one --grid"),
        (["seed"], "key=v1,v2"),
        (["seed=4..1"], "empty"),
        (["seed=1,,2"], "empty value"),
        (["seed=1,1"], "repeated"),
        (["seed=1", "seed=2"], "given twice"),
        (["=1,2"], "key is empty"),
    ],
)
def test_bad_grid_specs_say_what_is_wrong(specs, needle):
    with pytest.raises(ValueError, match=needle):
        parse_grid(specs)


def test_cells_are_the_product_with_the_last_key_fastest():
    cells = expand({"a": ["1", "2"], "b": ["x", "y", "z"]})
    assert [dict(c.values) for c in cells][:4] == [
        {"a": "1", "b": "x"},
        {"a": "1", "b": "y"},
        {"a": "1", "b": "z"},
        {"a": "2", "b": "x"},
    ]
    assert len(cells) == 6 and len({c.name for c in cells}) == 6


def test_cell_names_are_safe_and_distinct_when_sanitised():
    a, b = cell_name({"text": "a/b"}), cell_name({"text": "a b"})
    assert "/" not in a and " " not in b and a != b
    assert cell_name({"seed": "0", "set.lr": "1e-3"}) == "seed=0__set.lr=1e-3"


def test_keys_map_to_options_set_entries_and_flags():
    values = {"seed": "3", "n_chunks": "8", "set.epochs": "600", "no-progress": "true"}
    assert cell_args(values, OPTIONS) == ["--seed", "3", "--n-chunks", "8", "--set", "epochs=600", "--no-progress"]
    assert cell_args({"no_progress": "false"}, OPTIONS) == []


def test_unknown_keys_list_the_commands_options():
    with pytest.raises(ValueError, match=r"no option --epochs \(for a config key use set.epochs\).*--n-chunks, --no"):
        validate_keys({"epochs": ["1"]}, OPTIONS, "train")
    with pytest.raises(ValueError, match="no config key 'bogus'; valid: epochs, seed"):
        validate_keys({"set.bogus": ["1"]}, OPTIONS, "train", set_keys=["epochs", "seed"])
    with pytest.raises(ValueError, match="no --set option"):
        validate_keys({"set.epochs": ["1"]}, {"--seed": OPTIONS["--seed"]}, "ablate")
    with pytest.raises(ValueError, match="sets --out of every cell"):
        validate_keys({"out": ["a"]}, OPTIONS, "train")
    with pytest.raises(ValueError, match="flag"):
        validate_keys({"no_progress": ["yes"]}, OPTIONS, "train")
    validate_keys({"seed": ["0"], "set.epochs": ["5"]}, OPTIONS, "train", set_keys=["epochs"])


def test_values_are_typed_per_key():
    assert typed_values(["0", "1"]) == [0, 1]
    assert typed_values(["1", "1e-3"]) == [1.0, 0.001]
    assert typed_values(["1", "add"]) == ["1", "add"]


def test_grid_keys_may_not_shadow_the_tables_own_columns(tmp_path):
    from interplab.sweeps.backends import SerialBackend
    from interplab.sweeps.engine import run_sweep

    with pytest.raises(ValueError, match="sweep table's own columns"):
        run_sweep(["models"], [], {"status": ["a"]}, lambda c: [], tmp_path, SerialBackend())
    assert not any(tmp_path.iterdir())


def test_memory_sizes_and_backend_choices_are_checked():
    from interplab.sweeps.backends import ProcessBackend, make_backend, parse_bytes

    assert parse_bytes("2GB") == 2 * 2**30 and parse_bytes("512m") == 512 * 2**20 and parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="size like 2GB"):
        parse_bytes("lots")
    with pytest.raises(ValueError, match="with --backend ray"):
        make_backend("process", address="auto")
    with pytest.raises(ValueError, match="one cell at a time"):
        make_backend("serial", max_parallel=4)
    be = make_backend("process", max_parallel=3)
    assert isinstance(be, ProcessBackend) and be.max_parallel == 3

"""The study's shape stated once: `study.chunk` read into every section that declares it, `study.items` checked as a
full strategy x seed grid of registered strategies, and override files that name only existing keys."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.config import ParamsError, apply_overrides, load_section
from common.study import load_study

REPO = Path(__file__).resolve().parents[2]
KNOWN = ("baseline", "la_align", "la_direct", "la_cond", "la_tok")


def params_file(tmp_path: Path, **overrides: object) -> Path:
    """The repository's params.yaml with dotted-key overrides, written to tmp_path."""
    data = apply_overrides(yaml.safe_load((REPO / "params.yaml").read_text()), overrides, "test")
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def item(strategy: str, seed: int, reads: str = "data/collect/demos.hdf5") -> dict[str, object]:
    return {"strategy": strategy, "seed": seed, "reads": reads}


def test_every_section_that_uses_k_reads_study_chunk(tmp_path: Path) -> None:
    from stages.action_vq import Params as TokenizerParams
    from stages.finetune import Params as FinetuneParams
    from stages.pretrain import read_architecture
    from stages.reference import Params as ReferenceParams

    path = params_file(tmp_path, **{"study.chunk": 5})
    sections = (("action_vq", TokenizerParams), ("finetune", FinetuneParams), ("reference", ReferenceParams))
    assert {load_section(path, name, cls).chunk for name, cls in sections} | {read_architecture(path).chunk} == {5}


def test_a_file_without_splits_holds_out_study_val_fraction_in_every_stage_that_splits(tmp_path: Path) -> None:
    from common.action_vq.data import ActionChunks
    from common.demos import DemoReader
    from stages.action_vq import Params as TokenizerParams
    from stages.finetune import Params as FinetuneParams
    from stages.lam import Params as LamParams
    from stages.pretrain import Params as PretrainParams
    from stages.reference import Params as ReferenceParams
    from tests.common.test_demos import write_libero_file

    path = params_file(tmp_path, **{"study.val_fraction": 0.3})
    sections = (("lam", LamParams), ("action_vq", TokenizerParams), ("pretrain", PretrainParams),
                ("finetune", FinetuneParams), ("reference", ReferenceParams))
    assert {load_section(path, name, cls).val_fraction for name, cls in sections} == {0.3}
    libero = tmp_path / "libero.hdf5"
    write_libero_file(libero, length=6, demos=10)
    params = load_section(path, "action_vq", TokenizerParams)
    with DemoReader(libero, params.val_fraction) as reader:
        stats = reader.stats("actions")
    val = ActionChunks.load(libero, "val", 2, "quantile", stats, val_fraction=params.val_fraction)
    assert val.names == ["demo_1", "demo_5", "demo_8"]
    with pytest.raises(ParamsError, match=r"val_fraction = 1.0: must be in \[0, 1\)"):
        load_study(params_file(tmp_path, **{"study.val_fraction": 1.0}))


def test_k_written_in_a_section_too_is_an_error_naming_where_it_lives(tmp_path: Path) -> None:
    from stages.finetune import Params

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["finetune"]["chunk"] = 4
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=r"finetune.chunk = 4: is stated once for the study, as `study.chunk`. "
                                          r"Fix: remove it here; change `study.chunk` instead"):
        load_section(path, "finetune", Params)
    del data["finetune"]["chunk"], data["study"]["chunk"]
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError, match=r"study.chunk = <missing>: is missing \(`finetune.chunk` is read from it\)"):
        load_section(path, "finetune", Params)


def test_the_report_takes_strategies_and_seeds_from_the_items(tmp_path: Path) -> None:
    from stages.report import Params

    items = {f"{s}-{n}": item(s, n) for s in ("baseline", "la_tok") for n in (3, 1)}
    report = load_section(params_file(tmp_path, **{"study.items": items}), "report", Params)
    assert (report.strategies, report.seeds) == (["baseline", "la_tok"], [1, 3])


@pytest.mark.parametrize(("items", "problem"), [
    ({"baseline-0": item("baseline", 0), "la_tok-0": item("la_tok", 0), "la_tok-1": item("la_tok", 1)},
     r"study.items = .*: is not a full strategy x seed grid: \['baseline-1'\] missing"),
    ({"la_tok-0": item("la_tok", 0)}, r"has no `baseline` item"),
    ({"baseline-0": item("baseline", 1)}, r"study.items.baseline-0 = 'baseline-0': is not named .* rename the key "
                                          r"to baseline-1"),
    ({}, r"study.items = \{\}: must not be empty"),
])
def test_a_matrix_that_cannot_be_compared_is_a_parameter_error(tmp_path: Path, items: dict, problem: str) -> None:
    from stages.report import Params

    path = params_file(tmp_path, **{"study.items": items})
    with pytest.raises(ParamsError, match=problem):
        load_study(path)
    with pytest.raises(ParamsError, match=problem):  # the report stage, before it reads anything
        load_section(path, "report", Params)


def test_unknown_strategy_names_are_parameter_errors(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["strategy_cfg"]["la_tokk"] = {"action_weight": 1.0}
    data["study"]["items"] = {"baseline-0": item("baseline", 0), "la_tox-0": item("la_tox", 0),
                              "la_align-0": item("la_align", 0)}
    del data["strategy_cfg"]["la_align"]
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ParamsError) as caught:
        load_study(path, KNOWN)
    assert {p.field for p in caught.value.problems} == {
        "strategy_cfg.la_tokk", "study.items.la_tox-0.strategy", "strategy_cfg.la_align"}
    assert "is not a registered strategy" in str(caught.value) and "section is missing" in str(caught.value)
    assert load_study(REPO / "params.yaml", KNOWN).strategies == list(KNOWN)  # the repository's own file passes


def test_the_flow_checks_strategy_names_before_any_stage(tmp_path: Path) -> None:
    from flows.study import FlowError, FlowOptions, run_study

    data = yaml.safe_load((REPO / "params.yaml").read_text())
    data["strategy_cfg"]["la_tokk"] = {"action_weight": 1.0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    options = FlowOptions(root=tmp_path, targets=(), max_parallel=1, retries=0, retry_delay_s=0, runner="thread",
                          address=None)
    with pytest.raises(FlowError, match=r"strategy_cfg.la_tokk = .*: is not a registered strategy"):
        run_study(options)  # no dvc.yaml here: the check comes first


def test_an_override_must_name_an_existing_key() -> None:
    base = {"finetune": {"train": {"steps": 10, "lr": 0.1}}, "study": {"chunk": 8}}
    assert apply_overrides(base, {"finetune.train.steps": 3, "study.chunk": 4}, "o.yaml") == {
        "finetune": {"train": {"steps": 3, "lr": 0.1}}, "study": {"chunk": 4}}
    assert base["finetune"]["train"]["steps"] == 10  # a copy
    with pytest.raises(ParamsError, match=r"(?s)o.yaml: .*finetune.train.stepz = 3: is not a key of the params it "
                                          r"overrides. Fix: use an existing dotted key \(did you mean 'steps'\?\)"):
        apply_overrides(base, {"finetune.train.stepz": 3}, "o.yaml")


def test_finetune_checks_its_item_before_any_work(tmp_path: Path) -> None:
    from stages.finetune import Item
    from stages.finetune.__main__ import check_item

    path = params_file(tmp_path, **{"study.items.la_tok-0.reads": "data/extract/lam_codes.hdf5"})
    check_item(path, Item("la_tok", 1))  # its own entry is right
    with pytest.raises(ParamsError, match=r"study.items.la_tok-0.reads = 'data/extract/lam_codes.hdf5': is not what "
                                          r"la_tok reads. Fix: write data/extract/action_tokens.hdf5"):
        check_item(path, Item("la_tok", 0))

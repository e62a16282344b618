"""Budget validation: every bad field is refused with one line naming it and the allowed range."""

from __future__ import annotations

import pytest

from protect import Budget, ProtectError


def test_defaults_round_trip_through_dict() -> None:
    budget = Budget(layers=["0.*", "fc.weight"], target_accuracy=0.2, options={"rank": "gradient"})
    values = budget.to_dict()
    assert values["layers"] == ["0.*", "fc.weight"] and values["options"] == {"rank": "gradient"}
    assert Budget.from_dict(values) == budget
    assert Budget.from_dict({}) == Budget() and Budget().options == {}
    assert hash(budget) == hash(Budget.from_dict(values))  # frozen and hashable, layers stored as a tuple


def test_the_legacy_form_moves_rank_and_loss_into_options() -> None:
    """Key files written before methods owned their options hold rank and loss beside the common fields."""
    legacy = {"max_params": 64, "eps": 1.0, "params_per_step": 1, "target_accuracy": None, "layers": None,
              "stay_in_range": True, "seed": 0, "rank": "gain", "loss": "margin"}
    budget = Budget.from_dict(legacy)
    assert budget == Budget(options={"rank": "gain", "loss": "margin"})
    assert "rank" not in budget.to_dict() and budget.to_dict()["options"] == {"rank": "gain", "loss": "margin"}
    with pytest.raises(ProtectError, match="budget names loss twice: as a field and as an option"):
        Budget.from_dict({"loss": "ce", "options": {"loss": "margin"}})


def test_integers_are_accepted_for_float_fields() -> None:
    budget = Budget(eps=2, target_accuracy=1)
    assert isinstance(budget.eps, float) and budget.eps == 2.0
    assert isinstance(budget.target_accuracy, float)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("max_params", 0, "max_params must be an integer >= 1"),
        ("max_params", 2.5, "max_params must be an integer"),
        ("max_params", True, "max_params must be an integer"),
        ("eps", 0.0, "eps must be a finite number > 0"),
        ("eps", -1.0, "eps must be a finite number > 0"),
        ("eps", float("nan"), "eps must be a finite number > 0"),
        ("eps", float("inf"), "eps must be a finite number > 0"),
        ("eps", "1", "eps must be a finite number > 0"),
        ("params_per_step", 0, "params_per_step must be an integer >= 1"),
        ("target_accuracy", 1.5, "target_accuracy must be None or a number in [0, 1]"),
        ("target_accuracy", -0.1, "target_accuracy must be None or a number in [0, 1]"),
        ("layers", [], "layers must be a non-empty list"),
        ("layers", "fc.*", "layers must be None or a list of name patterns"),
        ("layers", ["fc.*", ""], "layers must be a non-empty list of non-empty name patterns"),
        ("layers", [3], "layers must be a non-empty list of non-empty name patterns"),
        ("stay_in_range", 1, "stay_in_range must be true or false"),
        ("seed", "0", "seed must be an integer"),
        ("options", ["loss"], "options must be a mapping of option names to values"),
        ("options", {"": 1}, "options must be a mapping of option names to values"),
    ],
)
def test_bad_values_are_refused_with_one_line(field: str, value: object, expected: str) -> None:
    with pytest.raises(ProtectError) as excinfo:
        Budget(**{field: value})
    message = str(excinfo.value)
    assert expected in message and field in message and "\n" not in message


def test_from_dict_refuses_unknown_fields_and_non_mappings() -> None:
    with pytest.raises(ProtectError, match="unknown budget field"):
        Budget.from_dict({"max_param": 3})
    with pytest.raises(ProtectError, match="budget must be a mapping"):
        Budget.from_dict([("max_params", 3)])  # type: ignore[arg-type]

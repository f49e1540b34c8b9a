"""clinical_calc's logic under plain CPython; expected values worked out by hand from the published formulas."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

CALC = Path(__file__).resolve().parents[2] / "functions" / "clinical_calc" / "calc.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("clinical_calc_calc", CALC)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


calc = _load()


@pytest.mark.parametrize(
    ("args", "value", "label"),
    [
        ({"calculator": "bmi", "weight_kg": 70, "height_cm": 175}, 22.9, "normal"),
        ({"calculator": "bmi", "weight_kg": 50, "height_cm": 170}, 17.3, "underweight"),
        ({"calculator": "bmi", "weight_kg": 110, "height_cm": 180}, 34.0, "obese"),
        # 142 x (1.0/0.7)^-1.2 x 0.9938^60 x 1.012
        ({"calculator": "egfr", "creatinine_mg_dl": 1.0, "age": 60, "sex": "female"}, 64.5, "G2"),
        # 142 x (0.8/0.9)^-0.302 x 0.9938^40
        ({"calculator": "egfr", "creatinine_mg_dl": 0.8, "age": 40, "sex": "male"}, 114.7, "G1"),
        # 142 x (2.5/0.9)^-1.2 x 0.9938^70
        ({"calculator": "egfr", "creatinine_mg_dl": 2.5, "age": 70, "sex": "male"}, 27.0, "G4"),
    ],
)
def test_bmi_and_egfr(args: dict[str, Any], value: float, label: str) -> None:
    result = calc.calculate(args)
    assert result["value"] == value
    assert label in (result.get("category"), result.get("stage"))


@pytest.mark.parametrize(
    ("args", "score"),
    [
        ({"age": 50, "sex": "male"}, 0),
        ({"age": 50, "sex": "female"}, 1),
        ({"age": 70, "sex": "male", "hypertension": True}, 2),
        ({"age": 76, "sex": "female", "hypertension": True, "diabetes": True}, 5),
        (
            {
                "age": 80, "sex": "female", "congestive_heart_failure": True, "hypertension": True,
                "diabetes": True, "stroke_tia_thromboembolism": True, "vascular_disease": True,
            },
            9,
        ),
    ],
)  # fmt: skip
def test_cha2ds2_vasc(args: dict[str, Any], score: int) -> None:
    result = calc.calculate({"calculator": "cha2ds2_vasc", **args})
    assert result["value"] == score == sum(result["points"].values())


@pytest.mark.parametrize(
    "args",
    [
        {},
        {"calculator": "nope"},
        {"calculator": "bmi", "weight_kg": 70},
        {"calculator": "bmi", "weight_kg": "70", "height_cm": 175},
        {"calculator": "bmi", "weight_kg": True, "height_cm": 175},
        {"calculator": "bmi", "weight_kg": 70, "height_cm": 0},
        {"calculator": "egfr", "creatinine_mg_dl": 1.0, "age": 60, "sex": "other"},
        {"calculator": "egfr", "creatinine_mg_dl": 1.0, "age": 12, "sex": "male"},
        {"calculator": "cha2ds2_vasc", "age": 70, "sex": "male", "diabetes": "yes"},
    ],
)
def test_invalid_input_is_refused_by_name(args: dict[str, Any]) -> None:
    with pytest.raises(calc.InvalidInput):
        calc.calculate(args)

"""Clinical calculators: plain Python, testable under CPython. Arguments in, numbers out.

- BMI: weight (kg) / height (m) squared, with the WHO adult category.
- eGFR: the CKD-EPI 2021 creatinine equation (race-free), mL/min/1.73 m2, with the KDIGO G stage.
- CHA2DS2-VASc: stroke risk score in atrial fibrillation, 0 to 9.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Args = dict[str, Any]


class InvalidInput(Exception):
    """The arguments are missing, of the wrong type or out of range; the message names which."""


def calculate(args: Args) -> dict[str, Any]:
    """Run the calculator named by args["calculator"]."""
    name = args.get("calculator")
    calculator = CALCULATORS.get(name) if isinstance(name, str) else None
    if calculator is None:
        raise InvalidInput(f"calculator must be one of {', '.join(sorted(CALCULATORS))}")
    return {"calculator": name, **calculator(args)}


def _number(args: Args, name: str, low: float, high: float) -> float:
    value = args.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a number")
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low:g} and {high:g}")
    return float(value)


def _sex(args: Args) -> str:
    sex = args.get("sex")
    if sex not in ("female", "male"):
        raise InvalidInput("sex must be 'female' or 'male'")
    return str(sex)


def _flag(args: Args, name: str) -> bool:
    value = args.get(name, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false")
    return value


def bmi(args: Args) -> dict[str, Any]:
    weight = _number(args, "weight_kg", 1, 700)
    height_m = _number(args, "height_cm", 30, 300) / 100
    value = weight / (height_m * height_m)
    if value < 18.5:
        category = "underweight"
    elif value < 25:
        category = "normal"
    elif value < 30:
        category = "overweight"
    else:
        category = "obese"
    return {"value": round(value, 1), "unit": "kg/m2", "category": category}


def egfr(args: Args) -> dict[str, Any]:
    """CKD-EPI 2021: 142 x min(Scr/k,1)^a x max(Scr/k,1)^-1.200 x 0.9938^age (x 1.012 if female)."""
    creatinine = _number(args, "creatinine_mg_dl", 0.1, 30)
    age = _number(args, "age", 18, 120)
    female = _sex(args) == "female"
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = creatinine / kappa
    value = 142 * min(ratio, 1) ** alpha * max(ratio, 1) ** -1.200 * 0.9938**age
    if female:
        value *= 1.012
    return {"value": round(value, 1), "unit": "mL/min/1.73m2", "stage": _ckd_stage(value)}


def _ckd_stage(value: float) -> str:
    for threshold, stage in ((90, "G1"), (60, "G2"), (45, "G3a"), (30, "G3b"), (15, "G4")):
        if value >= threshold:
            return stage
    return "G5"


def cha2ds2_vasc(args: Args) -> dict[str, Any]:
    age = _number(args, "age", 0, 120)
    female = _sex(args) == "female"
    points = {
        "congestive_heart_failure": 1 if _flag(args, "congestive_heart_failure") else 0,
        "hypertension": 1 if _flag(args, "hypertension") else 0,
        "age": 2 if age >= 75 else 1 if age >= 65 else 0,
        "diabetes": 1 if _flag(args, "diabetes") else 0,
        "stroke_tia_thromboembolism": 2 if _flag(args, "stroke_tia_thromboembolism") else 0,
        "vascular_disease": 1 if _flag(args, "vascular_disease") else 0,
        "sex_female": 1 if female else 0,
    }
    return {"value": sum(points.values()), "points": points}


CALCULATORS: dict[str, Callable[[Args], dict[str, Any]]] = {
    "bmi": bmi,
    "egfr": egfr,
    "cha2ds2_vasc": cha2ds2_vasc,
}

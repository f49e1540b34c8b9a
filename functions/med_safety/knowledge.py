"""A small, explicit drug-allergy knowledge table: RxNorm ingredients grouped into classes, with the
SNOMED CT substance codes that name the same allergens, and the classes known to cross-react.

It is deliberately small and reviewable: every flag the function raises can be traced to one line
here. It covers the allergens and medications in our synthetic data and the Synthea samples; a
hospital would replace it with its formulary's interaction service.
"""

from __future__ import annotations

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED = "http://snomed.info/sct"

# class -> {RxNorm ingredient code: ingredient name}
CLASS_INGREDIENTS: dict[str, dict[str, str]] = {
    "penicillins": {"7980": "penicillin g", "7984": "penicillin v", "723": "amoxicillin", "733": "ampicillin",
                    "7773": "piperacillin", "10627": "ticarcillin"},
    "cephalosporins": {"2186": "cefuroxime", "2176": "cefazolin", "2231": "cephalexin", "2193": "ceftriaxone",
                       "2180": "cefdinir"},
    "sulfonamide antibiotics": {"10180": "sulfamethoxazole", "10831": "sulfamethoxazole / trimethoprim"},
    "nsaids": {"5640": "ibuprofen", "1191": "aspirin", "7258": "naproxen", "3355": "diclofenac",
               "5781": "indomethacin", "6135": "ketorolac"},
    "opioids": {"2670": "codeine", "7052": "morphine", "5489": "hydrocodone", "7804": "oxycodone",
                "3423": "hydromorphone"},
}  # fmt: skip

# SNOMED CT substance or allergy-finding codes that mean an allergy to a whole class.
SNOMED_CLASS_ALLERGENS: dict[str, str] = {
    "764146007": "penicillins",  # Penicillin (substance)
    "91936005": "penicillins",  # Allergy to penicillin (finding)
    "373270004": "penicillins",  # Penicillin -class of antibiotic- (substance)
    "387406002": "sulfonamide antibiotics",  # Sulfonamide (substance)
    "372665008": "nsaids",  # Non-steroidal anti-inflammatory agent (substance)
    "360204007": "opioids",  # Opioid (substance)
}

# Classes whose members cross-react with another class often enough to warrant a warning.
CROSS_REACTIVE: dict[str, tuple[str, str]] = {
    "penicillins": ("cephalosporins", "cephalosporins cross-react with penicillins in a minority of patients"),
}

# RxNorm clinical drugs whose display names do not spell out their ingredients.
CLINICAL_DRUG_INGREDIENTS: dict[str, tuple[str, ...]] = {
    "562251": ("723",),  # Amoxicillin 250 MG / Clavulanate 125 MG Oral Tablet
    "856987": ("5489",),  # Acetaminophen 300 MG / HYDROcodone Bitartrate 5 MG
    "1049221": ("7804",),  # Acetaminophen 325 MG / Oxycodone Hydrochloride 5 MG
    "1860154": ("7804",),  # Abuse-Deterrent 12 HR Oxycodone Hydrochloride 15 MG
}

"""The synthetic generator's vocabulary: code systems, names, places, conditions, allergens, medications.

Fictional where it names people or places; real codes (SNOMED CT, RxNorm, LOINC) where it names
clinical things, so that functions meet the codes real charts carry.
"""

from __future__ import annotations

import random
import uuid

ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"

SNOMED = "http://snomed.info/sct"

RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"

LOINC = "http://loinc.org"

UCUM = "http://unitsofmeasure.org"

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

MRN_SYSTEM = "urn:wardfn:mrn"

SSN_SYSTEM = "http://hl7.org/fhir/sid/us-ssn"


def _practitioner_ids() -> tuple[str, ...]:
    rng = random.Random("wardfn practitioners")
    return tuple(str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(50))


# The same pool for every seed, so that development tokens can name a practitioner who is

# on some patients' care teams whatever the store was seeded with.
PRACTITIONER_IDS: tuple[str, ...] = _practitioner_ids()


# (female given names, male given names, family names) by origin. Most patients take

# all their names from one origin; some families mix, as they do.
NAME_ORIGINS: tuple[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]], ...] = (
    (
        ("Olivia", "Emma", "Charlotte", "Amelia", "Harper", "Grace"),
        ("Liam", "Noah", "Oliver", "James", "William", "Henry"),
        ("Smith", "Johnson", "Williams", "Brown", "Miller", "Davis", "Wilson", "Taylor"),
    ),
    (
        ("Maria", "Sofia", "Valentina", "Camila", "Lucia", "Isabella"),
        ("Jose", "Mateo", "Santiago", "Diego", "Luis", "Carlos"),
        ("Garcia", "Rodriguez", "Martinez", "Hernandez", "Lopez", "Gonzalez"),
    ),
    (
        ("Mei", "Xiu", "Li Na", "Yan", "Hui"),
        ("Wei", "Jun", "Hao", "Lei", "Ming"),
        ("Wang", "Li", "Zhang", "Chen", "Liu"),
    ),
    (
        ("Priya", "Ananya", "Anjali", "Divya", "Kavya"),
        ("Arjun", "Rohan", "Vikram", "Rahul", "Aditya"),
        ("Patel", "Sharma", "Singh", "Kumar", "Reddy"),
    ),
    (
        ("Chiamaka", "Ngozi", "Folake", "Abena", "Thandiwe"),
        ("Chinedu", "Emeka", "Kwame", "Sipho", "Tunde"),
        ("Okafor", "Adeyemi", "Mensah", "Nkosi", "Okonkwo"),
    ),
    (
        ("Aisha", "Fatima", "Leila", "Noor", "Yasmin"),
        ("Mohammed", "Omar", "Youssef", "Tariq", "Karim"),
        ("Haddad", "Khalil", "Rahman", "Nasser", "Saleh"),
    ),
    (("Linh", "Mai", "Lan", "Thu"), ("Minh", "Duc", "Huy", "Quang"), ("Nguyen", "Tran", "Le", "Pham")),
    (("Yuki", "Haruka", "Aiko", "Emi"), ("Hiroshi", "Kenji", "Takeshi", "Ren"), ("Tanaka", "Sato", "Suzuki")),
    (("Ji-woo", "Seo-yeon", "Min-seo"), ("Min-jun", "Ji-ho", "Seo-jun"), ("Kim", "Park", "Lee", "Choi")),
    (
        ("Siobhan", "Aoife", "Agnieszka", "Zofia", "Ingrid", "Astrid"),
        ("Cian", "Padraig", "Piotr", "Jakub", "Lars", "Erik"),
        ("Murphy", "O'Brien", "Kelly", "Kowalski", "Nowak", "Hansen", "Johansson"),
    ),
)

STREETS = ("Main St", "Oak Ave", "Maple Dr", "Cedar Ln", "Elm St", "Park Rd", "Lake View Dr", "Hill St")

CITIES = (
    ("Boston", "MA", "021"),
    ("Worcester", "MA", "016"),
    ("Springfield", "MA", "011"),
    ("Providence", "RI", "029"),
    ("Hartford", "CT", "061"),
    ("Albany", "NY", "122"),
    ("Burlington", "VT", "054"),
    ("Portland", "ME", "041"),
)

AREA_CODES = ("617", "508", "413", "401", "860", "518", "802", "207")

ENCOUNTER_KINDS = (
    ("AMB", "ambulatory", "185349003", "Encounter for check up (procedure)", 1),
    ("AMB", "ambulatory", "185345009", "Encounter for symptom (procedure)", 1),
    ("EMER", "emergency", "50849002", "Emergency room admission (procedure)", 5),
    ("IMP", "inpatient encounter", "32485007", "Hospital admission (procedure)", 72),
)

CONDITIONS = (
    ("44054006", "Diabetes mellitus type 2 (disorder)"),
    ("59621000", "Essential hypertension (disorder)"),
    ("195967001", "Asthma (disorder)"),
    ("13645005", "Chronic obstructive lung disease (disorder)"),
    ("49436004", "Atrial fibrillation (disorder)"),
    ("35489007", "Depressive disorder (disorder)"),
    ("197480006", "Anxiety disorder (disorder)"),
    ("55822004", "Hyperlipidemia (disorder)"),
    ("84114007", "Heart failure (disorder)"),
    ("69896004", "Rheumatoid arthritis (disorder)"),
    ("396275006", "Osteoarthritis (disorder)"),
    ("40055000", "Chronic sinusitis (disorder)"),
    ("233604007", "Pneumonia (disorder)"),
    ("271737000", "Anemia (disorder)"),
    ("195662009", "Acute viral pharyngitis (disorder)"),
    ("10509002", "Acute bronchitis (disorder)"),
    ("709044004", "Chronic kidney disease (disorder)"),
    ("73430006", "Sleep apnea (disorder)"),
    ("414916001", "Obesity (disorder)"),
)


# (system, code, display, category)
ALLERGENS = (
    (RXNORM, "7980", "Penicillin G", "medication"),
    (RXNORM, "723", "Amoxicillin", "medication"),
    (RXNORM, "10180", "Sulfamethoxazole", "medication"),
    (RXNORM, "1191", "Aspirin", "medication"),
    (RXNORM, "5640", "Ibuprofen", "medication"),
    (RXNORM, "2670", "Codeine", "medication"),
    (RXNORM, "7052", "Morphine", "medication"),
    (SNOMED, "762952008", "Peanut (substance)", "food"),
    (SNOMED, "227493005", "Cashew nut (substance)", "food"),
    (SNOMED, "102263004", "Eggs (edible) (substance)", "food"),
    (SNOMED, "3718001", "Cow's milk (substance)", "food"),
    (SNOMED, "227037002", "Fish - dietary (substance)", "food"),
    (SNOMED, "111088007", "Latex (substance)", "environment"),
    (SNOMED, "288328004", "Bee venom (substance)", "environment"),
    (SNOMED, "260147004", "House dust mite (organism)", "environment"),
    (SNOMED, "264287008", "Animal dander (substance)", "environment"),
    (SNOMED, "256277009", "Grass pollen (substance)", "environment"),
)

REACTIONS = (
    ("247472004", "Wheal (finding)"),
    ("271807003", "Eruption of skin (disorder)"),
    ("39579001", "Anaphylaxis (disorder)"),
    ("49727002", "Cough (finding)"),
    ("267036007", "Dyspnea (finding)"),
    ("422587007", "Nausea (finding)"),
    ("418290006", "Itching (finding)"),
    ("76067001", "Sneezing (finding)"),
    ("21522001", "Abdominal pain (finding)"),
    ("267038008", "Edema (finding)"),
)

MEDICATIONS = (
    ("314076", "lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("861007", "metformin hydrochloride 500 MG Oral Tablet", "Take 1 tablet by mouth twice daily with meals"),
    ("197361", "amlodipine 5 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("259255", "atorvastatin 80 MG Oral Tablet", "Take 1 tablet by mouth at bedtime"),
    ("312961", "simvastatin 20 MG Oral Tablet", "Take 1 tablet by mouth in the evening"),
    ("310798", "hydrochlorothiazide 25 MG Oral Tablet", "Take 1 tablet by mouth every morning"),
    ("866924", "metoprolol tartrate 25 MG Oral Tablet", "Take 1 tablet by mouth twice daily"),
    ("855332", "warfarin sodium 5 MG Oral Tablet", "Take as directed; dose adjusted to INR"),
    ("308182", "amoxicillin 250 MG Oral Capsule", "Take 1 capsule by mouth three times daily for 7 days"),
    ("310965", "ibuprofen 200 MG Oral Tablet", "Take 1 to 2 tablets by mouth every 6 hours as needed"),
    ("313782", "acetaminophen 325 MG Oral Tablet", "Take 2 tablets by mouth every 6 hours as needed"),
    ("243670", "aspirin 81 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("312938", "sertraline 100 MG Oral Tablet", "Take 1 tablet by mouth once daily"),
    ("849574", "naproxen sodium 220 MG Oral Tablet", "Take 1 tablet by mouth every 12 hours as needed"),
    ("745679", "albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", "Inhale 2 puffs every 4 hours as needed"),
    ("895994", "fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler", "Inhale 2 puffs twice daily"),
)

CARE_TEAM_ROLES = (
    ("446050000", "Primary care physician"),
    ("309343006", "Physician"),
    ("224535009", "Registered nurse"),
    ("46255001", "Pharmacist"),
)

OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"

# Access to patient data in the hospital information system (HIS).
#
# The host asks for the whole package and reads `allow`, `deny`, `reasons`, `obligations` and
# `break_glass`. It decides allow AND NOT deny (deny wins), and binds what the function may read
# to `obligations`: the resource types it may read, the fields masked, dropped and generalised
# (`generalise`: `Type.element:method`, Safe Harbor's year or three ZIP digits instead of nothing),
# and the host imports it may use besides `records` (`imports`: directory, pseudonym, log). A
# function's manifest asks for imports; only what the obligations grant is linked.
#
# Two input shapes are answered:
#
# - the host's (it has `subject`): subject {id, roles}, action (read-summary, search,
#   export-deidentified, export-record, calculate, read-audit, read-access-report, reveal-patient,
#   review-break-glass), purpose (an HL7 PurposeOfUse code), patient
#   {id, care_team: [practitioner ids], consent_directives: [{decision, purposes}]} or null,
#   break_glass {reason} (optional), audit {enabled};
# - the seed case's (no `subject`): action "access_patient_data", user {id, role},
#   patient {consent: bool}, audit {enabled}. Its rules are kept, unchanged in meaning.
#
# `reasons` says, in words for a compliance officer, why a request is refused; it is empty
# exactly when the request is allowed.
package healthcare.his

import rego.v1

# Deny by default: a request is allowed only when a grant matches and no denial does.
default allow := false

default break_glass := false

# ---------------------------------------------------------------------------------------------
# The seed case's rule, for its own input shape.

seed_shape if not input.subject

allow if {
	seed_shape
	input.action == "access_patient_data"
	input.user.role == "authorized_medical_staff"
	input.patient.consent == true
	input.audit.enabled == true
}

deny if {
	seed_shape
	input.user.role != "authorized_medical_staff"
}

# The reasons use `not x == y` rather than `x != y` so that a missing field also
# produces a reason (`!=` on an undefined field is undefined, which would stay silent).
reasons contains "the user's role is not authorised to access patient data" if {
	seed_shape
	not input.user.role == "authorized_medical_staff"
}

reasons contains "the patient has not consented to the use of their data for this purpose" if {
	seed_shape
	not input.patient.consent == true
}

reasons contains "audit logging is not enabled for this request" if {
	seed_shape
	not input.audit.enabled == true
}

reasons contains "the requested action is not permitted by the patient data policy" if {
	seed_shape
	not input.action == "access_patient_data"
}

# ---------------------------------------------------------------------------------------------
# The clinical access policy, for the host's input shape.

host_shape if input.subject

allow if {
	host_shape
	count(grants) > 0
	count(denials) == 0
}

deny if {
	host_shape
	count(denials) > 0
}

deny if {
	host_shape
	count(grants) == 0
}

reasons contains reason if {
	host_shape
	some reason in denials
}

reasons contains reason if {
	host_shape
	count(grants) == 0
	some reason in missing_grant
}

# Emergency access: allowed through the break-the-glass grant. The audit record is flagged for review.
break_glass if {
	host_shape
	allow
	"break-glass" in grants
}

# A field stays masked (or dropped) only if every matching grant masks (or drops) it; generalised
# only if no matching grant keeps it whole.
obligations := {
	"resource_types": readable_types,
	"mask": masked_fields,
	"drop": dropped_fields,
	"generalise": generalised_fields,
	"imports": granted_imports,
} if {
	host_shape
	allow
}

# The imports granted besides `records`. The directory only to a search (minimal matches, never
# records); pseudonyms only where linkage is the point (research) and no identifying field
# survives beside them, so that no answer can pair a pseudonym with a name; the log to any call
# (what a function logs is kept in a bounded buffer and never leaves the host).
granted_imports contains "log"

granted_imports contains "directory" if {
	input.action == "search"
	some g in grants
	g in {"search", "registration-search"}
}

granted_imports contains "pseudonym" if {
	input.action == "export-deidentified"
	"research" in grants
	every field in identifying_fields {
		removed(field)
	}
}

# Nothing identifying of the field is left: it is dropped, or generalised to what Safe Harbor allows
# beside a pseudonym (the host holds the same line, host/types.py DEIDENTIFYING_GENERALISATIONS).
removed(field) if field in dropped_fields

removed(field) if {
	some generalisation in generalised_fields
	generalisation in deidentifying_generalisations
	startswith(generalisation, concat("", [field, ":"]))
}

readable_types contains resource_type if {
	some g in grants
	some resource_type in grant_types(g)
}

masked_fields contains field if {
	some g in grants
	some field in grant_masks(g)
	not unmasked_by_some_grant(field)
}

dropped_fields contains field if {
	some g in grants
	some field in grant_drops(g)
	not kept_by_some_grant(field)
}

generalised_fields contains generalisation if {
	some g in grants
	some generalisation in grant_generalises(g)
	not kept_whole_by_some_grant(generalisation)
}

# A grant keeps a field whole when it neither generalises nor drops it.
kept_whole_by_some_grant(generalisation) if {
	some g in grants
	not generalisation in grant_generalises(g)
	not generalised_field(generalisation) in grant_drops(g)
}

generalised_field(generalisation) := split(generalisation, ":")[0]

unmasked_by_some_grant(field) if {
	some g in grants
	not field in grant_masks(g)
}

kept_by_some_grant(field) if {
	some g in grants
	not field in grant_drops(g)
}

# ---------------------------------------------------------------------------------------------
# Vocabulary.

purposes_of_use := {"TREAT", "ETREAT", "HPAYMT", "HOPERAT", "HRESCH", "PATRQT", "HCOMPL"}

patient_actions := {"read-summary", "export-deidentified", "export-record"}

no_patient_actions := {"search", "calculate", "read-audit", "review-break-glass"}

# Oversight of one patient's record: who looked at it (the access report) and a compliance officer
# revealing whom a pseudonymised review is about. They read the audit trail, never the record, and
# no consent directive refuses them (a patient's right of access, a regulator's oversight).
oversight_actions := {"read-access-report", "reveal-patient"}

clinicians := {"physician", "nurse"}

clinical_types := {"Patient", "Encounter", "Condition", "AllergyIntolerance", "MedicationRequest", "Observation", "CareTeam"}

# The national identifier (US SSN): an identifier whose type is v2-0203 "SS".
national_identifier := "Patient.identifier(SS)"

# What names a patient outright: never in the same answer as a research pseudonym.
identifying_fields := {"Patient.name", "Patient.identifier", "Patient.telecom", "Patient.address", "Patient.photo", "Patient.contact"}

direct_identifiers := {"Patient.name", "Patient.identifier", "Patient.telecom", "Patient.address", "Patient.birthDate", "Patient.photo", "Patient.contact"}

# HIPAA Safe Harbor keeps what research needs where it allows: the birth year and the age (none for
# ages 90 and over, only "90 or older"), the first three ZIP digits (000 for the restricted prefixes),
# and the year of every other date.
safe_harbor_generalisations := {"Patient.birthDate:year", "Patient.address:zip3", "*.*:year"}

deidentifying_generalisations := {"Patient.address:zip3"}

# What each grant lets the function read. Functions rather than one object: the engines then
# evaluate only the grants that matched (a whole-object constant cost regopy about 1 ms a decision).
grant_types("care-team") := clinical_types

grant_types("break-glass") := clinical_types

grant_types("medical-staff") := clinical_types

grant_types("registration") := {"Patient"}

grant_types("billing") := billing_types

grant_types("own-record") := own_record_types

grant_types("research") := research_types

grant_types("search") := {"Patient"}

grant_types("registration-search") := {"Patient"}

grant_types("calculate") := set()

grant_types("audit-review") := set()

grant_types("access-report") := set()

# Only registration sees the national identifier unmasked (and a calculator reads no record).
unmasked_grants := {"registration", "registration-search", "calculate", "audit-review", "access-report"}

grant_masks(g) := {national_identifier} if not g in unmasked_grants

grant_masks(g) := set() if g in unmasked_grants

grant_drops("billing") := clinical_notes

grant_drops("research") := research_drops

grant_drops(g) := set() if not g in {"billing", "research"}

grant_generalises("research") := safe_harbor_generalisations

grant_generalises(g) := set() if g != "research"

billing_types := {"Patient", "Encounter", "Condition", "MedicationRequest", "Coverage", "Claim"}

research_types := {"Patient", "Encounter", "Condition", "AllergyIntolerance", "MedicationRequest", "Observation"}

own_record_types := clinical_types | {"Consent"}

# What Safe Harbor lets research keep generalised is not dropped: the birth date and the address.
research_drops := (direct_identifiers - {"Patient.birthDate", "Patient.address"}) | clinical_notes

# Free-text notes and narrative, on any resource type.
clinical_notes := {"*.note", "*.text"}

roles contains role if {
	some role in input.subject.roles
	is_string(role)
}

has_role(wanted) if {
	some role in roles
	role in wanted
}

patient_id := input.patient.id if {
	is_string(input.patient.id)
	input.patient.id != ""
}

has_patient if patient_id

on_care_team if {
	is_string(input.subject.id)
	some member in input.patient.care_team
	member == input.subject.id
}

break_glass_reason_given if {
	is_string(input.break_glass.reason)
	trim_space(input.break_glass.reason) != ""
}

# ---------------------------------------------------------------------------------------------
# Consent. A directive {decision: "deny", purposes: [...]} denies the purposes it names; one that
# names none denies every purpose. Emergency treatment is treatment: a request for ETREAT is
# checked against both. Research needs no permit for a de-identified export, but a denial wins.

checked_purposes := {"TREAT", "ETREAT"} if input.purpose == "ETREAT"

checked_purposes := {input.purpose} if input.purpose != "ETREAT"

consent_denies(purpose) if {
	some directive in input.patient.consent_directives
	not directive.decision == "permit"
	covers(directive, purpose)
}

covers(directive, _) if not directive.purposes

covers(directive, _) if count(directive.purposes) == 0

covers(directive, purpose) if purpose in directive.purposes

# Break-the-glass overrides a denial of treatment, never of anything else (research above all).
overridable := {"TREAT", "ETREAT"}

consent_denied if {
	has_patient
	not input.action in oversight_actions
	some purpose in checked_purposes
	consent_denies(purpose)
	not overridden(purpose)
}

overridden(purpose) if {
	purpose in overridable
	"break-glass" in grants
}

# ---------------------------------------------------------------------------------------------
# Denials: any one of them refuses the request, whatever the grants.

denials contains "audit logging is not enabled for this request" if not input.audit.enabled == true

denials contains "the purpose of use is not an HL7 PurposeOfUse code this policy knows" if {
	not input.purpose in purposes_of_use
}

denials contains "the requested action is not permitted by the patient data policy" if {
	not input.action in patient_actions
	not input.action in no_patient_actions
	not input.action in oversight_actions
}

denials contains "this action needs a patient" if {
	input.action in patient_actions | oversight_actions
	not has_patient
}

denials contains "this action works on no single patient: it must name none" if {
	input.action in no_patient_actions
	has_patient
}

denials contains "the patient's consent denies this purpose of use" if consent_denied

denials contains "a patient may read only their own record" if {
	has_role({"patient"})
	has_patient
	not input.subject.id == patient_id
}

denials contains "research (HRESCH) gets only de-identified exports" if {
	input.purpose == "HRESCH"
	input.action != "export-deidentified"
}

denials contains "emergency access (ETREAT) needs a break-the-glass reason" if {
	input.purpose == "ETREAT"
	not break_glass_reason_given
}

# ---------------------------------------------------------------------------------------------
# Grants: what each role may do, and for which purpose of use.

# Clinicians on the patient's care team, for treatment. Only physicians export the whole record.
grants contains "care-team" if {
	has_role(clinicians)
	input.purpose == "TREAT"
	input.action == "read-summary"
	has_patient
	on_care_team
}

grants contains "care-team" if {
	has_role({"physician"})
	input.purpose == "TREAT"
	input.action == "export-record"
	has_patient
	on_care_team
}

# Break-the-glass: a clinician, on the care team or not, for emergency treatment with a reason.
grants contains "break-glass" if {
	has_role(clinicians)
	input.purpose == "ETREAT"
	input.action == "read-summary"
	has_patient
	break_glass_reason_given
}

# The seed case's broad grant: any patient whose consent allows treatment.
grants contains "medical-staff" if {
	has_role({"authorized_medical_staff"})
	input.purpose == "TREAT"
	input.action == "read-summary"
	has_patient
}

# Registration staff: demographics only, for treatment or operations (admission, scheduling).
grants contains "registration" if {
	has_role({"registration"})
	input.purpose in {"TREAT", "HOPERAT"}
	input.action == "read-summary"
	has_patient
}

# Billing: payment and operations, no clinical notes.
grants contains "billing" if {
	has_role({"billing"})
	input.purpose in {"HPAYMT", "HOPERAT"}
	input.action == "read-summary"
	has_patient
}

# A patient's own record, at their own request.
grants contains "own-record" if {
	has_role({"patient"})
	input.purpose == "PATRQT"
	input.action in {"read-summary", "export-record"}
	input.subject.id == patient_id
}

# Research: de-identified exports only.
grants contains "research" if {
	has_role({"researcher"})
	input.purpose == "HRESCH"
	input.action == "export-deidentified"
	has_patient
}

# Searching for a patient (no single patient yet): clinicians and medical staff for treatment.
grants contains "search" if {
	has_role(clinicians | {"authorized_medical_staff"})
	input.purpose in {"TREAT", "ETREAT"}
	input.action == "search"
	not has_patient
}

grants contains "registration-search" if {
	has_role({"registration"})
	input.purpose in {"TREAT", "HOPERAT"}
	input.action == "search"
	not has_patient
}

# A calculator reads no patient data at all.
grants contains "calculate" if {
	has_role(clinicians | {"authorized_medical_staff"})
	input.purpose in {"TREAT", "ETREAT"}
	input.action == "calculate"
	not has_patient
}

# Reading the audit trail (who accessed which patient, and why) and reviewing break-the-glass
# accesses: compliance officers, for compliance (HCOMPL), on no single patient. It reads no patient record.
grants contains "audit-review" if {
	has_role({"compliance_officer"})
	input.purpose == "HCOMPL"
	input.action in {"read-audit", "review-break-glass"}
	not has_patient
}

# Who looked at a patient's record: the patient themselves, at their own request (the denial above
# holds them to their own id), and compliance officers, who may also reveal whom a review is about.
grants contains "access-report" if {
	has_role({"patient"})
	input.purpose == "PATRQT"
	input.action == "read-access-report"
	input.subject.id == patient_id
}

grants contains "access-report" if {
	has_role({"compliance_officer"})
	input.purpose == "HCOMPL"
	input.action in oversight_actions
	has_patient
}

# ---------------------------------------------------------------------------------------------
# Why no grant matched, when none did.

specific_missing contains "the subject has no role" if count(roles) == 0

specific_missing contains "the clinician is not on the patient's care team" if {
	has_role(clinicians)
	input.purpose == "TREAT"
	input.action in patient_actions
	has_patient
	not on_care_team
}

missing_grant := specific_missing if count(specific_missing) > 0

missing_grant := {"no role of the subject permits this action for this purpose of use"} if {
	count(specific_missing) == 0
}

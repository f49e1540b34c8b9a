# Access to patient data in the hospital information system (HIS).
#
# `allow` and `deny` are the seed case's rules, unchanged in meaning. The host decides
# allow AND NOT deny (deny wins). `reasons` says, in words for a compliance officer, why a
# request is refused; it is empty exactly when every condition of `allow` holds.
package healthcare.his

import rego.v1

# Deny by default: a request is allowed only when every condition below holds.
default allow := false

allow if {
	input.action == "access_patient_data"
	input.user.role == "authorized_medical_staff"
	input.patient.consent == true
	input.audit.enabled == true
}

deny if {
	input.user.role != "authorized_medical_staff"
}

# The reasons use `not x == y` rather than `x != y` so that a missing field also
# produces a reason (`!=` on an undefined field is undefined, which would stay silent).
reasons contains "the user's role is not authorised to access patient data" if {
	not input.user.role == "authorized_medical_staff"
}

reasons contains "the patient has not consented to the use of their data for this purpose" if {
	not input.patient.consent == true
}

reasons contains "audit logging is not enabled for this request" if {
	not input.audit.enabled == true
}

reasons contains "the requested action is not permitted by the patient data policy" if {
	not input.action == "access_patient_data"
}

# --- Issue 6 (benchmarks), pending issue 3's policy rewrite -------------------------------
# The smallest rule that lets authorised staff run `clinical_calc` (action "calculate"):
# a calculation on arguments alone, with no patient, so no consent applies. Issue 3 rewrites
# this policy and will support "calculate" properly; the merge reconciles this block with it.
allow if {
	input.action == "calculate"
	input.user.role == "authorized_medical_staff"
	input.audit.enabled == true
}

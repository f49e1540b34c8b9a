# Unit tests for healthcare.his, run with `opa test policies/`.
package healthcare.his_test

import rego.v1

import data.healthcare.his

permitted := {
	"action": "access_patient_data",
	"user": {"id": "u-100", "role": "authorized_medical_staff"},
	"patient": {"id": "p-0001", "consent": true},
	"purpose": "treatment",
	"audit": {"enabled": true},
}

no_consent := {
	"action": "access_patient_data",
	"user": {"id": "u-100", "role": "authorized_medical_staff"},
	"patient": {"id": "p-0001", "consent": false},
	"purpose": "research",
	"audit": {"enabled": true},
}

wrong_role := {
	"action": "access_patient_data",
	"user": {"id": "u-200", "role": "billing_clerk"},
	"patient": {"id": "p-0001", "consent": true},
	"purpose": "treatment",
	"audit": {"enabled": true},
}

audit_off := {
	"action": "access_patient_data",
	"user": {"id": "u-100", "role": "authorized_medical_staff"},
	"patient": {"id": "p-0001", "consent": true},
	"purpose": "treatment",
	"audit": {"enabled": false},
}

other_action := {
	"action": "delete_patient_data",
	"user": {"id": "u-100", "role": "authorized_medical_staff"},
	"patient": {"id": "p-0001", "consent": true},
	"purpose": "treatment",
	"audit": {"enabled": true},
}

consent_as_string := {
	"action": "access_patient_data",
	"user": {"id": "u-100", "role": "authorized_medical_staff"},
	"patient": {"id": "p-0001", "consent": "yes"},
	"purpose": "treatment",
	"audit": {"enabled": true},
}

no_role := {
	"action": "access_patient_data",
	"user": {"id": "u-300"},
	"patient": {"id": "p-0001", "consent": true},
	"purpose": "treatment",
	"audit": {"enabled": true},
}

role_reason := "the user's role is not authorised to access patient data"

consent_reason := "the patient has not consented to the use of their data for this purpose"

audit_reason := "audit logging is not enabled for this request"

action_reason := "the requested action is not permitted by the patient data policy"

test_allow_authorised_staff_with_consent_and_audit if {
	his.allow with input as permitted
}

test_no_deny_and_no_reasons_when_allowed if {
	not his.deny with input as permitted
	count(his.reasons) == 0 with input as permitted
}

test_no_allow_without_consent if {
	not his.allow with input as no_consent
	not his.deny with input as no_consent
	his.reasons == {consent_reason} with input as no_consent
}

test_deny_other_role if {
	not his.allow with input as wrong_role
	his.deny with input as wrong_role
	his.reasons == {role_reason} with input as wrong_role
}

test_no_allow_when_audit_disabled if {
	not his.allow with input as audit_off
	his.reasons == {audit_reason} with input as audit_off
}

test_no_allow_for_other_action if {
	not his.allow with input as other_action
	his.reasons == {action_reason} with input as other_action
}

test_empty_input_is_refused_with_every_reason if {
	not his.allow with input as {}
	his.reasons == {role_reason, consent_reason, audit_reason, action_reason} with input as {}
}

test_consent_must_be_boolean_true if {
	not his.allow with input as consent_as_string
	his.reasons == {consent_reason} with input as consent_as_string
}

test_missing_role_is_refused_but_not_denied if {
	# The seed's deny uses `!=`, which is undefined for a missing role; allow still fails.
	not his.allow with input as no_role
	not his.deny with input as no_role
	his.reasons == {role_reason} with input as no_role
}

"""The privacy office: who looked at a patient's record, and the break-the-glass review queue.

Both are read from the audit trail through `AuditLog`'s public methods, and every act on them (a
report read, a review opened, a disposition, a reveal) is decided by the policy and audited before
anything is read, through `InvocationService.oversee`. Dispositions are audit records themselves.
"""

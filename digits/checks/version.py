"""The version of the batch checks (digits.checks.batch, measure, policy and the bounds in
settings): recorded with every stored batch (batch.json's `checks_version`,
digits.data.batches.store_batch) and verified by every run before it trains on the batch
(digits.data.check_record). Plain constants: the data layer reads them without GX.
"""

# Raise it with every change to what the checks accept or refuse.
CHECKS_VERSION = 1
# The oldest version whose acceptances a run still trains on. Raise it to CHECKS_VERSION
# when the change closes a hole (a check that let bad batches through): runs then stop on
# the batches the older checks accepted until each is added again and judged anew.
TRUSTED_SINCE = 1

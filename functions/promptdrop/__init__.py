"""promptdrop: drop a file of prompts into S3, get every answer back exactly once."""

import gc

# The cyclic garbage collector, set for a process that makes many short-lived objects per answer
# (the SDKs' requests and responses, journal items) beside long-lived ones (botocore's service
# models). At Python's default — a young collection every 700 allocations, a full one every 100 of
# those — collections took about a quarter of the handler's CPU per answer, most of it full passes
# over the service models. Here they run about 30 times less often, and full ones rarely: still
# running, so memory stays bounded (the handler's peak RSS did not move). Set on import of the
# package, before the SDKs load (a cold start's imports gain too).
GC_THRESHOLDS = (20_000, 10, 10)
gc.set_threshold(*GC_THRESHOLDS)

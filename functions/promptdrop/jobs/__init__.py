"""One input file, start to finish: plan → run units under leases → record → finalize → outputs.

A job is identified by bucket, key and ETag (or version id): the same upload delivered twice is
the same job, and a rerun skips every request that already has a final answer, so an answer is
never paid for twice and each request lands exactly once in the outputs.

Modules, each with one job: ``runner`` (entry points, planning a new upload), ``ports`` (what
``jobs`` needs of AWS, as Protocols), ``planning`` (job id, output keys, shards), ``source``
(reading the job's version of the object), ``units`` (one unit under its lease, and how it ends),
``modes`` (how a unit's lines are sent: real time), ``intake`` (a unit's lines → the requests a run
sends), ``batch_mode`` (the provider's Batch API; with ``batch_state``, ``batch_submit``,
``batch_merge``, ``batch_deadline``), ``admission`` (the decisions about each line,
as stages), ``recorder`` (outcomes → journal and dead letters), ``finalize`` (the finalizer
lease), ``output_writer`` (outputs and summary from the journal), ``redrive`` (a failed prompt
again), ``failures`` (file failures), ``run_result`` (what a run reports), ``cost_guard`` (the
file's budget), ``endings`` (why a unit stops early; the last line of defence).
"""

from .planning import make_job_id, output_keys
from .run_result import FileRef, JobResult, RunStatus
from .runner import JobRunner, ShouldStop

__all__ = ["FileRef", "JobResult", "JobRunner", "RunStatus", "ShouldStop", "make_job_id", "output_keys"]

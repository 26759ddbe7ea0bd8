"""Every run tag the pipeline sets or reads, in one place.

Tags are an index of a run (the UI filters by them, the jobs sensor finds a job's runs by
them); the facts a run works from are in its run config and plan.
"""

TAG_BACKEND = "imagen/backend"
TAG_STYLE = "imagen/style"
TAG_JOB_ID = "imagen/job_id"
TAG_JOB_ATTEMPT = "imagen/job_attempt"
TAG_OWNER = "imagen/owner"
TAG_POOL = "imagen/pool"
"""The Dagster pool of the run's generate step; the run queue limits GPU runs by it."""
TAG_SOURCE = "imagen/source"
"""Who started the run: ``cli`` (``imagen generate``), ``imagen.jobs`` (the sensor),
``imagen.jobs/notify`` (the listener)."""
TAG_SERVER = "imagen/server"
"""The server (GPU box) that made the image; set once the generate step knows it."""
TAG_FALLBACK = "imagen/fallback"
"""The fallback instance that made the image, when the backend could not take the job."""
TAG_WORKER = "imagen/worker_host"
"""The Celery worker (``name@host``) that executes the run; set when its task starts."""
TAG_PRIORITY = "dagster/priority"
"""Dagster's own run priority tag: the run queue launches higher values first."""
TAG_WILL_RETRY = "dagster/will_retry"
"""Set by Dagster on a failed run it will retry (run retries)."""
TAG_CELERY_QUEUE = "dagster-celery/queue"
"""dagster-celery's tag naming the Celery queue a run is sent to (read only by the Celery
run launcher, scripts/dagster.postgres.yaml; other launchers ignore it)."""
GPU_QUEUE = "imagen_gpu"
"""The Celery queue of runs whose generate step uses the GPU pool: the GPU host's worker
serves it. Other runs carry no queue tag and go to the launcher's ``default_queue``."""

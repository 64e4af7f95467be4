"""Local workers: several processes of this machine searching one study (``workers: N``, no Ray).

The driver prepares once (data, reference, study, sensitivity table) and starts
N-1 worker processes, each handed the driver's set-up (pickled: data, reference,
space and cost model, so nothing is loaded, trained or timed again) to run the
same loop as the driver against the shared study. Claims (``search.claims``) keep them from training a candidate
twice or past the study's total; each proposes with its own seed. A worker that
dies leaves its claim to be failed and retried by the others. The threads of
this machine are shared out among the processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorkerJob:
    """What a worker process runs (pickled into a freshly spawned interpreter)."""

    setup: bytes  # the driver's SearchSetup, pickled here (tensors as bytes, not in shared memory: a container's
    # /dev/shm is often 64 MB, less than CIFAR-10's images)
    index: int  # 1..N-1 (the driver is 0): seeds its proposals and names its log
    threads: int
    log_path: str


def threads_per_worker(workers: int) -> int:
    return max(1, (os.cpu_count() or 1) // workers)


def start_workers(setup, workers: int) -> list[multiprocessing.Process]:
    """Start ``workers - 1`` processes on the study of ``setup.config`` (the caller is worker 0)."""
    out = Path(setup.config.out)
    out.mkdir(parents=True, exist_ok=True)
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked torch threads or locks
    packed = pickle.dumps(setup)
    processes = []
    for index in range(1, workers):
        job = WorkerJob(packed, index, threads_per_worker(workers), str(out / f"worker-{index}.log"))
        process = context.Process(target=run_worker, args=(job,), name=f"autocompress-worker-{index}")
        process.start()
        processes.append(process)
    log.info("started %d worker process(es) on study %s: pids %s", len(processes), setup.config.study_name,
             [p.pid for p in processes])
    return processes


def join_workers(processes: list[multiprocessing.Process]) -> None:
    """Wait for the workers; one that failed is reported (its claims were failed and retried by the others)."""
    for process in processes:
        process.join()
        if process.exitcode != 0:
            log.warning("worker %s (pid %s) ended with exit code %s; see its log beside the study", process.name,
                        process.pid, process.exitcode)


def run_worker(job: WorkerJob) -> None:
    """A worker process: the same search loop as the driver's, on the shared study, with the driver's set-up."""
    from autocompress.search.api import search  # a spawned process imports afresh

    handler = logging.FileHandler(job.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("autocompress")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    torch.set_num_threads(job.threads)
    setup = pickle.loads(job.setup)  # the driver's own object, from its own process
    search(setup.config, setup=setup, progress=False, worker=job.index)

"""The reward server's scheduling: a bounded queue in front of one scoring worker, and answers kept by request id.

The HTTP layer runs one thread per connection (``ThreadingHTTPServer``). Without a bound, every client that
arrives while the reward is busy adds a thread holding a decoded batch; and a client that timed out and sent its
batch again would have it scored twice. So:

- admission: at most ``queue_size`` requests are held at once (being read, waiting or being scored); the next one
  is refused before its body is read (the server answers 503 with ``Retry-After``);
- one worker thread scores the jobs in arrival order: reward models and their caches are not written for
  concurrent calls;
- a job with a request id is findable while it waits or scores (a repeat of the id joins it), and its answer is
  kept for ``cache_seconds`` after it ends (a repeat gets that answer: the reward is not called again);
- a waiter gives up at its time limit, but the job goes on and its answer is kept for the retry.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable

Answer = tuple[int, dict]  # HTTP status, JSON object
CACHE_MAX_ENTRIES = 4096  # answers kept at most, oldest dropped first: bounds the memory of the cache
RETRY_AFTER_MAX = 60  # seconds: the longest Retry-After the server suggests


class Job:
    """One batch to score; ``wait`` blocks until the worker has answered it."""

    def __init__(self, rid: str | None, work: object):
        self.rid, self.work = rid, work
        self.answer: Answer | None = None
        self._done = threading.Event()

    def wait(self, timeout: float) -> Answer | None:
        """The answer, or None when it is not there within ``timeout`` seconds."""
        return self.answer if self._done.wait(max(0.0, timeout)) else None

    def finish(self, answer: Answer) -> None:
        self.answer = answer
        self._done.set()


class ScoreQueue:
    """Admission, one scoring worker (a daemon thread calling ``run(work) -> Answer``) and the answers by id.

    ``counts`` (under ``lock``) tallies what happened: ``scored`` jobs, ``refused`` (queue full), ``repeated``
    (answered from the cache), ``joined`` (a repeat that waited for the running job), ``timed_out``,
    ``unauthorized``. ``clock`` (seconds, monotonic) dates the kept answers."""

    def __init__(self, run: Callable[[object], Answer], queue_size: int, cache_seconds: float,
                 max_cached: int = CACHE_MAX_ENTRIES):
        if not (isinstance(queue_size, int) and queue_size >= 1):
            raise ValueError(f"queue_size must be an int >= 1, got {queue_size!r}")
        if not (isinstance(cache_seconds, (int, float)) and 0 <= cache_seconds < math.inf):
            raise ValueError(f"cache_seconds must be >= 0 seconds (finite), got {cache_seconds!r}")
        self.run, self.queue_size, self.cache_seconds, self.max_cached = run, queue_size, cache_seconds, max_cached
        self.clock = time.monotonic
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._admitted = 0  # requests held: being read, waiting or being scored
        self._running: dict[str, Job] = {}  # request id -> its job, until the job ends
        self._answers: OrderedDict[str, tuple[float, Answer]] = OrderedDict()  # id -> (expiry, answer), oldest first
        self._mean_s = 0.0  # moving average of a job's scoring time, for Retry-After
        self._jobs: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._worker = threading.Thread(target=self._work, name="reward-scorer", daemon=True)
        self._worker.start()

    def note(self, what: str) -> None:
        with self.lock:
            self.counts[what] += 1

    def find(self, rid: str) -> Job | Answer | None:
        """The kept answer of request ``rid``, or its job while it waits or scores, else None."""
        with self.lock:
            now = self.clock()
            while self._answers and next(iter(self._answers.values()))[0] <= now:  # oldest first: expired ones
                self._answers.popitem(last=False)
            if rid in self._answers:
                self.counts["repeated"] += 1
                return self._answers[rid][1]
            job = self._running.get(rid)
            if job is not None:
                self.counts["joined"] += 1
            return job

    def admit(self) -> bool:
        """Hold one more request, unless ``queue_size`` are held; each True must end in ``release`` or ``submit``."""
        with self.lock:
            if self._admitted >= self.queue_size:
                self.counts["refused"] += 1
                return False
            self._admitted += 1
            return True

    def release(self) -> None:
        """An admitted request that will not be scored (a bad payload, an empty batch)."""
        with self.lock:
            self._admitted -= 1

    def submit(self, rid: str | None, work: object) -> Job | Answer:
        """Queue ``work`` of an admitted request as the job of ``rid``. When a repeat of ``rid`` got there first
        (both were read at once), the admission is released and that job or answer is returned instead."""
        with self.lock:
            if rid is not None:
                hit = self._answers.get(rid, (None, None))[1] or self._running.get(rid)
                if hit is not None:
                    self._admitted -= 1
                    self.counts["joined" if isinstance(hit, Job) else "repeated"] += 1
                    return hit
            job = Job(rid, work)
            if rid is not None:
                self._running[rid] = job
        self._jobs.put(job)
        return job

    def retry_after(self) -> int:
        """Whole seconds until the held requests are likely scored, at least 1 (what a 503 suggests)."""
        with self.lock:
            return max(1, min(RETRY_AFTER_MAX, math.ceil(self._mean_s * self._admitted)))

    def close(self) -> None:
        """Stop the worker after the job it is scoring; queued jobs are dropped (their waiters time out)."""
        self._jobs.put(None)

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            t0 = time.monotonic()
            try:
                answer = self.run(job.work)
            except Exception as e:  # ``run`` answers reward failures itself: this is a bug in it, still an answer
                answer = (500, {"error": f"internal error: {type(e).__name__}: {e}"})
            with self.lock:
                seconds = time.monotonic() - t0
                self._mean_s = seconds if not self.counts["scored"] else 0.8 * self._mean_s + 0.2 * seconds
                self.counts["scored"] += 1
                self._admitted -= 1
                if job.rid is not None:
                    self._running.pop(job.rid, None)
                    self._answers[job.rid] = (self.clock() + self.cache_seconds, answer)
                    while len(self._answers) > self.max_cached:
                        self._answers.popitem(last=False)
            job.finish(answer)

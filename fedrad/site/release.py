"""The one release path: every value a site sends passes :meth:`ReleaseGuard.release`.

For each request it

1. keys the release by ``(study hash, run, kind, round)`` and hashes the request's input (the
   global model and every config value that shapes the answer);
2. answers a genuine retry (same key, same input) from the site's cached reply, so nothing new
   leaves and nothing is spent twice;
3. refuses a second, *different* release under a released key (``already-released``): the
   server cannot retrain a released round with another model or seed, or re-ask a statistic
   with other inputs under the same key;
4. refuses past the policy's limits: ``max_runs_per_study`` runs of one approved study and
   ``max_queries[kind]`` releases of one kind in one run (``query-limit``);
5. computes the answer, checks every count it releases against ``min_cell_count``, stamps it
   with a ``release`` record (kind, key, protections applied here, e.g. ``dp``) that the
   egress log combines with the transport's (``secagg``, ``sealed``), and caches it.

DP accounting of model updates is the privacy ledger's (keyed the same way, see
:mod:`fedrad.privacy.ledger`); this guard is what keeps every other release bounded.

The index lives in ``cache_dir/releases/index.json`` with the cached replies beside it, under a
file lock, so several processes of one site share it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ConfigRecord, RecordDict

from fedrad.federation.config import SiteConfig, StudyConfig
from fedrad.site.policy import SitePolicy
from fedrad.site.refusal import SiteRefusal

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

#: Name of the record every released reply carries (what the site applied, for its egress log).
RELEASE_RECORD = "release"
#: Config keys that do not shape an answer (transport), left out of the input hash.
TRANSPORT_KEYS = ("sealing-public-key",)


def input_hash(arrays: list[np.ndarray] | None, config: dict[str, Any]) -> str:
    """SHA-256 of the request's input: arrays (shape, dtype, bytes) and config values."""
    h = hashlib.sha256()
    for array in arrays or []:
        a = np.ascontiguousarray(array)
        h.update(f"{a.shape}:{a.dtype}".encode())
        h.update(a.tobytes())
    items = {
        str(k): (v.hex() if isinstance(v, bytes) else v)
        for k, v in config.items()
        if k not in TRANSPORT_KEYS
    }
    h.update(json.dumps(items, sort_keys=True, default=str).encode())
    return h.hexdigest()


def check_cell_counts(counts: dict[str, float], policy: SitePolicy, what: str) -> None:
    """Refuse a release any of whose non-zero counts is below the policy's ``min_cell_count``."""
    small = {k: v for k, v in counts.items() if 0 < v < policy.min_cell_count}
    if small:
        raise SiteRefusal(
            "policy",
            f"{what}: count(s) {', '.join(f'{k}={int(v)}' for k, v in small.items())} below "
            f"the site's min_cell_count {policy.min_cell_count}",
        )


class ReleaseGuard:
    """The site's record of what it released, and the gate every release passes."""

    def __init__(self, site: SiteConfig, policy: SitePolicy):
        self.site = site
        self.policy = policy
        self.folder = Path(site.cache_dir) / "releases"

    # -- storage --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self.folder / "index.lock"
        with open(lock, "a+") as handle:
            if fcntl is not None:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                index = self._read()
                yield index
            finally:
                if fcntl is not None:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        path = self.folder / "index.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"releases": {}, "runs": {}}
        except (OSError, ValueError) as exc:
            raise SiteRefusal(
                "internal", f"{path}: the site's release index cannot be read ({exc})"
            ) from None
        return data

    def _write(self, index: dict[str, Any]) -> None:
        from fedrad.secure.files import write_atomically

        text = json.dumps(index, indent=1, sort_keys=True) + "\n"
        write_atomically(self.folder / "index.json", text.encode("utf-8"), durable=True)

    # -- the gate ----------------------------------------------------------------------------

    def run_ordinal(self, study: StudyConfig, approval: str, run_id: int | str) -> int:
        """The site's own number for this run of the approved study (0 for its first run).

        Noise seeds use it instead of the server's run id: every run the site serves gets fresh
        noise, and a simulation (whose run ids are random) repeats bit for bit.
        """
        with self._locked() as index:
            runs = index["runs"].setdefault(approval, [])
            if str(run_id) not in runs:
                if len(runs) >= self.policy.max_runs_per_study:
                    raise SiteRefusal(
                        "query-limit",
                        f"study {study.name!r} already ran {len(runs)} time(s) at this site, "
                        f"its max_runs_per_study is {self.policy.max_runs_per_study}",
                    )
                runs.append(str(run_id))
                self._write(index)
            return runs.index(str(run_id))

    def release(
        self,
        *,
        study: StudyConfig,
        study_hash: str,
        approval: str,
        run_id: int | str,
        kind: str,
        round: int | str,
        input: str,
        compute: Callable[[], RecordDict],
        protection: tuple[str, ...] = (),
    ) -> RecordDict:
        """The reply content for this request: cached, refused, or computed and recorded."""
        from fedrad.federation.sealing import decode_records, encode_records

        if kind not in self.policy.statistics and kind != "train":
            raise SiteRefusal(
                "policy",
                f"the site does not answer {kind!r} (its [policy] statistics: "
                f"{', '.join(self.policy.statistics)})",
            )
        from fedrad.federation.egress import note_protection

        note_protection(protection)
        key = f"{study_hash}:{run_id}:{kind}:{round}"
        with self._locked() as index:
            cached = self._cached(index, key, input, decode_records)
            if cached is not None:
                return cached
            self._check_limits(index, study, approval, str(run_id), kind, study_hash)
        content = compute()
        content[RELEASE_RECORD] = ConfigRecord(
            {"kind": kind, "key": key, "protection": ",".join(protection) or "none"}
        )
        blob = encode_records(content)
        name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".bin"
        with self._locked() as index:
            cached = self._cached(index, key, input, decode_records)
            if cached is not None:  # a concurrent identical request won the race
                return cached
            self._check_limits(index, study, approval, str(run_id), kind, study_hash)
            (self.folder / name).write_bytes(blob)
            index["releases"][key] = {
                "input": input,
                "reply": name,
                "kind": kind,
                "study": study_hash,
                "approval": approval,
                "run": str(run_id),
                "protection": list(protection),
            }
            runs = index["runs"].setdefault(approval, [])
            if str(run_id) not in runs:
                runs.append(str(run_id))
            self._write(index)
        return content

    def _cached(self, index: dict[str, Any], key: str, input: str, decode) -> RecordDict | None:
        entry = index["releases"].get(key)
        if entry is None:
            return None
        if entry["input"] != input:
            raise SiteRefusal(
                "already-released",
                f"{key} was released for another input ({entry['input'][:12]} != "
                f"{input[:12]}); a second, different release of it is refused",
            )
        path = self.folder / entry["reply"]
        try:
            return decode(path.read_bytes(), site_id=self.site.site_id)
        except (OSError, ValueError) as exc:
            raise SiteRefusal(
                "already-released", f"{key} was released but its cached reply is lost ({exc})"
            ) from None

    def _check_limits(
        self,
        index: dict[str, Any],
        study: StudyConfig,
        approval: str,
        run_id: str,
        kind: str,
        study_hash: str,
    ) -> None:
        runs = index["runs"].get(approval, [])
        if run_id not in runs and len(runs) >= self.policy.max_runs_per_study:
            raise SiteRefusal(
                "query-limit",
                f"study {study.name!r} already ran {len(runs)} time(s) at this site, its "
                f"max_runs_per_study is {self.policy.max_runs_per_study}",
            )
        limit = self.policy.query_limit(kind, study)
        done = sum(
            1
            for e in index["releases"].values()
            if e["study"] == study_hash and e["run"] == run_id and e["kind"] == kind
        )
        if done >= limit:
            raise SiteRefusal(
                "query-limit",
                f"{kind}: {done} release(s) in run {run_id} of study {study.name!r}, the "
                f"site's limit is {limit}",
            )

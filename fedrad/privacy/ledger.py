"""A site's persistent privacy ledger: every DP-SGD round it ran, in every study, composed.

The ledger is one JSON file (``SiteConfig.ledger_path``)::

    {"format": "fedrad-privacy-ledger", "version": 1,
     "entries": [{"time": "2025-01-01T12:00:00+00:00", "study": "...", "run_id": "...",
                  "round": 3, "noise_multiplier": 1.1, "sample_rate": 0.1, "steps": 20,
                  "delta": 1e-05, "accountant": "prv", "epsilon_after": 2.41}, ...]}

Each entry is one round's :class:`~fedrad.privacy.accountant.Mechanism`; what the site has spent
is the composition of *all* entries, recomputed from the mechanisms at the ledger's ``delta``
(``epsilon_after`` is the total right after the entry was written, kept for reading; ``delta`` and
``accountant`` say how it was computed; entries with equal noise and rate are composed as one
mechanism, and :func:`~fedrad.privacy.accountant.epsilon` memoises compositions, so a round's
``check``, ``record`` and ``spent`` cost one composition). Composing across studies is what
protects a patient who sits in several studies' training data.

Protocol of a round (the ClientApp): ``check`` before training (refuse work that would exceed the
budget), train, ``record`` before the update leaves the site (``record`` checks again, under a
file lock, so two studies running at once cannot both squeeze into the last of the budget).

- One release per key: an entry is keyed by ``(study hash, run_id, round)`` and records the hash
  of the round's input (the global model and config). A second ``record`` of the same key with
  the same input and mechanism is a no-op (a genuine retry, which the site answers from its
  cached reply); the same key with another input raises :class:`ReleaseConflictError` (the
  server retraining a released round with other seeds or another model); with another
  mechanism, :class:`PrivacyError`.
- Atomic: the file is rewritten to a temporary file in the same folder, flushed and fsync'ed, and
  moved over the ledger with ``os.replace`` (then the folder is fsync'ed), so a crash leaves the old
  or the new ledger, never half of one.
- Never silently reset: a ledger file that cannot be read raises :class:`LedgerCorruptError`; only a
  missing file means "nothing spent yet".
- Delta: the site's ``delta`` is the one every entry is composed at; a study whose ``delta`` is
  larger than the site's is refused (the site's guarantee would not hold for it).
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fedrad.privacy.accountant import (
    Accountant,
    Mechanism,
    PrivacyError,
    check_accountant,
    check_delta,
    epsilon,
)

try:  # POSIX advisory lock; elsewhere the ledger relies on one writer per site
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

FORMAT = "fedrad-privacy-ledger"
VERSION = 2
#: Ledger versions this fedrad reads (version 1 entries have no study or input hash).
READABLE_VERSIONS = (1, 2)


class PrivacyBudgetExceeded(PrivacyError):  # noqa: N818 - the name the issue asks for
    """A round would take the site past its privacy budget; the site refuses it."""

    def __init__(self, message: str, *, budget: float, spent: float, after: float):
        super().__init__(message)
        self.budget = budget
        self.spent = spent
        self.after = after


class ReleaseConflictError(PrivacyError):
    """A released round asked again from another input: a second release is refused."""


class LedgerCorruptError(PrivacyError):
    """The ledger file exists but cannot be read; it is never reset silently."""


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded round: who spent it, its mechanism, and the site's total right after."""

    time: str
    study: str
    run_id: str
    round: int
    noise_multiplier: float
    sample_rate: float
    steps: int
    delta: float
    accountant: str
    epsilon_after: float
    #: The approved study's hash and the hash of the round's input (the global model and
    #: config the site trained from); empty for entries of version-1 ledgers.
    study_hash: str = ""
    input_hash: str = ""

    @property
    def mechanism(self) -> Mechanism:
        """The entry's DP-SGD mechanism."""
        return Mechanism(self.noise_multiplier, self.sample_rate, self.steps)

    @property
    def key(self) -> tuple[str, str, int]:
        """``(study hash, run_id, round)``: one release per key."""
        return (self.study_hash, self.run_id, self.round)


def _entry_from_json(raw: object, where: str) -> LedgerEntry:
    if not isinstance(raw, dict):
        raise LedgerCorruptError(f"{where}: an entry is not an object: {raw!r}")
    fields = {
        "time": str,
        "study": str,
        "run_id": str,
        "round": int,
        "noise_multiplier": float,
        "sample_rate": float,
        "steps": int,
        "delta": float,
        "accountant": str,
        "epsilon_after": float,
    }
    missing = sorted(set(fields) - set(raw))
    optional = {
        name: str(raw[name])
        for name in ("study_hash", "input_hash")
        if isinstance(raw.get(name), str)
    }
    if missing:
        raise LedgerCorruptError(f"{where}: an entry lacks {', '.join(missing)}: {raw!r}")
    values: dict[str, Any] = {}
    for name, kind in fields.items():
        value = raw[name]
        ok = (
            isinstance(value, str)
            if kind is str
            else (
                isinstance(value, int) and not isinstance(value, bool)
                if kind is int
                else isinstance(value, (int, float)) and not isinstance(value, bool)
            )
        )
        if not ok:
            raise LedgerCorruptError(f"{where}: entry field {name!r} is {value!r}")
        values[name] = float(value) if kind is float else value
    entry = LedgerEntry(**values, **optional)
    try:
        entry.mechanism  # noqa: B018 - validates the numbers
    except PrivacyError as exc:
        raise LedgerCorruptError(f"{where}: entry {entry.key}: {exc}") from None
    return entry


class PrivacyLedger:
    """The site's privacy spending across rounds and studies, kept in a JSON file at ``path``.

    ``budget`` is the site's total epsilon (``None``: no limit, spending is still recorded);
    ``delta`` the site's delta, at which all entries are composed; ``accountant`` ``"prv"`` or
    ``"rdp"``. The file is read afresh on every call, so several ``PrivacyLedger`` objects (or
    processes) on one path see each other's entries.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        budget: float | None,
        delta: float,
        accountant: Accountant = "prv",
    ) -> None:
        self.path = Path(path)
        if budget is not None:
            if isinstance(budget, bool) or not isinstance(budget, (int, float)):
                raise PrivacyError(f"epsilon budget must be a number or None, got {budget!r}")
            if not (math.isfinite(budget) and budget > 0):
                raise PrivacyError(f"epsilon budget must be positive and finite, got {budget!r}")
            budget = float(budget)
        self.budget = budget
        self.delta = check_delta(delta)
        self.accountant = check_accountant(accountant)
        self.entries()  # fail now, not mid-round, on an unreadable ledger

    # -- reading -----------------------------------------------------------------------------

    def entries(self) -> list[LedgerEntry]:
        """All recorded entries, oldest first ([] when the file does not exist yet)."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except (OSError, UnicodeDecodeError) as exc:
            raise LedgerCorruptError(
                f"{self.path}: cannot read the privacy ledger ({exc})"
            ) from None
        fix = (
            "restore it from a backup; fedrad never resets a ledger, because that would forget "
            "what the site has spent"
        )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LedgerCorruptError(
                f"{self.path}: the privacy ledger is not valid JSON ({exc}); {fix}"
            ) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise LedgerCorruptError(f"{self.path}: not a fedrad privacy ledger; {fix}")
        if data.get("version") not in READABLE_VERSIONS:
            raise LedgerCorruptError(
                f"{self.path}: privacy ledger version {data.get('version')!r} is not supported "
                f"(this fedrad reads version {VERSION})"
            )
        raw = data.get("entries")
        if not isinstance(raw, list):
            raise LedgerCorruptError(f"{self.path}: 'entries' is not a list; {fix}")
        entries = [_entry_from_json(item, f"{self.path}") for item in raw]
        keys = [e.key for e in entries]
        if len(set(keys)) != len(keys):
            raise LedgerCorruptError(
                f"{self.path}: a (study hash, run_id, round) appears twice; {fix}"
            )
        return entries

    def _epsilon(self, mechanisms: list[Mechanism]) -> float:
        return epsilon(mechanisms, self.delta, self.accountant)  # type: ignore[arg-type]

    def spent(self, study: str | None = None, run_id: str | int | None = None) -> float:
        """Epsilon spent so far: the composition of every entry at the ledger's delta.

        ``study`` and/or ``run_id`` restrict it to those entries (e.g. what one study has cost
        this site so far); the budget always applies to the unrestricted total.
        """
        entries = self.entries()
        if study is not None:
            entries = [e for e in entries if e.study == study]
        if run_id is not None:
            entries = [e for e in entries if e.run_id == str(run_id)]
        return self._epsilon([e.mechanism for e in entries])

    def remaining(self) -> float | None:
        """``budget - spent()`` (``None`` without a budget)."""
        return None if self.budget is None else self.budget - self.spent()

    def per_round(self) -> list[dict[str, Any]]:
        """One row per entry for reports: the entry's fields plus ``epsilon_round``.

        ``epsilon_round`` is the increase of the site's total epsilon that the round caused
        (``epsilon_after`` minus the previous entry's, at the delta and accountant of the entry);
        epsilons do not add up under composition, so these increments shrink as spending grows.
        """
        rows = []
        previous = 0.0
        for entry in self.entries():
            row = asdict(entry)
            row["epsilon_round"] = entry.epsilon_after - previous
            previous = entry.epsilon_after
            rows.append(row)
        return rows

    # -- checking and recording ----------------------------------------------------------------

    def _check_delta(self, study_delta: float | None) -> None:
        if study_delta is None:
            return
        d = check_delta(study_delta)
        if d > self.delta:
            raise PrivacyError(
                f"the study's delta {d:g} is larger than this site's delta {self.delta:g}: the "
                "site's guarantee would not hold; ask the coordinator for a study delta at most "
                "the site's, or raise the site's delta in site.toml"
            )

    def _projection(
        self,
        entries: list[LedgerEntry],
        mechanism: Mechanism,
        run_id: str,
        round: int,
        study_hash: str = "",
        input_hash: str = "",
    ) -> tuple[float, LedgerEntry | None]:
        """``(after, existing)``: the total with ``mechanism`` under this key, and its entry."""
        if not isinstance(mechanism, Mechanism):
            raise PrivacyError(f"expected a Mechanism, got {type(mechanism).__name__}")
        if mechanism.noise_multiplier == 0.0 and mechanism.steps > 0:
            raise PrivacyError(
                "a round without noise (noise_multiplier 0) is not differentially private and "
                "cannot be spent from a privacy budget; set the study's noise or target_epsilon"
            )
        existing = next((e for e in entries if e.key == (study_hash, run_id, round)), None)
        if existing is not None:
            if existing.input_hash != input_hash:
                raise ReleaseConflictError(
                    f"{self.path}: round {round} of run {run_id!r} (study {study_hash[:12] or '-'}) "
                    "was already released from another input (global model or config); a "
                    "second, different release of a released round is refused"
                )
            if existing.mechanism != mechanism:
                raise PrivacyError(
                    f"{self.path}: run {run_id!r} round {round} is already recorded with "
                    f"{existing.mechanism}, not {mechanism}; a retried round must repeat the "
                    "same training (same seed, noise and sampling), otherwise record it under a "
                    "new round key"
                )
            return self._epsilon([e.mechanism for e in entries]), existing
        return self._epsilon([*(e.mechanism for e in entries), mechanism]), None

    def _refuse_if_over(
        self, entries: list[LedgerEntry], after: float, study: str, round: int
    ) -> None:
        if self.budget is None or after <= self.budget:
            return
        spent = self._epsilon([e.mechanism for e in entries])
        raise PrivacyBudgetExceeded(
            f"privacy budget exceeded at this site: budget epsilon {self.budget:g} "
            f"(delta {self.delta:g}, {self.accountant}), already spent {spent:.4g}, round "
            f"{round} of study {study!r} would bring it to {after:.4g}; the site refuses "
            "the round (raise the site's epsilon_budget or ask for more noise / fewer steps)",
            budget=self.budget,
            spent=spent,
            after=after,
        )

    def check(
        self,
        next: Mechanism,
        study: str,
        run_id: str | int,
        round: int,
        *,
        study_delta: float | None = None,
        study_hash: str = "",
        input_hash: str = "",
    ) -> float:
        """The site's total epsilon if ``next`` were spent; raises if it would exceed the budget.

        Raises :class:`PrivacyBudgetExceeded` (with ``budget``, ``spent``, ``after``) or
        :class:`PrivacyError` (study delta larger than the site's; same key, other mechanism).
        An already recorded ``(run_id, round)`` costs nothing more.
        """
        self._check_delta(study_delta)
        run_id, round = _check_key(study, run_id, round)
        entries = self.entries()
        after, existing = self._projection(entries, next, run_id, round, study_hash, input_hash)
        if existing is None:
            self._refuse_if_over(entries, after, study, round)
        return after

    def record(
        self,
        mechanism: Mechanism,
        study: str,
        run_id: str | int,
        round: int,
        *,
        study_delta: float | None = None,
        study_hash: str = "",
        input_hash: str = "",
    ) -> LedgerEntry:
        """Append the round's spending (checked against the budget again) and return its entry.

        Re-recording the same ``(run_id, round)`` with the same mechanism returns the existing
        entry and writes nothing. The read-check-write happens under an exclusive lock on
        ``<ledger>.lock`` (POSIX); the write is atomic and durable (temporary file, fsync,
        ``os.replace``, fsync of the folder).
        """
        self._check_delta(study_delta)
        run_id, round = _check_key(study, run_id, round)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            entries = self.entries()
            after, existing = self._projection(
                entries, mechanism, run_id, round, study_hash, input_hash
            )
            if existing is not None:
                return existing
            self._refuse_if_over(entries, after, study, round)
            entry = LedgerEntry(
                time=datetime.now(UTC).isoformat(timespec="seconds"),
                study=study,
                run_id=run_id,
                round=round,
                noise_multiplier=mechanism.noise_multiplier,
                sample_rate=mechanism.sample_rate,
                steps=mechanism.steps,
                delta=self.delta,
                accountant=self.accountant,
                epsilon_after=after,
                study_hash=study_hash,
                input_hash=input_hash,
            )
            self._write([*entries, entry])
        return entry

    # -- file handling -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if fcntl is None:  # pragma: no cover - Windows
            yield
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _write(self, entries: list[LedgerEntry]) -> None:
        from fedrad.secure.files import write_atomically

        data = {"format": FORMAT, "version": VERSION, "entries": [asdict(e) for e in entries]}
        text = json.dumps(data, indent=1, allow_nan=False) + "\n"
        write_atomically(self.path, text.encode("utf-8"), durable=True)


def _check_key(study: object, run_id: object, round: object) -> tuple[str, int]:
    """Validate the entry key; returns ``(run_id as str, round as int)``."""
    if not isinstance(study, str) or not study:
        raise PrivacyError(f"study must be a non-empty string, got {study!r}")
    if isinstance(run_id, numbers.Integral) and not isinstance(run_id, bool):
        run_id = str(int(run_id))  # Flower's run ids are integers
    if not isinstance(run_id, str) or not run_id:
        raise PrivacyError(f"run_id must be a non-empty string or an integer, got {run_id!r}")
    if isinstance(round, bool) or not isinstance(round, numbers.Integral) or round < 0:
        raise PrivacyError(f"round must be a non-negative integer, got {round!r}")
    return run_id, int(round)

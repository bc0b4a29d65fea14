"""Study (``study.toml``) and site (``site.toml``) configuration.

A *study* is what the coordinator defines: the task, the features, the model and how it is
trained. A *site* is a hospital's folder: its manifest (or precomputed feature table), which of
its columns hold the study's label or survival outcome, its privacy budget and where it keeps its
feature cache and logs. Templates: ``server/study.toml`` and ``sites/site.toml``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fedrad.errors import FedradError

PRIVACY_MODES = ("none", "sample", "client")
ACCOUNTANTS = ("prv", "rdp")
STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum", "exact")
MODELS = ("logistic", "mlp", "cox")


class ConfigError(FedradError):
    """A study or site configuration file is missing, malformed or inconsistent."""


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} file not found") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _take(table: dict[str, Any], cls: type, where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    return cls(**table)


@dataclass(frozen=True)
class ModelConfig:
    type: Literal["logistic", "mlp", "cox"] = "logistic"
    hidden: int = 16
    dropout: float = 0.1
    l2: float = 1e-2


@dataclass(frozen=True)
class TrainingConfig:
    strategy: str = "fedavg"
    rounds: int = 20
    local_epochs: int = 2
    learning_rate: float = 0.1
    batch_size: int = 16
    optimizer: Literal["sgd", "adam"] = "sgd"
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.1
    trim_fraction: float = 0.2
    krum_byzantine: int = 1
    fraction_train: float = 1.0
    min_sites: int = 2


@dataclass(frozen=True)
class PrivacyConfig:
    """Differential privacy of the study (``[privacy]`` of study.toml).

    ``mode = "sample"``: per-patient DP-SGD (Opacus) at every site. The study sets either
    ``target_epsilon`` (each site plans its noise so that the whole study, all rounds together,
    spends exactly that at the site's own sampling rate) or ``noise_multiplier``.
    ``mode = "client"``: client-level DP with Flower's DP wrappers (clipped updates, Gaussian noise
    on the aggregate); ``client_noise_multiplier`` and ``client_clipping_norm`` apply and each
    site's reported example count is capped at ``max_examples``.
    """

    mode: Literal["none", "sample", "client"] = "none"
    target_epsilon: float | None = None
    noise_multiplier: float | None = None
    delta: float = 1e-5
    max_grad_norm: float = 1.0
    accountant: Literal["prv", "rdp"] = "prv"
    client_noise_multiplier: float = 1.0
    client_clipping_norm: float = 1.0
    max_examples: int = 1000

    def __post_init__(self) -> None:
        if self.mode not in PRIVACY_MODES:
            raise ConfigError(f"privacy mode {self.mode!r}: use one of {', '.join(PRIVACY_MODES)}")
        if self.accountant not in ACCOUNTANTS:
            raise ConfigError(f"privacy accountant {self.accountant!r}: use prv or rdp")
        if self.mode == "sample":
            if (self.target_epsilon is None) == (self.noise_multiplier is None):
                raise ConfigError(
                    "[privacy] mode = 'sample' needs exactly one of target_epsilon or "
                    "noise_multiplier"
                )
            if self.target_epsilon is not None and not self.target_epsilon > 0:
                raise ConfigError("[privacy] target_epsilon must be positive")
            if self.noise_multiplier is not None and not self.noise_multiplier > 0:
                raise ConfigError("[privacy] noise_multiplier must be positive")
        if not 0 < self.delta < 1:
            raise ConfigError("[privacy] delta must lie in (0, 1)")
        if not self.max_grad_norm > 0:
            raise ConfigError("[privacy] max_grad_norm must be positive")

    @property
    def enabled(self) -> bool:
        return self.mode != "none"


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Flower SecAgg+ (``[secure_aggregation]`` of study.toml).

    ``num_shares`` and ``reconstruction_threshold`` are counts (> 1) or fractions of the sampled
    sites (<= 1), as in Flower's ``SecAggPlusWorkflow``. Updates are clipped to
    ``[-clipping_range, clipping_range]`` before quantisation into ``quantization_range`` levels;
    fedrad refuses (never clips silently) an update with a value outside that range.
    """

    enabled: bool = False
    num_shares: float = 1.0
    reconstruction_threshold: float = 0.6
    clipping_range: float = 8.0
    quantization_range: int = 4_194_304
    timeout: float = 120.0

    def __post_init__(self) -> None:
        if not self.clipping_range > 0:
            raise ConfigError("[secure_aggregation] clipping_range must be positive")
        if self.quantization_range < 2:
            raise ConfigError("[secure_aggregation] quantization_range must be at least 2")
        if not self.reconstruction_threshold > 0:
            raise ConfigError("[secure_aggregation] reconstruction_threshold must be positive")


@dataclass(frozen=True)
class StudyConfig:
    """Everything the server needs to run a study."""

    name: str = "study"
    task: Literal["binary", "survival"] = "binary"
    label_column: str = "label"
    time_column: str = "time"
    event_column: str = "event"
    min_cases: int = 10
    test_fraction: float = 0.3
    seed: int = 42
    feature_settings: dict[str, Any] = field(default_factory=dict)
    feature_columns: tuple[str, ...] = ()
    feature_families: tuple[str, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    secure_aggregation: SecureAggregationConfig = field(default_factory=SecureAggregationConfig)
    #: Cross-validation: with ``cv_folds > 1`` each site's held-out cases are those of fold
    #: ``cv_fold`` (0-based) of a stratified split seeded by ``seed``, instead of ``test_fraction``.
    cv_folds: int = 0
    cv_fold: int = 0

    def __post_init__(self) -> None:
        if self.task not in ("binary", "survival"):
            raise ConfigError(f"study task {self.task!r}: use binary or survival")
        if self.model.type not in MODELS:
            raise ConfigError(f"model type {self.model.type!r}: use one of {', '.join(MODELS)}")
        if (self.task == "survival") != (self.model.type == "cox"):
            raise ConfigError(
                "a survival study needs model type cox, and cox needs a survival study"
            )
        if self.training.strategy not in STRATEGIES:
            raise ConfigError(
                f"strategy {self.training.strategy!r}: use one of {', '.join(STRATEGIES)}"
            )
        if self.training.strategy == "exact" and self.model.type == "mlp":
            raise ConfigError("the exact (Newton-Raphson) mode fits logistic and Cox models only")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError("test_fraction must lie in [0, 1)")
        weighted_mean = ("fedavg", "fedprox")
        if self.secure_aggregation.enabled and self.training.strategy not in weighted_mean:
            raise ConfigError(
                f"secure aggregation releases only a weighted mean of the sites' updates, which "
                f"strategy {self.training.strategy!r} cannot use (it needs individual updates); "
                "choose fedavg or fedprox, or turn secure aggregation off "
                "([secure_aggregation] enabled = false, or --no-secure-aggregation)"
            )
        if self.privacy.mode == "sample" and self.model.type == "cox":
            raise ConfigError(
                "sample-level DP-SGD is not available for Cox models (risk sets make per-patient "
                "gradients dependent); use [privacy] mode = 'client' or 'none' for a survival study"
            )
        if self.privacy.mode == "client":
            if self.training.strategy not in weighted_mean:
                raise ConfigError(
                    "client-level DP adds noise to a weighted mean: use strategy fedavg or fedprox"
                )
            if self.secure_aggregation.enabled:
                raise ConfigError(
                    "client-level DP is not yet combined with secure aggregation (the noise would "
                    "be missing from the securely aggregated model): use [privacy] mode = "
                    "'sample', or turn secure aggregation off"
                )
        if self.cv_folds and not (self.cv_folds >= 2 and 0 <= self.cv_fold < self.cv_folds):
            raise ConfigError("cv_folds must be at least 2 and cv_fold lie in [0, cv_folds)")

    @property
    def outcome_columns(self) -> tuple[str, ...]:
        if self.task == "binary":
            return (self.label_column,)
        return (self.time_column, self.event_column)

    def model_settings(self) -> dict[str, object]:
        """What :func:`fedrad.learn.models.build_model` needs: identical at server and sites."""
        return {
            "model": self.model.type,
            "hidden": self.model.hidden,
            "dropout": self.model.dropout,
            "seed": self.seed,
            "dtype": "float64",
        }

    def replace(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, **changes)

    def with_training(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, training=dataclasses.replace(self.training, **changes))

    def with_privacy(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(self, privacy=dataclasses.replace(self.privacy, **changes))

    def with_secure_aggregation(self, **changes: Any) -> StudyConfig:
        return dataclasses.replace(
            self, secure_aggregation=dataclasses.replace(self.secure_aggregation, **changes)
        )

    @staticmethod
    def from_dict(data: dict[str, Any], where: str = "study") -> StudyConfig:
        data = dict(data)
        study = dict(data.pop("study", {}))
        features = dict(data.pop("features", {}))
        model = _take(dict(data.pop("model", {})), ModelConfig, f"{where} [model]")
        training = _take(dict(data.pop("training", {})), TrainingConfig, f"{where} [training]")
        privacy = _take(dict(data.pop("privacy", {})), PrivacyConfig, f"{where} [privacy]")
        secagg = _take(
            dict(data.pop("secure_aggregation", {})),
            SecureAggregationConfig,
            f"{where} [secure_aggregation]",
        )
        if data:
            raise ConfigError(f"{where}: unknown table(s) {', '.join(sorted(data))}")
        columns = tuple(features.pop("columns", ()))
        families = tuple(features.pop("families", ()))
        return _take(
            {
                **study,
                "feature_settings": features,
                "feature_columns": columns,
                "feature_families": families,
                "model": model,
                "training": training,
                "privacy": privacy,
                "secure_aggregation": secagg,
            },
            StudyConfig,
            where,
        )

    @staticmethod
    def from_file(path: str | Path) -> StudyConfig:
        path = Path(path)
        study = StudyConfig.from_dict(_read_toml(path, "study"), where=str(path))
        return study.with_inlined_params(path.parent)

    def with_inlined_params(self, base_dir: str | Path) -> StudyConfig:
        """The study with a ``[features] params`` file read here (relative to ``base_dir``) and
        its settings carried by content (``settings``): a site never opens a path a study names,
        and the study's hash covers what the file says, not its name."""
        if "params" not in self.feature_settings:
            return self
        from fedrad.errors import SettingsError
        from fedrad.radiomics.pyradiomics_params import print_notices
        from fedrad.radiomics.settings import Settings

        features = dict(self.feature_settings)
        params = Path(base_dir) / str(features.pop("params"))
        compat = features.pop("compat", None)
        if features:
            raise ConfigError(
                f"[features] params = {params.name!r} cannot be combined with other feature "
                f"settings ({', '.join(sorted(features))}); put them in the params file"
            )
        notices: list[str] = []
        try:
            settings = Settings.from_file(params, notices=notices, compat=compat)
        except SettingsError as exc:
            raise ConfigError(f"[features] params: {exc}") from None
        print_notices(notices)
        return dataclasses.replace(self, feature_settings={"settings": settings.to_dict()})

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["feature_columns"] = list(self.feature_columns)
        out["feature_families"] = list(self.feature_families)
        return out


@dataclass(frozen=True)
class SiteConfig:
    """A hospital's site folder, read from its ``site.toml``.

    Relative paths are relative to the folder holding ``site.toml``.
    """

    site_id: str
    root: Path
    manifest: Path | None = None
    feature_table: Path | None = None
    columns: dict[str, str] = field(default_factory=dict)
    epsilon_budget: float | None = None
    delta: float = 1e-5
    cache_dir: Path = Path(".fedrad/cache")
    log_dir: Path = Path(".fedrad/logs")
    label: int = 1
    keys_dir: Path = Path(".fedrad/keys")
    egress_log: Path | None = None
    ledger: Path | None = None
    #: The site's ``[policy]`` (:class:`fedrad.site.policy.SitePolicy`; None: the defaults).
    policy: Any = None

    @property
    def site_policy(self):
        """The site's privacy contract (the safe defaults when site.toml has no ``[policy]``)."""
        from fedrad.site.policy import SitePolicy

        return self.policy if self.policy is not None else SitePolicy()

    @property
    def egress_log_path(self) -> Path:
        """Every message the site sends is appended here (default ``log_dir/egress.jsonl``)."""
        return self.egress_log or self.log_dir / "egress.jsonl"

    @property
    def ledger_path(self) -> Path:
        """The site's persistent privacy ledger (default ``log_dir/privacy-ledger.json``)."""
        return self.ledger or self.log_dir / "privacy-ledger.json"

    def column(self, study_name: str) -> str:
        """The site's own name for a study column (``[columns]`` maps study name -> site name)."""
        return self.columns.get(study_name, study_name)

    @staticmethod
    def from_file(path: str | Path) -> SiteConfig:
        path = Path(path).resolve()
        data = _read_toml(path, "site")
        site = dict(data.get("site", {}))
        privacy = dict(data.get("privacy", {}))
        columns = {str(k): str(v) for k, v in dict(data.get("columns", {})).items()}
        unknown = sorted(set(data) - {"site", "privacy", "columns", "policy"})
        if unknown:
            raise ConfigError(f"{path}: unknown table(s) {', '.join(unknown)}")
        if "id" not in site:
            raise ConfigError(f"{path}: [site] needs an id")
        root = path.parent

        def _path(key: str) -> Path | None:
            value = site.get(key)
            return None if value in (None, "") else (root / str(value)).resolve()

        manifest, table = _path("manifest"), _path("feature_table")
        if manifest is None and table is None:
            raise ConfigError(f"{path}: [site] needs a manifest (images) or a feature_table")
        allowed = {
            "id",
            "manifest",
            "feature_table",
            "cache_dir",
            "log_dir",
            "label",
            "keys_dir",
            "egress_log",
        }
        unknown_privacy = sorted(set(privacy) - {"epsilon_budget", "delta", "ledger"})
        if unknown_privacy:
            raise ConfigError(f"{path}: [privacy] unknown key(s) {', '.join(unknown_privacy)}")
        extra = sorted(set(site) - allowed)
        if extra:
            raise ConfigError(f"{path}: [site] unknown key(s) {', '.join(extra)}")
        from fedrad.site.policy import SitePolicy

        budget = privacy.get("epsilon_budget")
        policy = SitePolicy.from_dict(
            dict(data.get("policy", {})),
            str(path),
            None if budget is None else float(budget),
        )
        return SiteConfig(
            policy=policy,
            site_id=str(site["id"]),
            root=root,
            manifest=manifest,
            feature_table=table,
            columns=columns,
            epsilon_budget=None
            if privacy.get("epsilon_budget") is None
            else float(privacy["epsilon_budget"]),
            delta=float(privacy.get("delta", 1e-5)),
            cache_dir=(root / str(site.get("cache_dir", ".fedrad/cache"))).resolve(),
            log_dir=(root / str(site.get("log_dir", ".fedrad/logs"))).resolve(),
            label=int(site.get("label", 1)),
            keys_dir=(root / str(site.get("keys_dir", ".fedrad/keys"))).resolve(),
            egress_log=_path("egress_log"),
            ledger=None if not privacy.get("ledger") else (root / str(privacy["ledger"])).resolve(),
        )

"""Typed run configuration: nested dataclasses, YAML + dotted CLI overrides.

Validated once at load: unknown keys and wrong types are errors, and every invariant says why it holds. The string
under each field is its documentation (``field_docs``; ``slas config show`` prints it beside the value).

Modules: ``model``, ``rollout`` (data, sample, reward, advantage), ``training`` (train, forward) and ``runtime``
(eval, monitor, run, dist) hold the sections, each with its own ``check``; ``root`` the whole ``Config`` and
``validate`` (each section's check, then the rules between sections); ``loader`` YAML and overrides (``load_config``);
``show`` the documented YAML (``describe``); ``totals`` what one iteration does (``derived``); ``errors``
ConfigError.
"""

from slas.config.errors import ConfigError
from slas.config.loader import INT_RANGE, MAX_DEPTH, MAX_VALUES, _set_dotted, from_dict, load_config
from slas.config.model import ModelConfig
from slas.config.rollout import AdvantageConfig, DataConfig, RewardConfig, SampleConfig
from slas.config.root import Config, validate
from slas.config.runtime import DistConfig, EvalConfig, MonitorConfig, RunConfig
from slas.config.show import describe, field_docs
from slas.config.totals import derived
from slas.config.training import ForwardConfig, TrainConfig

__all__ = [
    "INT_RANGE",
    "MAX_DEPTH",
    "MAX_VALUES",
    "AdvantageConfig",
    "Config",
    "ConfigError",
    "DataConfig",
    "DistConfig",
    "EvalConfig",
    "ForwardConfig",
    "ModelConfig",
    "MonitorConfig",
    "RewardConfig",
    "RunConfig",
    "SampleConfig",
    "TrainConfig",
    "_set_dotted",
    "derived",
    "describe",
    "field_docs",
    "from_dict",
    "load_config",
    "validate",
]

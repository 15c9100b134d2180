"""Snakemake's logger plugin `attnbench` (`--logger attnbench`, set in profiles/default): the live
view of attnbench.live in place of Snakemake's bookkeeping. Snakemake finds plugins by this
package's name; the logic lives in the attnbench package."""

from snakemake_interface_logger_plugins.base import LogHandlerBase
from snakemake_interface_logger_plugins.settings import LogHandlerSettingsBase

from attnbench.live import make_handler

LogHandler, LogHandlerSettings = make_handler(LogHandlerBase, LogHandlerSettingsBase)

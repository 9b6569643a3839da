"""The files a local Kafka writes into its home: ``server.properties`` from a
mapping, the log4j2 configurations, and files only their owner may read."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: Permissions of files holding passwords or private keys: owner read/write.
PRIVATE_FILE_MODE = 0o600

#: Permissions of folders holding such files: owner only.
PRIVATE_DIR_MODE = 0o700


def render_properties(properties: Mapping[str, str]) -> str:
    """A Java properties file, in the mapping's order."""
    lines = ["# Written by broker.localkafka on every start; edit the code, not this file."]
    lines += [f"{key}={value}" for key, value in properties.items()]
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner alone, whatever the umask
    and whatever mode an older copy had."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE_MODE)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), PRIVATE_FILE_MODE)
        f.write(text)


LOG4J2_PROPERTIES = """\
status = warn
appender.out.type = Console
appender.out.name = STDOUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.out.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = WARN
"""

TOOLS_LOG4J2_PROPERTIES = """\
status = warn
appender.err.type = Console
appender.err.name = STDERR
appender.err.target = SYSTEM_ERR
appender.err.layout.type = PatternLayout
appender.err.layout.pattern = %p %m%n
rootLogger.level = WARN
rootLogger.appenderRef.err.ref = STDERR
"""

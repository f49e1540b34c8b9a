"""The `wardfn` command line: one module a command family, registered on the root group here."""

from host.cli.audit import audit
from host.cli.bench import bench
from host.cli.calls import invoke, token
from host.cli.common import main
from host.cli.data import data
from host.cli.db import db
from host.cli.deploy import deploy
from host.cli.docs import docs
from host.cli.keys import keys
from host.cli.package import package
from host.cli.policy import policy
from host.cli.serve import build, serve

for command in (build, serve, token, invoke, data, db, keys, audit, package, deploy, policy, bench, docs):
    main.add_command(command)

__all__ = ["main"]

"""`veratur actions`: the rasa-sdk action server for dialogs.actions, on 127.0.0.1, in one process.

The catalogs and the case service are loaded before the port opens, so the first caller waits for nothing and
a broken catalog stops start-up with its file:line errors instead of failing calls.
"""
from __future__ import annotations

import argparse
import logging

from foundation.config import Settings
from foundation.logs import kv

log = logging.getLogger("dialogs.actions.server")
PACKAGE = "dialogs.actions"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=None, help="port (default dialogue.action_server_port)")
    parser.add_argument("--host", default="127.0.0.1")


def run(settings: Settings, args: argparse.Namespace) -> int:
    from rasa_sdk.endpoint import create_app
    from rasa_sdk.executor import ActionExecutor

    from dialogs.actions.catalog_route import add_catalog_route
    from dialogs.actions.resources import default_resources
    from dialogs.catalog import CatalogError

    try:
        resources = default_resources()
    except CatalogError as exc:
        print(f"veratur actions: the catalog has errors:\n{exc}")
        return 2
    executor = ActionExecutor()
    executor.register_package(PACKAGE)
    port = args.port or settings.dialogue.action_server_port
    app = create_app(executor, cors_origins=None)
    add_catalog_route(app, resources)      # the NLU's catalog entity extractor (dialogs/catalog_nlu) asks here
    log.info(kv(event="action_server_start", host=args.host, port=port, actions=len(executor.actions)))
    # single_process: no Sanic worker manager (it would re-import everything in a child and double the RAM)
    app.run(host=args.host, port=port, single_process=True, access_log=False, motd=False)
    return 0

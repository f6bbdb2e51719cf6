"""The Fivetran Connector SDK entry point. Everything lives in `src/syncflow`; this file only wires it up."""

import json
import sys
from pathlib import Path

# The deployed bundle has no install step: make `src/` importable from wherever this file is.
sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from fivetran_connector_sdk import Connector

from syncflow.fivetran import configuration_form, schema, update

connector = Connector(update=update, schema=schema, configuration_form=configuration_form)

if __name__ == "__main__":
    connector.debug(configuration=json.loads(Path("configuration.json").read_text(encoding="utf-8")))

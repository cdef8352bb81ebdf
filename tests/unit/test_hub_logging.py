"""The hub logs as "JupyterHub" at the configured level: INFO lines (requests,
spawns) reach the journal, not only warnings."""

from __future__ import annotations

import logging

from appliance.hub.app import ApplianceHub


def test_the_hub_logs_info_lines_under_its_usual_name(capsys):
    hub = ApplianceHub(log_level="INFO")
    hub.init_logging()
    assert hub.log.name == "JupyterHub"
    logging.getLogger("tornado.access").info("200 GET /hub/login (@192.0.2.7) 1.00ms")
    hub.log.debug("not at INFO")
    err = capsys.readouterr().err
    assert "200 GET /hub/login (@192.0.2.7)" in err and err.startswith("[I ")
    assert "not at INFO" not in err

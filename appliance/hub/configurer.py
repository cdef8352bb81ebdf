"""Applying the validated appliance configuration to JupyterHub's `c`.

config.py reads and checks appliance.toml; this module only translates it.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

from .. import protocol
from ..config import Config, sso_in_use
from ..groups import ADMINS_GROUP, STATE_DIR, USERS_GROUP
from ..net import http_url
from ..state import APPLCTL_SERVICE, APPLCTL_TOKEN, COOKIE_SECRET, proxy_token, read_secret
from .gpu_report import my_gpus
from .stop_reasons import CULLER, RECLAIMER


def apply(c, cfg: Config, state_dir: str = STATE_DIR) -> None:
    hub, spawner, culler, gpu = cfg["hub"], cfg["spawner"], cfg["culler"], cfg["gpu"]

    c.JupyterHub.log_level = hub["log_level"]
    c.JupyterHub.bind_url = http_url(hub["bind_address"], hub["port"])
    c.JupyterHub.hub_bind_url = http_url("127.0.0.1", hub["hub_port"])
    c.JupyterHub.db_url = f"sqlite:///{state_dir}/jupyterhub.sqlite"
    c.JupyterHub.cookie_secret_file = f"{state_dir}/{COOKIE_SECRET}"
    # Restarting the hub must leave servers and the proxy alone.
    c.JupyterHub.cleanup_servers = False
    c.JupyterHub.cleanup_proxy = False
    # Every request reaches the hub through configurable-http-proxy on this machine,
    # which appends the address it saw to X-Forwarded-For; with nginx or Apache in
    # front (applctl proxy setup) that is 127.0.0.1 too. Skipping loopback entries
    # gives the real client in the hub's logs, and a client's forged entries stay
    # to the left of the address the proxy saw.
    c.JupyterHub.trusted_downstream_ips = ["127.0.0.1", "::1"]

    c.JupyterHub.proxy_class = "appliance.hub.proxy.ApplianceProxy"
    c.ConfigurableHTTPProxy.api_url = http_url("127.0.0.1", hub["proxy_api_port"])
    c.ConfigurableHTTPProxy.auth_token = proxy_token(state_dir)

    c.JupyterHub.authenticator_class = "appliance.hub.authenticator.ApplianceAuthenticator"
    # Passwords (PAM auth and account) are checked by jupyterhub-pam, not in the hub.
    c.PAMAuthenticator.open_sessions = False  # needs root; the unit is the session
    c.LocalAuthenticator.create_system_users = False
    c.LocalAuthenticator.allowed_groups = {USERS_GROUP}
    c.LocalAuthenticator.admin_groups = {ADMINS_GROUP}
    # Group membership is the only gate: leaving the group revokes access.
    c.Authenticator.allow_existing_users = False

    if hub["mode"] == "ephemeral":
        apply_ephemeral(c, cfg["ephemeral"])
        culler = dict(culler, timeout=cfg["ephemeral"]["idle_timeout"], max_age=cfg["ephemeral"]["max_age"],
                      enabled=True)
    elif sso_in_use(cfg):
        apply_sso(c, cfg)

    c.JupyterHub.spawner_class = "appliance.hub.spawner.ApplianceSpawner"
    # The home page says why a server stopped and what the user's GPUs are doing; the
    # navigation bar links admins to the GPU dashboard (templates/ extend JupyterHub's).
    c.JupyterHub.template_paths = [str(Path(__file__).parent / "templates")]
    c.JupyterHub.template_vars = {"appliance_my_gpus": my_gpus, "appliance_dashboard": cfg["dashboard"]["enabled"]}
    c.ApplianceHub.gpu_report_interval = gpu["sample_interval"]
    c.ApplianceHub.metrics_access = cfg["metrics"]["access"]
    c.ApplianceHub.metrics_port = hub["metrics_port"]
    c.Spawner.default_url = spawner["default_url"]
    # A spawn may wait in the GPU queue before its server starts.
    c.Spawner.start_timeout = spawner["start_timeout"] + (gpu["queue_timeout"] if gpu["queue"] else 0)
    c.Spawner.http_timeout = spawner["http_timeout"]
    c.Spawner.env_keep = list(protocol.ENV_KEEP)
    c.Spawner.environment = dict(spawner["environment"])
    c.ApplianceSpawner.gpu_config = cfg["gpu"]
    c.ApplianceSpawner.profiles = cfg["profiles"]
    c.ApplianceSpawner.culler = culler
    c.ApplianceSpawner.limits_config = cfg["limits"]  # the daemon applies them; the form shows them
    c.ApplianceSpawner.sso_groups = sso_in_use(cfg)

    # The appliance's own services and roles; jupyterhub_config.d files may append.
    c.JupyterHub.services = []
    c.JupyterHub.load_roles = []
    register_culler_service(c, culler)
    register_reclaimer_service(c, gpu)
    register_dashboard_service(c, cfg)
    register_applctl_service(c, state_dir)


def apply_ephemeral(c, eph: dict) -> None:
    """Workshop mode (visitors.py): every visitor a new user at once, no form."""
    c.JupyterHub.authenticator_class = "appliance.hub.visitors.VisitorAuthenticator"
    c.VisitorAuthenticator.password_file = eph["password_file"]
    c.VisitorAuthenticator.max_visitors = eph["max_visitors"]
    c.ApplianceSpawner.options_form = ""  # a visitor's server starts as soon as they arrive
    c.JupyterHub.shutdown_on_logout = True  # logging out ends the server, and so everything of it
    c.ApplianceSpawner.ephemeral_mode = eph
    c.ApplianceHub.ephemeral_mode = eph


def apply_sso(c, cfg: Config) -> None:
    """Single sign-on instead of PAM (sso.py). Imported only then: a PAM hub never
    loads oauthenticator. Without the provider's endpoints nobody could log in, so
    the hub exits saying why, and systemd starts it again (a provider that was
    unreachable for a moment, e.g. at boot, is found on a later try)."""
    from . import sso

    try:
        sso.apply(c, cfg)
    except sso.SSOError as e:
        sys.exit(f"jupyterhub: single sign-on ([auth] type = \"oidc\") cannot work: {e}")


def activity_interval(culler: dict) -> int:
    """Seconds between activity reports (the proxy's to the hub, each server's to the
    hub). The culler sees activity at most this late, so a server could be taken
    for idle this much early: a quarter of the timeout keeps that small, and short
    timeouts (tests, workshops) work. JupyterHub's default, 300 s, is the most."""
    return max(10, min(300, culler["timeout"] // 4))


def own_service(c, name: str, **spec) -> None:
    """One of the appliance's own services, which run inside the hub's process
    (services.py), not as a child interpreter each. Each its own API token, new at
    every start (the hub deletes the old ones at start: revoke.py), so each acts
    only with its own role."""
    c.JupyterHub.services.append({"name": name, "api_token": secrets.token_urlsafe(32), **spec})


def register_culler_service(c, culler: dict) -> None:
    """jupyterhub-idle-culler with the [culler] settings, allowed only to list
    users and servers, read their activity, and stop servers."""
    interval = activity_interval(culler)
    c.JupyterHub.last_activity_interval = interval
    c.ApplianceSpawner.activity_interval = interval
    if not culler["enabled"]:
        return
    own_service(c, CULLER)
    c.ApplianceHub.culler = {k: culler[k] for k in ("timeout", "every", "max_age", "concurrency", "cull_admin_users")}
    c.JupyterHub.load_roles.append({
        "name": CULLER,
        "scopes": ["list:users", "read:users:activity", "read:servers", "delete:servers"],
        "services": [CULLER],
    })


def register_reclaimer_service(c, gpu: dict) -> None:
    """The gpu-reclaimer (reclaimer.py): it may only stop servers."""
    if gpu["reclaim"] == "never":
        return
    own_service(c, RECLAIMER)
    c.ApplianceHub.reclaim_interval = gpu["sample_interval"]
    c.JupyterHub.load_roles.append({
        "name": RECLAIMER,
        "scopes": ["delete:servers"],
        "services": [RECLAIMER],
    })


DASHBOARD_SERVICE = "gpus"


def register_dashboard_service(c, cfg: Config) -> None:
    """The GPU dashboard (dashboard.py) at /services/gpus/: JupyterHub OAuth, hub
    admins only. It needs no scope of the hub's API: it asks the daemon, as the hub's
    uid. Not in the Services menu: admins get their own link (templates/page.html)."""
    if not cfg["dashboard"]["enabled"]:
        return
    own_service(c, DASHBOARD_SERVICE, url=http_url("127.0.0.1", cfg["hub"]["dashboard_port"]),
                oauth_no_confirm=True, display=False)
    c.ApplianceHub.dashboard_interval = cfg["gpu"]["sample_interval"]


# --- applctl's access to the hub's REST API ---------------------------------------



def register_applctl_service(c, state_dir: str = STATE_DIR) -> None:
    """The hub service applctl acts as, with the root-only token ensure_secrets made.

    An admin service: JupyterHub lets only an admin grant or revoke a user's admin
    flag, and applctl's other calls (stop servers, delete users, issue tokens)
    need admin:users, servers and tokens anyway. Only root and the hub can read
    the token. Appended, so the other services stay.
    """
    path = Path(state_dir) / APPLCTL_TOKEN
    try:
        token = read_secret(path)
    except OSError as e:
        # The hub still runs; only applctl's hub-side actions are unavailable.
        print(f"jupyterhub: no applctl service: cannot read {path} ({e.strerror}); "
              "reinstalling the package creates it", file=sys.stderr)
        return
    c.JupyterHub.services.append({"name": APPLCTL_SERVICE, "api_token": token, "admin": True})

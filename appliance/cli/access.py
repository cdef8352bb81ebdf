"""Who has access: adduser, deluser, users, admin add|remove.

The groups are the truth (the hub logs in members of jupyterhub-users and makes
members of jupyterhub-admins admins); the hub's own records are brought in line
at once where the hub answers, so a change never waits for the next login.
"""

from __future__ import annotations

import grp
import pwd

import click

from .. import config, config_edit, limits, users
from ..groups import ADMINS_GROUP, USERS_GROUP
from . import daemon_calls as daemon
from .common import CREATED_MARK, account, check_name, config_path, has_access, load_config, members, refuse_privileged
from .completion import access_names, local_accounts
from .host import run
from .hub_api import Hub, HubDown, HubError
from .output import Failure, ago, emit, example, json_option, need_root, note, table
from .servers import stop_server
from .token import revoke_issued_by


def secondary_members(group: str) -> set[str]:
    return set(grp.getgrnam(group).gr_mem)


def sync_admin(hub: Hub, name: str, admin: bool) -> bool:
    """The hub's admin flag, now rather than at the next login; False if not possible."""
    try:
        return hub.set_admin(name, admin)
    except (HubDown, HubError) as e:
        note(f"the hub's record of {name} is updated at their next login ({e})")
        return False


def gpu_quota_key(name: str) -> str:
    return f"gpu.quota_users.{name}"


@click.command()
@click.argument("name", shell_complete=local_accounts)
@click.option("--admin", is_flag=True, help=f"also make NAME a hub admin ({ADMINS_GROUP})")
@click.option("--create", is_flag=True, help="create the Unix account (with a home) if it does not exist")
@click.option("--gpus", type=click.IntRange(min=0), metavar="N",
              help="how many GPUs NAME may hold at once (gpu.quota_users.NAME in appliance.toml)")
@json_option
@example("sudo applctl adduser alice\nsudo applctl adduser --create --admin --gpus 2 bob")
def adduser(name: str, admin: bool, create: bool, gpus: int | None, as_json: bool) -> None:
    """Give the local account NAME access to JupyterHub.

    Idempotent: access NAME already has is left as it is.
    """
    check_name(name)
    need_root("adduser")
    cfg = load_config()
    min_uid = cfg["daemon"]["min_uid"]
    if gpus is not None:
        try:  # the same check the write makes, before anything changes
            config_edit.set_key(config_path(), gpu_quota_key(name), str(gpus), dry_run=True)
        except config_edit.EditError as e:
            raise Failure(f"--gpus {gpus}: {e}") from None
    created = False
    try:
        pwd.getpwnam(name)
        refuse_privileged(name, cfg, "give access to")
    except KeyError:
        if not create:
            raise Failure(f"there is no user {name} on this machine; add --create to create the account") from None
        run(["useradd", "--create-home", "--shell", "/bin/bash", "--comment", CREATED_MARK, name],
            what=f"creating the account {name}")
        created = True
    account(name, min_uid)
    added = []
    for group in [USERS_GROUP] + ([ADMINS_GROUP] if admin else []):
        if name not in members(group):
            run(["gpasswd", "-a", name, group], what=f"adding {name} to {group}")
            added.append(group)
    quota_changed = False
    if gpus is not None:
        quota_changed = config_edit.set_key(config_path(), gpu_quota_key(name), str(gpus))["changed"]
    if ADMINS_GROUP in added:
        sync_admin(Hub(load_config()), name, True)

    lines = [f"{name} can now log in to JupyterHub" + (" as an admin" if admin else "")]
    if not added and not quota_changed:
        lines = [f"{name} already had this access; nothing changed"]
    if created and not config.sso_in_use(cfg):  # under single sign-on the provider checks who it is
        lines.append(f"created account {name}; set its password with: passwd {name}")
    elif created:
        lines.append(f"created account {name}")
    if quota_changed:
        lines.append(f"{name} may hold {gpus} GPU{'s' if gpus != 1 else ''} at once; "
                     "apply it with: sudo applctl reload")
    if config.sso_in_use(cfg):
        lines.append(sso_meaning(name, cfg))
    emit(as_json, {"user": name, "created": created, "added_to": added, "gpus": gpus}, "\n".join(lines))


def sso_meaning(name: str, cfg) -> str:
    """What adduser means under single sign-on (accounts = "existing"): membership of
    jupyterhub-users is what allows the local account; the provider proves who it is."""
    oidc = cfg["oidc"]
    groups = (f", and be in one of oidc.allowed_groups ({', '.join(oidc['allowed_groups'])}) there"
              if oidc["allowed_groups"] else "")
    return (f"single sign-on is on: {name} logs in at {oidc['issuer']}, whose {oidc['username_claim']} claim must "
            f"be {name}{groups}; {USERS_GROUP} membership is what allows the local account {name}")


@click.command()
@click.argument("name", shell_complete=access_names)
@click.option("--keep-home", is_flag=True,
              help="when the account is deleted (only accounts adduser --create made), keep its home")
@json_option
@example("sudo applctl deluser alice")
def deluser(name: str, keep_home: bool, as_json: bool) -> None:
    """Take JupyterHub access away from NAME: stop their server, end their login
    sessions, remove them from the groups.

    An account that `adduser --create` made is deleted too, with its home unless
    --keep-home. Any other account and its files stay.
    """
    check_name(name)
    need_root("deluser")
    pw = account(name)
    hub = Hub(load_config())
    was_member = has_access(name)
    stopped = name in daemon.servers()
    if stopped:
        try:
            stop_server(name, hub)
        except Failure as e:
            raise Failure(f"could not stop {name}'s server, access unchanged: {e.message}") from None
    removed = []
    for group in (USERS_GROUP, ADMINS_GROUP):
        if name in secondary_members(group):
            run(["gpasswd", "-d", name, group], what=f"removing {name} from {group}")
            removed.append(group)
    for group in (USERS_GROUP, ADMINS_GROUP):
        if name in members(group):
            note(f"{group} is {name}'s primary group: change it with usermod -g to end their access")
    hub_deleted, issued = False, 0
    try:
        hub_deleted = hub.delete_user(name)  # ends their login sessions and API tokens
        # as admin remove does: what they issued through sudo applctl ends with their access
        issued = revoke_issued_by(hub, name, pw.pw_uid)
    except (HubDown, HubError) as e:
        note(f"the hub still has a record of {name} or of tokens they issued ({e}); these end when "
             f"it is deleted: run applctl deluser {name} again once the hub runs")
    quota_removed = _remove_gpu_quota(name)
    account_deleted = pw.pw_gecos == CREATED_MARK
    if account_deleted:
        run(["userdel", *([] if keep_home else ["--remove"]), name], what=f"deleting the account {name}")

    lines = [f"{name} no longer has access" + (" (server stopped)" if stopped else "")]
    if not (was_member or stopped or hub_deleted or account_deleted or quota_removed or issued):
        lines = [f"{name} had no access; nothing changed"]
    if issued:
        lines.append(f"revoked {issued} token(s) {name} issued through sudo applctl")
    if account_deleted:
        lines.append(f"deleted the account {name}" + (f"; kept its home {pw.pw_dir}" if keep_home
                                                      else f" and its home {pw.pw_dir}"))
    if quota_removed:
        lines.append(f"removed {gpu_quota_key(name)} from appliance.toml")
    emit(as_json, {"user": name, "stopped": stopped, "removed_from": removed, "hub_record_deleted": hub_deleted,
                   "gpu_quota_removed": quota_removed, "issued_tokens_revoked": issued,
                   "account_deleted": account_deleted,
                   "home_deleted": account_deleted and not keep_home},
         "\n".join(lines))


def _remove_gpu_quota(name: str) -> bool:
    """adduser --gpus wrote it; without access it means nothing and would linger."""
    try:
        return config_edit.unset_key(config_path(), gpu_quota_key(name))["changed"]
    except config_edit.EditError as e:
        note(f"{gpu_quota_key(name)} stays in appliance.toml: {e}")
        return False


@click.command(name="users")
@json_option
@example("sudo applctl users\nsudo applctl users --json")
def list_users(as_json: bool) -> None:
    """Who has access: admin or not, server state, GPUs held, memory and CPU limits
    (from [limits] of appliance.toml), last activity."""
    need_root("users")
    running = daemon.servers()
    admins = members(ADMINS_GROUP)
    try:
        seen = Hub(load_config()).users()
    except (HubDown, HubError) as e:
        note(f"last activity unknown: {e}")
        seen = {}
    index = daemon.gpu_labels(daemon.gpus()) if any(s.get("gpus") for s in running.values()) else {}
    lim = load_config()["limits"]
    rows = [{"user": n, "admin": n in admins, "server": running.get(n, {}).get("state", "stopped"),
             "gpus": running.get(n, {}).get("gpus", []), "limits": user_limits(lim, n),
             "last_activity": seen.get(n, {}).get("last_activity")}
            for n in sorted(members(USERS_GROUP) | admins)]
    human = table(["USER", "ADMIN", "SERVER", "GPUS", "LIMITS", "LAST ACTIVITY"],
                  [[r["user"], "yes" if r["admin"] else "no", r["server"], daemon.gpu_list(r["gpus"], index),
                    limits.short(r["limits"]["mem"], r["limits"]["cpu"]), ago(r["last_activity"])] for r in rows],
                  painted=(2,))
    emit(as_json, rows, human if rows else "nobody has access yet: applctl adduser NAME")


def user_limits(lim: dict, name: str) -> dict:
    """What [limits] gives NAME's server (without a profile): {mem, cpu, tasks}."""
    try:
        groups = users.groups_of(name)
    except KeyError:
        groups = []
    got = limits.for_user(lim, name, groups)
    return {"mem": got.mem, "cpu": got.cpu, "tasks": got.tasks}


@click.group()
def admin() -> None:
    """Hub admins: members of jupyterhub-admins (they may also run sudo applctl).

    \b
    Example:
      sudo applctl admin add alice
    """


@admin.command(name="add")
@click.argument("name", shell_complete=access_names)
@json_option
@example("sudo applctl admin add alice")
def admin_add(name: str, as_json: bool) -> None:
    """Make NAME, who already has access, a hub admin (and allowed to sudo applctl)."""
    _set_admin(name, True, as_json)


@admin.command(name="remove")
@click.argument("name", shell_complete=access_names)
@json_option
@example("sudo applctl admin remove alice")
def admin_remove(name: str, as_json: bool) -> None:
    """Make NAME an ordinary user again; they keep their access."""
    _set_admin(name, False, as_json)


def _set_admin(name: str, make_admin: bool, as_json: bool) -> None:
    check_name(name)
    need_root("admin")
    pw = account(name)
    is_admin = name in members(ADMINS_GROUP)
    if make_admin and name not in members(USERS_GROUP):
        raise Failure(f"{name} has no access to JupyterHub; give it with admin rights: "
                      f"applctl adduser --admin {name}")
    if make_admin and not is_admin:  # rights gained since adduser (sudo, polkit, a group) count too
        refuse_privileged(name, load_config(), "make an admin of")
    if not make_admin and is_admin and name not in secondary_members(ADMINS_GROUP):
        raise Failure(f"{ADMINS_GROUP} is {name}'s primary group; change it with usermod -g first")
    changed = is_admin != make_admin
    if changed:
        run(["gpasswd", "-a" if make_admin else "-d", name, ADMINS_GROUP],
            what=f"{'adding' if make_admin else 'removing'} {name} {'to' if make_admin else 'from'} {ADMINS_GROUP}")
    # Also when nothing changed here: the hub's flag may be stale.
    hub = Hub(load_config())
    hub_updated = sync_admin(hub, name, make_admin)
    revoked = issued = 0
    if not make_admin:
        # An admin's powers end with the role: their own tokens (issued while an
        # admin), and every token they issued for anyone through sudo applctl
        # (recorded in its note), also when the hub has no record of them.
        try:
            if hub_updated:
                revoked = hub.revoke_tokens(name)
            issued = revoke_issued_by(hub, name, pw.pw_uid)
        except (HubDown, HubError) as e:
            note(f"{name}'s tokens, and those they issued, are revoked when the hub next starts ({e})")
    if changed:
        human = f"{name} is {'now' if make_admin else 'no longer'} a hub admin"
    elif revoked or issued:
        human = f"{name} is not a hub admin"
    else:
        human = f"{name} {'is already' if make_admin else 'is not'} a hub admin; nothing changed"
    if not make_admin and (changed or revoked or issued):
        human += f"; revoked {revoked} API token(s) of theirs and {issued} they issued through sudo applctl"
    emit(as_json, {"user": name, "admin": make_admin, "changed": changed, "hub_updated": hub_updated,
                   "tokens_revoked": revoked, "issued_tokens_revoked": issued}, human)

"""At every hub start: take back what the groups and token files no longer grant.

Removing someone from jupyterhub-admins with plain gpasswd does not touch the hub's
database, where they stay an admin with admin tokens until they log in again. And
JupyterHub keeps a service's old configured token valid beside a new one. So at
start (ApplianceHub.init_users, before roles and service tokens are loaded), admins
who are no longer in the group are demoted and their tokens deleted, and every
token of the applctl service but the one in its current token file is deleted.

Tokens that `sudo applctl token` issued carry their issuer in their note
(token_notes.py); those whose issuer can no longer run sudo applctl (in none of
jupyterhub-admins and the groups that grant all of sudo) are deleted too, as
`applctl admin remove` does at once: a token must not outlive its issuer's role.
"""

from __future__ import annotations

from .. import users
from ..groups import ADMINS_GROUP
from ..state import APPLCTL_SERVICE
from ..token_notes import issuer_of

# The groups whose members may run `sudo applctl`: the appliance's own, and Debian's
# and Arch's groups of full sudo (whose tokens stay: they keep that power anyway).
SUDO_GROUPS = (ADMINS_GROUP, "sudo", "wheel", "admin")
def may_sudo_applctl(name: str) -> bool:
    return any(users.is_member(name, g) for g in SUDO_GROUPS)


def revoke(db, service_tokens: dict[str, str | None]) -> list[str]:
    """Through JupyterHub's own ORM session; what was taken back, in words.
    `service_tokens`: each own service's current token (None: unknown, keep all)."""
    from jupyterhub import orm, roles

    done = []
    for user in db.query(orm.User).filter(orm.User.admin == True):  # noqa: E712 (SQL)
        if users.is_member(user.name, ADMINS_GROUP):
            continue
        n = len(user.api_tokens)
        for token in list(user.api_tokens):
            db.delete(token)
        user.admin = False
        roles.strip_role(db, user, "admin", commit=False)
        done.append(f"{user.name} is no longer in {ADMINS_GROUP}: admin rights and {n} token(s) revoked")
    issued = db.query(orm.APIToken).filter(orm.APIToken.note.like("%through sudo applctl"))
    by_issuer: dict[str, int] = {}
    for token in list(issued):
        who = issuer_of(token.note)
        if who and not may_sudo_applctl(who[0]):
            by_issuer[who[0]] = by_issuer.get(who[0], 0) + 1
            db.delete(token)
    for name, n in sorted(by_issuer.items()):
        done.append(f"{name} may no longer run sudo applctl: {n} token(s) they issued revoked")
    for service, service_token in service_tokens.items():
        svc = orm.Service.find(db, service)
        if svc is None or not service_token:
            continue
        current = orm.APIToken.find(db, service_token, kind="service")
        stale = [t for t in svc.api_tokens if current is None or t.id != current.id]
        for token in stale:
            db.delete(token)
        if stale and service == APPLCTL_SERVICE:  # the others' are replaced at every start
            done.append(f"{len(stale)} old token(s) of the {service} service deleted")
    db.commit()
    return done

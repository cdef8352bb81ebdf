"""At every hub start: take back what the groups and token files no longer grant.

Removing someone from jupyterhub-admins with plain gpasswd does not touch the hub's
database, where they stay an admin with admin tokens until they log in again. And
JupyterHub keeps a service's old configured token valid beside a new one. So at
start (ApplianceHub.init_users, before roles and service tokens are loaded), admins
who are no longer in the group are demoted and their tokens deleted, and every
token of the applctl service but the one in its current token file is deleted.
"""

from __future__ import annotations

from .. import users
from ..groups import ADMINS_GROUP


def revoke(db, service: str, service_token: str | None) -> list[str]:
    """Through JupyterHub's own ORM session; what was taken back, in words."""
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
    svc = orm.Service.find(db, service)
    if svc is not None and service_token:
        current = orm.APIToken.find(db, service_token, kind="service")
        stale = [t for t in svc.api_tokens if current is None or t.id != current.id]
        for token in stale:
            db.delete(token)
        if stale:
            done.append(f"{len(stale)} old token(s) of the {service} service deleted")
    db.commit()
    return done

"""At hub start, admins no longer in jupyterhub-admins lose admin and tokens, and the
appliance's own services keep only their current tokens (a real JupyterHub database)."""

from jupyterhub import orm, roles

from appliance import users
from appliance.hub import revoke


def test_stale_admins_and_old_service_tokens_are_revoked(tmp_path, monkeypatch):
    db = orm.new_session_factory(f"sqlite:///{tmp_path}/hub.sqlite")()
    for r in roles.get_default_roles():
        roles.create_role(db, r)
    db.add(orm.OAuthClient(identifier="jupyterhub"))  # JupyterHub's own client, as init_oauth makes it
    kept, gone, plain = (orm.User(name=n, admin=n != "carol") for n in ("alice", "bob", "carol"))
    db.add_all([kept, gone, plain])
    svc = orm.Service(name="applctl")
    culler = orm.Service(name="idle-culler")
    db.add_all([svc, culler])
    db.commit()
    for u in (kept, gone):
        roles.grant_role(db, u, "admin")
    gone_token = gone.new_api_token(note="script")
    kept_token = kept.new_api_token(note="script")
    plain_token = plain.new_api_token(note="script")
    svc.new_api_token("old-service-token-" + "x" * 40, note="from config", generated=False)
    svc.new_api_token("new-service-token-" + "y" * 40, note="from config", generated=False)
    # The culler's token of the last start: a new one is made at every start.
    culler.new_api_token("last-culler-token-" + "z" * 40, note="from config", generated=False)
    monkeypatch.setattr(users, "is_member", lambda name, group: name == "alice")

    current = {"applctl": "new-service-token-" + "y" * 40, "idle-culler": "this-culler-token-" + "w" * 40}
    said = revoke.revoke(db, current)

    assert said == ["bob is no longer in jupyterhub-admins: admin rights and 1 token(s) revoked",
                    "1 old token(s) of the applctl service deleted"]
    assert orm.APIToken.find(db, gone_token) is None
    assert orm.APIToken.find(db, kept_token) is not None and orm.APIToken.find(db, plain_token) is not None
    assert not orm.User.find(db, "bob").admin and "admin" not in [r.name for r in orm.User.find(db, "bob").roles]
    assert orm.User.find(db, "alice").admin
    assert orm.APIToken.find(db, "old-service-token-" + "x" * 40) is None
    assert orm.APIToken.find(db, "new-service-token-" + "y" * 40) is not None
    assert orm.APIToken.find(db, "last-culler-token-" + "z" * 40) is None
    assert revoke.revoke(db, current) == []  # nothing left to take

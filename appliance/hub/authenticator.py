"""PAM login limited to the jupyterhub-users group, with a plain refusal message."""

from jupyterhub.auth import PAMAuthenticator
from tornado import web


class ApplianceAuthenticator(PAMAuthenticator):
    def check_allowed(self, username, authentication=None):
        if super().check_allowed(username, authentication):
            return True
        if authentication is not None:
            # The password was right (PAM passed), so saying why is no leak; the
            # login form shows this message instead of "invalid password".
            raise web.HTTPError(
                403,
                f"{username} has not been given access to this JupyterHub. "
                f"An administrator can grant it with: sudo applctl adduser {username}",
            )
        return False

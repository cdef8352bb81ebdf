"""The hub's view of the separately run configurable-http-proxy.

The proxy is its own unit (jupyterhub-proxy.service), so the hub neither starts nor
stops it. CHP keeps routes in memory only: after the proxy restarts, this class puts
them back within `route_check_interval` seconds, without waiting for a hub restart.
"""

from jupyterhub.proxy import ConfigurableHTTPProxy
from tornado.ioloop import PeriodicCallback
from traitlets import Bool, Integer


class ApplianceProxy(ConfigurableHTTPProxy):
    should_start = Bool(False)
    route_check_interval = Integer(10, config=True, help="seconds between route checks")

    _route_checker = None

    async def get_all_routes(self):
        # The app calls this once at startup, with the event loop running: the
        # first place a periodic callback can be started from.
        if self._route_checker is None and self.route_check_interval > 0:
            self._route_checker = PeriodicCallback(self._check_routes, self.route_check_interval * 1000)
            self._route_checker.start()
        return await super().get_all_routes()

    async def _check_routes(self):
        try:
            await self.check_routes(self.app.users, self.app._service_map)
        except Exception as e:  # proxy down or restarting: try again next round
            self.log.warning("Proxy route check failed (is jupyterhub-proxy running?): %s", e)

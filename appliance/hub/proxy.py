"""The hub's view of the separately run configurable-http-proxy.

The proxy is its own unit (jupyterhub-proxy.service), so the hub neither starts nor
stops it. The proxy starts again with the routes it had (route_store.js); this
class's check every `route_check_interval` seconds puts back any it lost all the
same (a proxy of a release before that, a routes file it could not read).
Every route the hub did not make goes at the same check: JupyterHub's own check
leaves alone a route without its marker, so one added with a stolen proxy token
(say /hub/login, to a relay that records passwords) would have stayed for good.
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
        resp = await self.api_request("")
        routes = {}
        for chp_path, data in (await resp.json()).items():
            routespec = self._routespec_from_chp_path(chp_path)
            # A route without JupyterHub's marker is taken for one of the hub's: the
            # route check then deletes it as stale, or corrects its target.
            routes[routespec] = self._reformat_routespec(routespec, {"jupyterhub": True, **data})
        return routes

    async def _check_routes(self):
        try:
            await self.check_routes(self.app.users, self.app._service_map)
        except Exception as e:  # proxy down or restarting: try again next round
            self.log.warning("Proxy route check failed (is jupyterhub-proxy running?): %s", e)

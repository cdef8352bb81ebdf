// Preloaded into configurable-http-proxy by appliance/chp.py (NODE_OPTIONS=--require):
// CHP's servers listen on the sockets systemd holds for jupyterhub-proxy
// (held_ports.py) instead of binding their ports anew, so that no other local user
// can take a port while the proxy restarts. APPLIANCE_LISTEN_FDS maps "port=fd,...".
'use strict';
const net = require('net');

const held = new Map();
for (const pair of (process.env.APPLIANCE_LISTEN_FDS || '').split(',').filter(Boolean)) {
  const [port, fd] = pair.split('=').map(Number);
  held.set(port, fd);
}
delete process.env.APPLIANCE_LISTEN_FDS;

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (port, ...rest) {
  const wanted = typeof port === 'string' && /^\d+$/.test(port) ? Number(port) : port;
  if (typeof wanted === 'number' && held.has(wanted)) {
    const fd = held.get(wanted);
    held.delete(wanted);
    const callback = rest.find((arg) => typeof arg === 'function');
    return listen.call(this, { fd }, callback);
  }
  if (typeof wanted === 'number' && process.env.APPLIANCE_REQUIRE_HELD === '1') {
    // Fail closed: binding a port ourselves would reopen the gap at every restart.
    throw new Error(`port ${wanted} is not held by systemd for this proxy`);
  }
  return listen.call(this, port, ...rest);
};

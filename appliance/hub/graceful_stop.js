// Preloaded into configurable-http-proxy by appliance/chp.py (NODE_OPTIONS=--require),
// beside listen_fds.js. CHP exits at once on SIGTERM, dropping every request it is
// still proxying: a restart or an upgrade then cut off whoever was loading a page.
// Here it stops as a web server should: it stops accepting (connections that arrive
// meanwhile wait in the socket systemd holds, for the next proxy), closes its idle
// keep-alive connections, and exits once the requests it has begun are answered,
// or after DRAIN_MS. WebSockets are cut, as before; JupyterLab reconnects them.
'use strict';
const http = require('http');
const https = require('https');

const DRAIN_MS = 3000;
const servers = [];
const inflight = new Set();
let stopping = false;

function exitIfDrained() {
  if (stopping && inflight.size === 0) process.exit(2); // CHP's own exit status for SIGTERM
}

for (const mod of [http, https]) {
  const create = mod.createServer;
  mod.createServer = function (...args) {
    const server = create.apply(this, args);
    servers.push(server);
    server.on('request', (req, res) => {
      inflight.add(res);
      res.on('close', () => {
        inflight.delete(res);
        exitIfDrained();
      });
    });
    return server;
  };
}

function stop() {
  if (stopping) return;
  stopping = true;
  for (const server of servers) {
    server.close();
    server.closeIdleConnections();
  }
  setTimeout(() => process.exit(2), DRAIN_MS).unref();
  exitIfDrained();
}

// CHP's main module, which runs after this preload, registers its exit-at-once
// handler: replace it once that has run.
setImmediate(() => {
  process.removeAllListeners('SIGTERM');
  process.on('SIGTERM', stop);
});

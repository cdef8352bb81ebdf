// configurable-http-proxy's route table (--storage-backend, set by appliance/chp.py),
// kept in a file as well as in memory, so that a restarted proxy starts with the
// routes it had: users' servers answer through it from its first request, instead
// of after the hub's next route check (up to 10 s). The file is in the proxy's own
// runtime directory (mode 0700, its dynamic user's; gone at reboot, when servers
// are gone too), named by APPLIANCE_ROUTES_FILE.
//
// Only routes are kept, not each request's last_activity: that changes on every
// request, and the hub takes the newest of what it hears anyway.
'use strict';
const fs = require('fs');
// CHP's own in-memory store, found beside the running CHP (Debian and Arch install
// it in different places).
const { MemoryStore } = require.main.require('../lib/store.js');

const FILE = process.env.APPLIANCE_ROUTES_FILE;
delete process.env.APPLIANCE_ROUTES_FILE;

function readRoutes(log) {
  let text;
  try {
    text = fs.readFileSync(FILE, 'utf8');
  } catch (e) {
    if (e.code !== 'ENOENT') log(`cannot read ${FILE} (${e.code}): starting without routes`);
    return {};
  }
  let routes;
  try {
    routes = JSON.parse(text);
  } catch (e) {
    log(`${FILE} is not JSON (${e.message}): starting without routes`);
    return {};
  }
  const good = {};
  for (const [path, data] of Object.entries(routes && typeof routes === 'object' ? routes : {})) {
    // What CHP itself accepts from the API: a path and an object with a target URL.
    if (path.startsWith('/') && data && typeof data === 'object' && typeof data.target === 'string') {
      if (typeof data.last_activity === 'string') data.last_activity = new Date(data.last_activity);
      good[path] = data;
    }
  }
  return good;
}

class RoutesInAFile extends MemoryStore {
  constructor(options) {
    super(options);
    if (!FILE) throw new Error('APPLIANCE_ROUTES_FILE is not set');
    for (const [path, data] of Object.entries(readRoutes((m) => console.error(`route_store: ${m}`)))) {
      super.add(path, data);
    }
  }

  // Written before the API answers: a route the hub was told is gone is gone from
  // the file too, and a write that fails fails the hub's request (the hub then
  // tries again) rather than leaving a route a restart would bring back.
  save() {
    const tmp = `${FILE}.new`;
    fs.writeFileSync(tmp, JSON.stringify(this.routes), { mode: 0o600 });
    fs.renameSync(tmp, FILE);
  }

  add(path, data) {
    return super.add(path, data).then(() => this.save());
  }

  remove(path) {
    return super.remove(path).then((route) => {
      this.save();
      return route;
    });
  }
}

module.exports = RoutesInAFile;

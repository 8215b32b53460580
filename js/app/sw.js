// The app's service worker (registered only on secure origins: https, or localhost): keeps a
// copy of the app's files so the app starts while the agent that serves it is off. Network
// first (an updated app is picked up whenever the agent is reachable), the cached copy when not.
// Only GETs under the app's own scope are touched; the WebSocket to /p2psync never is.
const CACHE = "p2psync-app-v1";
const FILES = ["./", "./index.html", "./app.js", "./style.css"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (event) => {
  const req = event.request;
  if (req.method !== "GET" || !req.url.startsWith(self.registration.scope)) return;
  event.respondWith(
    fetch(req)
      .then((res) => {
        if (res.ok) {
          const copy = res.clone();
          void caches.open(CACHE).then((c) => c.put(req, copy));
        }
        return res;
      })
      .catch(() => caches.match(req, { ignoreSearch: true }).then((hit) => hit ?? caches.match("./index.html"))),
  );
});

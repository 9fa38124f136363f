// Bun peer for wsload: room = request path, every message to every member of the
// room, the sender included (server.publish, unlike ws.publish, includes it).
// Default limits. PORT from the environment; with TLS_CERT and TLS_KEY (PEM files),
// it serves wss:// with them.
const port = Number(process.env.PORT || 8080);
const tls = process.env.TLS_CERT
  ? { cert: Bun.file(process.env.TLS_CERT), key: Bun.file(process.env.TLS_KEY) }
  : undefined;
const server = Bun.serve({
  port,
  hostname: "127.0.0.1",
  tls,
  fetch(req, server) {
    const room = new URL(req.url).pathname;
    if (server.upgrade(req, { data: { room } })) return;
    return new Response("websocket only", { status: 400 });
  },
  websocket: {
    open(ws) { ws.subscribe(ws.data.room); },
    message(ws, message) { server.publish(ws.data.room, message); },
  },
});
console.error(`bun listening on ${server.hostname}:${server.port}${tls ? " (TLS)" : ""}`);

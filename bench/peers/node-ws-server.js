// Node `ws` peer for wsload: room = request path, every message to every member of
// the room, the sender included. Default limits. PORT from the environment.
const { WebSocketServer } = require("ws");
const port = Number(process.env.PORT || 8080);
const rooms = new Map();
const wss = new WebSocketServer({ host: "127.0.0.1", port });
wss.on("connection", (ws, req) => {
  const room = new URL(req.url, "http://x").pathname;
  let members = rooms.get(room);
  if (!members) rooms.set(room, (members = new Set()));
  members.add(ws);
  ws.on("message", (data, isBinary) => {
    for (const member of members) member.send(data, { binary: isBinary });
  });
  ws.on("close", () => {
    members.delete(ws);
    if (members.size === 0) rooms.delete(room);
  });
});
wss.on("listening", () => console.error(`node-ws listening on 127.0.0.1:${port}`));

// A plain Node.js server with no dependencies: the builder detects it
// from package.json's start script and needs no package registry.
const http = require("node:http");

const port = Number(process.env.PORT) || 8080;

const server = http.createServer((req, res) => {
  if (req.url === "/healthz") {
    res.writeHead(200, { "content-type": "text/plain" });
    res.end("ok\n");
    return;
  }
  res.writeHead(200, { "content-type": "text/plain; charset=utf-8" });
  res.end("Hello from Zeitwork\n");
});

server.listen(port, () => console.log(`hello listening on :${port}`));

// The platform stops an instance with SIGTERM: finish what is in flight.
process.on("SIGTERM", () => server.close(() => process.exit(0)));

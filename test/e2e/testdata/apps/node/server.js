const http = require("node:http");

const port = Number(process.env.PORT) || 3000;

http
  .createServer((req, res) => {
    res.writeHead(200, { "content-type": "text/html; charset=utf-8" });
    res.end(`<h1>Hello from a plain Node server</h1><p>${process.version}</p>\n`);
  })
  .listen(port, () => console.log(`listening on port ${port}`));
